"""The message table: complete in every locale, placeholders consistent, rendering."""

from __future__ import annotations

import pytest

from botd.dialog import Reply, render, validate_messages
from botd.dialog.texts import REPLY_PARAMS, SUPPORTED_LOCALES, load_messages

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
    assert "№42" in render(Reply("order_created"), "ru", order_id="42")
    assert "#42" in render(Reply("order_created"), "en", order_id="42")
    reply = Reply("ask_quantity", (("min", "1"), ("max", "50")))
    assert render(reply, "en") == "How many would you like? Please send a number from 1 to 50."


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
