"""Slash commands and locale names (words are read by ``understand.read``: test_understand.py)."""

from __future__ import annotations

import pytest

from botd.dialog.phrases import LOCALES, Command, command_locale, match_slash, normalize_locale


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("/cancel", Command.CANCEL),
        ("/stop", Command.CANCEL),
        ("/CANCEL", Command.CANCEL),
        ("  /cancel  ", Command.CANCEL),
        ("/start", Command.RESTART),
        ("/restart", Command.RESTART),
        ("/start@water_shop_bot", Command.RESTART),
        ("/start deep-link-payload", Command.RESTART),
        ("/help", Command.HELP),
        ("/operator", Command.HANDOFF),
        ("/bot", Command.BOT),
        ("/bot@water_shop_bot", Command.BOT),
        ("/ru", Command.LOCALE_RU),
        ("/ky", Command.LOCALE_KY),
        ("/en", Command.LOCALE_EN),
        ("／start", Command.RESTART),  # a full-width slash is NFKC-normalised
    ],
)
def test_slash_commands(text: str, command: Command) -> None:
    assert match_slash(text) is command


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "/",
        "/unknown",
        "/startup",
        "start",  # a word is read by understand.read, not here
        "отмена",
        "cancel",
        "оператор",
        "bot",
        "?",
        "12/3",
        "ул. Токтогула 10/2",
        "Бишкек, ул. Токтогула 10",
    ],
)
def test_not_slash_commands(text: str | None) -> None:
    assert match_slash(text) is None


def test_command_locales() -> None:
    assert command_locale(Command.LOCALE_RU) == "ru"
    assert command_locale(Command.LOCALE_KY) == "ky"
    assert command_locale(Command.LOCALE_EN) == "en"
    assert {command_locale(c) for c in Command} - {None} == set(LOCALES)
    assert command_locale(Command.HELP) is None


@pytest.mark.parametrize(
    ("hint", "locale"),
    [
        ("ru", "ru"),
        ("ru-RU", "ru"),
        ("en_US", "en"),
        ("KY", "ky"),
        (" ky-KG ", "ky"),
        ("de", None),
        ("", None),
        (None, None),
        ("russian", None),
    ],
)
def test_normalize_locale(hint: str | None, locale: str | None) -> None:
    assert normalize_locale(hint) == locale
