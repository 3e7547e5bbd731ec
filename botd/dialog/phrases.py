"""Slash commands and locale names: the parts of a message that are exact tokens, not words.

Words ("отмена", "позовите оператора", "да", "адрес другой") are read by
:func:`.understand.read` with the lexicons of :mod:`.lexicon`; here are only the slash
commands a chat client sends ("/start", "/bot@shop_bot"), the locales botd speaks and the
locale a command or Chat2Desk's hint names. Pure functions, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

__all__ = [
    "LOCALES",
    "Command",
    "command_locale",
    "match_slash",
    "normalize_locale",
]

LOCALES = ("ru", "ky", "en")


class Command(StrEnum):
    CANCEL = "cancel"
    RESTART = "restart"
    HELP = "help"
    HANDOFF = "handoff"
    BOT = "bot"  # back from a human operator to the bot
    LOCALE_RU = "locale_ru"
    LOCALE_KY = "locale_ky"
    LOCALE_EN = "locale_en"


_SLASH = {
    "/cancel": Command.CANCEL,
    "/stop": Command.CANCEL,
    "/start": Command.RESTART,
    "/restart": Command.RESTART,
    "/help": Command.HELP,
    "/operator": Command.HANDOFF,
    "/bot": Command.BOT,
    "/ru": Command.LOCALE_RU,
    "/ky": Command.LOCALE_KY,
    "/en": Command.LOCALE_EN,
}


def match_slash(text: str | None) -> Command | None:
    """The slash command this message is ("/start", "/bot@shop_bot"), if it is one."""
    if text is None:
        return None
    stripped = unicodedata.normalize("NFKC", text).strip().casefold()
    if not stripped.startswith("/"):
        return None
    head = stripped.split()[0].split("@")[0]  # "/start@shop_bot payload" → "/start"
    return _SLASH.get(head)


_LOCALE_OF_COMMAND = {
    Command.LOCALE_RU: "ru",
    Command.LOCALE_KY: "ky",
    Command.LOCALE_EN: "en",
}


def command_locale(command: Command) -> str | None:
    """The locale a language-switch command selects, else None."""
    return _LOCALE_OF_COMMAND.get(command)


def normalize_locale(hint: str | None) -> str | None:
    """ "ru", "ru-RU", "en_US", "KY" → a supported locale; anything else → None."""
    if not hint:
        return None
    primary = re.split(r"[-_]", hint.strip().casefold(), maxsplit=1)[0]
    return primary if primary in LOCALES else None
