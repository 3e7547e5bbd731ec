"""What the customer's words mean: yes/no answers, commands, edits, the language they write in.

Everything is matched on whole words (letters and digits, case-folded), never on substrings:
"not ok" is not a yes, "nothing" is not a no, "5 человек" does not call an operator.
Commands and edits match when the message is the phrase itself, possibly wrapped in a few
polite filler words ("позовите оператора, пожалуйста"). Pure functions, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import TypeVar

from .model import Field

__all__ = [
    "LOCALES",
    "Answer",
    "Command",
    "Field",
    "classify_answer",
    "command_locale",
    "detect_locale",
    "match_command",
    "match_edit",
    "match_slash",
    "normalize_locale",
    "tokens",
]

LOCALES = ("ru", "ky", "en")

_T = TypeVar("_T")

_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> tuple[str, ...]:
    """The words of ``text``: runs of letters/digits, NFKC-normalised and case-folded."""
    return tuple(_TOKEN.findall(unicodedata.normalize("NFKC", text).casefold()))


class Answer(Enum):
    YES = "yes"
    NO = "no"
    UNCLEAR = "unclear"


YES_WORDS = frozenset(
    {
        # ru (+ "lf": "да" typed in the English layout)
        "да", "даа", "ага", "угу", "конечно", "подтверждаю", "верно", "хорошо", "ок", "окей",
        "lf",
        # ky
        "ооба", "макул", "туура", "мейли",
        # en (+ common typos)
        "yes", "y", "yeah", "yep", "yup", "ok", "okay", "sure", "confirm", "correct", "yse",
        "ys",
    }
)  # fmt: skip

NO_WORDS = frozenset(
    {
        # ru (+ "ytn": "нет" typed in the English layout)
        "нет", "не", "неа", "нее", "ytn",
        # ky
        "жок",
        # en
        "no", "n", "nope", "nah", "cancel",
    }
)  # fmt: skip

# Words that turn a yes into a no-or-unclear: "not ok", "don't confirm".
_NEGATIONS = frozenset({"not", "dont", "don", "never", "ни", "эмес", "isn", "doesn", "нельзя"})
# Words that make any answer unclear: "да, но …", "yes but …", "не знаю", "not sure".
_HEDGES = frozenset(
    {
        "но", "однако", "только", "кроме", "подождите", "знаю", "уверен", "уверена",
        "but", "except", "only", "wait", "know", "unsure",
        "бирок", "билбейм", "күтө",
    }
)  # fmt: skip

YES_EMOJI = ("👍", "👌", "✅", "✔")
NO_EMOJI = ("👎", "❌", "✖", "🚫")


def classify_answer(text: str) -> Answer:
    """Yes, no, or unclear: a yes with a no or negation, or any "but"/"не знаю", is unclear."""
    words = set(tokens(text))
    has_yes = bool(words & YES_WORDS) or any(emoji in text for emoji in YES_EMOJI)
    has_no = bool(words & (NO_WORDS | _NEGATIONS)) or any(emoji in text for emoji in NO_EMOJI)
    if has_yes and not has_no and not words & _HEDGES:
        return Answer.YES
    if has_no and not has_yes and not words & _HEDGES:
        return Answer.NO
    return Answer.UNCLEAR


def _index(phrases: Mapping[_T, tuple[str, ...]], fillers: frozenset[str]) -> dict[str, _T]:
    """Each phrase, and each phrase without its filler words, → what it means."""
    index: dict[str, _T] = {}
    for meaning, variants in phrases.items():
        for phrase in variants:
            words = tokens(phrase)
            for key in (" ".join(words), " ".join(w for w in words if w not in fillers)):
                if index.setdefault(key, meaning) != meaning:
                    raise ValueError(f"phrase {phrase!r} is ambiguous")
    index.pop("", None)
    return index


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

COMMAND_PHRASES: dict[Command, tuple[str, ...]] = {
    Command.CANCEL: (
        "отмена", "отменить", "отмени", "отменяю", "отменить заказ",
        "cancel", "cancel order",
        "жокко чыгаруу", "жокко чыгар", "жокко чыгарыңыз", "токтот", "токтотуу",
    ),
    Command.RESTART: (
        "начать заново", "начать сначала", "заново", "сначала", "начать", "начнем заново",
        "начнём заново",
        "restart", "start over", "start again", "start",
        "кайра баштоо", "башынан баштоо", "кайра башта",
    ),
    Command.HELP: (
        "помощь", "помогите", "не понял", "не поняла", "не понимаю",
        "help",
        "жардам", "түшүнгөн жокмун", "түшүнбөдүм",
    ),
    Command.HANDOFF: (
        "оператор", "оператора", "оператору", "менеджер", "менеджера", "менеджеру",
        "человек", "человека", "живой человек", "живого человека",
        "operator", "manager", "human", "a human", "real person", "person",
        "адам", "адам менен", "оператор менен",
    ),
    Command.LOCALE_RU: ("русский", "по русски", "русском", "орусча", "russian"),
    Command.LOCALE_KY: ("кыргызча", "кыргыз тилинде", "кыргызский", "кыргызском", "kyrgyz"),
    Command.LOCALE_EN: ("english", "английский", "английском", "по английски", "англисче"),
}  # fmt: skip

# Polite or framing words around a command: "позовите оператора, пожалуйста", "in english".
_COMMAND_FILLERS = frozenset(
    {
        "пожалуйста", "позовите", "позови", "позвать", "дайте", "дай", "хочу", "нужен", "нужна",
        "мне", "с", "со", "на", "давайте", "давай", "можно", "заказ", "заказа", "язык", "языке",
        "please", "pls", "i", "want", "need", "to", "talk", "speak", "call", "me", "let", "us",
        "in", "the", "with", "can", "my", "order", "language", "switch",
        "мага", "керек", "сураныч", "менен", "тилинде", "тил",
    }
)  # fmt: skip

_COMMAND_BY_PHRASE = _index(COMMAND_PHRASES, _COMMAND_FILLERS)


def match_slash(text: str | None) -> Command | None:
    """The slash command this message is ("/start", "/bot@shop_bot"), if it is one."""
    if text is None:
        return None
    stripped = unicodedata.normalize("NFKC", text).strip().casefold()
    if not stripped.startswith("/"):
        return None
    head = stripped.split()[0].split("@")[0]  # "/start@shop_bot payload" → "/start"
    return _SLASH.get(head)


def match_command(text: str | None) -> Command | None:
    """The command this message is, if it is one (checked before any step's own handling)."""
    if text is None:
        return None
    stripped = unicodedata.normalize("NFKC", text).strip().casefold()
    if stripped.startswith("/"):
        head = stripped.split()[0].split("@")[0]  # "/start@shop_bot payload" → "/start"
        return _SLASH.get(head)
    if stripped and set(stripped) <= {"?", "¿"}:
        return Command.HELP
    return _match_phrase(text, _COMMAND_BY_PHRASE, _COMMAND_FILLERS)


_LOCALE_OF_COMMAND = {
    Command.LOCALE_RU: "ru",
    Command.LOCALE_KY: "ky",
    Command.LOCALE_EN: "en",
}


def command_locale(command: Command) -> str | None:
    """The locale a language-switch command selects, else None."""
    return _LOCALE_OF_COMMAND.get(command)


EDIT_PHRASES: dict[Field, tuple[str, ...]] = {
    Field.ADDRESS: ("адрес", "адреса", "адресе", "address", "дарек", "даректи", "дарегим"),
    Field.PHONE: (
        "телефон", "телефона", "номер", "номер телефона", "phone", "phone number", "number",
        "телефонду", "номерди", "телефон номер",
    ),
    Field.QUANTITY: (
        "количество", "кол во", "количества", "quantity", "amount", "саны", "санын", "санды",
    ),
}  # fmt: skip

_EDIT_FILLERS = frozenset(
    {
        "изменить", "поменять", "исправить", "сменить", "измените", "поменяйте", "другой",
        "другое", "неправильный", "неверный", "неправильно", "неверно", "не", "нет", "тот",
        "то", "мой", "хочу", "нужно", "надо", "пожалуйста", "а",
        "change", "edit", "fix", "wrong", "update", "incorrect", "is", "the", "my", "no",
        "please", "i", "want", "to",
        "өзгөртүү", "өзгөртөм", "өзгөртүңүз", "оңдоо", "туура", "эмес", "жок", "сураныч",
    }
)  # fmt: skip

_EDIT_BY_PHRASE = _index(EDIT_PHRASES, _EDIT_FILLERS)


def match_edit(text: str | None) -> Field | None:
    """Which value the customer wants to change from the summary ("адрес", "wrong phone")."""
    if text is None:
        return None
    return _match_phrase(text, _EDIT_BY_PHRASE, _EDIT_FILLERS)


def _match_phrase(text: str, table: dict[str, _T], fillers: frozenset[str]) -> _T | None:
    words = tokens(text)
    if not words or len(words) > 8:
        return None
    joined = " ".join(words)
    if joined in table:
        return table[joined]
    core = " ".join(word for word in words if word not in fillers)
    return table.get(core)


_KYRGYZ_LETTERS = frozenset("ңөүҢӨҮ")


def detect_locale(text: str | None) -> str | None:
    """The locale of a message from its script: Kyrgyz letters → ky, Cyrillic → ru, Latin → en."""
    if text is None or text.lstrip().startswith("/"):
        return None
    cyrillic = latin = 0
    for char in text:
        if char in _KYRGYZ_LETTERS:
            return "ky"
        if not char.isalpha():
            continue
        if "\u0400" <= char <= "\u04ff":
            cyrillic += 1
        elif char.isascii():
            latin += 1
    if cyrillic and cyrillic >= latin:
        return "ru"
    if latin:
        return "en"
    return None


def normalize_locale(hint: str | None) -> str | None:
    """ "ru", "ru-RU", "en_US", "KY" → a supported locale; anything else → None."""
    if not hint:
        return None
    primary = re.split(r"[-_]", hint.strip().casefold(), maxsplit=1)[0]
    return primary if primary in LOCALES else None
