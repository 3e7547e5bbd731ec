"""The message table: complete in every locale, placeholders consistent, rendering."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from botd.dialog import Reply, render, validate_messages
from botd.dialog.step import _HELP
from botd.dialog.texts import REPLY_PARAMS, SUPPORTED_LOCALES, load_messages
from botd.dialog.understand import Topic

Table = dict[str, dict[str, str]]


def shipped_copy() -> Table:
    return {locale: dict(messages) for locale, messages in load_messages().items()}


def test_shipped_table_is_valid() -> None:
    validate_messages()
    assert set(load_messages()) == set(SUPPORTED_LOCALES)


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("key", sorted(REPLY_PARAMS))
def test_every_key_renders_in_every_locale(key: str, locale: str) -> None:
    values = {name: f"<{name}>" for name in REPLY_PARAMS[key]}
    text = render(Reply(key, tuple(values.items())), locale)
    assert text.strip()
    for value in values.values():
        assert value in text
    assert "{" not in text and "}" not in text


def test_missing_key_is_named() -> None:
    table = shipped_copy()
    del table["ky"]["ask_phone"]
    with pytest.raises(ValueError, match=r"\[ky\] key 'ask_phone' is missing"):
        validate_messages(table)


def test_unknown_key_is_named() -> None:
    table = shipped_copy()
    table["en"]["ask_fax"] = "Fax?"
    with pytest.raises(ValueError, match=r"\[en\] key 'ask_fax' is unknown"):
        validate_messages(table)


def test_missing_locale_is_named() -> None:
    table = shipped_copy()
    del table["en"]
    with pytest.raises(ValueError, match="locale 'en' is missing"):
        validate_messages(table)


def test_unsupported_locale_is_named() -> None:
    table = shipped_copy()
    table["de"] = dict(table["en"])
    with pytest.raises(ValueError, match="locale 'de' is not supported"):
        validate_messages(table)


@pytest.mark.parametrize(
    "template",
    [
        "Order #{order}",  # misspelled
        "Order placed",  # missing
        "Order #{order_id} for {client}",  # extra
        "Order #{order_id!r}",  # conversion
        "Order #{order_id:>5}",  # format spec
        "Order #{0}",  # positional
        "Order #{order_id",  # malformed
    ],
)
def test_placeholder_mismatch_is_named(template: str) -> None:
    table = shipped_copy()
    table["ky"]["order_created"] = template
    with pytest.raises(ValueError, match=r"\[ky\] order_created: "):
        validate_messages(table)


def test_all_problems_reported_at_once() -> None:
    table = shipped_copy()
    del table["ru"]["greeting"]
    table["en"]["ask_quantity"] = "How many?"
    with pytest.raises(ValueError, match="greeting") as error:
        validate_messages(table)
    assert "ask_quantity" in str(error.value)


def test_render_uses_params_and_extra() -> None:
    created = Reply("order_created", (("minutes", "15"),))
    assert "№42" in render(created, "ru", order_id="42")
    assert "#42" in render(created, "en", order_id="42")
    assert "15 minutes" in render(created, "en", order_id="42")
    reply = Reply("ask_quantity", (("min", "1"), ("max", "50")))
    assert (
        render(reply, "en")
        == "How many bottles should we bring? Please send a number from 1 to 50."
    )
    assert render(reply, "ru").endswith("от 1 до 50.")


def test_unknown_locale_falls_back_to_russian() -> None:
    assert render(Reply("greeting"), "de") == render(Reply("greeting"), "ru")
    assert render(Reply("greeting"), "") == render(Reply("greeting"), "ru")


def test_locales_differ() -> None:
    texts = {render(Reply("ask_phone"), locale) for locale in SUPPORTED_LOCALES}
    assert len(texts) == len(SUPPORTED_LOCALES)


def test_customer_text_with_braces_is_not_interpreted() -> None:
    reply = Reply(
        "ask_confirmation", (("address", "{phone} {0}"), ("phone", "+1"), ("quantity", "2"))
    )
    assert "{phone} {0}" in render(reply, "en")


def test_missing_param_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        render(Reply("order_created"), "ru")


def _keys_the_core_can_say() -> set[str]:
    """Every literal ``Reply("key"`` in the dialog's decisions, the openings passed to
    ``_new_dialog``/``_idle_turn``, the help texts and one answer per question topic."""
    source = resources.files("botd.dialog").joinpath("step.py").read_text(encoding="utf-8")
    literal = set(re.findall(r"Reply\(\s*\"([a-z_]+)\"", source))
    assert literal, "no Reply(...) found: has step.py moved?"
    openings = set(re.findall(r"_(?:new_dialog|idle_turn)\(.*?\"([a-z_]+)\"", source))
    assert {"greeting", "dialog_expired", "restarted", "bot_resumed"} <= openings
    assert 'Reply(f"answer_{reading.question}")' in source  # the only computed key
    return literal | openings | set(_HELP.values()) | {f"answer_{t.value}" for t in Topic}


def test_every_key_the_core_says_has_a_text() -> None:
    missing = _keys_the_core_can_say() - REPLY_PARAMS.keys()
    assert not missing, f"replies without a text: {sorted(missing)}"


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_handoff_tells_the_word_that_brings_the_bot_back(locale: str) -> None:
    text = render(Reply("handoff_started"), locale)
    assert "/bot" not in text
    assert re.search(r"[«“]\s*(бот|bot)\s*[»”]", text), text
