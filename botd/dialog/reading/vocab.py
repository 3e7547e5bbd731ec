"""The words the reader knows, folded the way words are compared.

Lexicons live in :mod:`..lexicon` as customers type them; here they are case-folded with the
Kyrgyz letters and ё made plain (:func:`fold`), phrases cut into word tuples, and the word classes
several parts of the reader share (negators, apologies, words that never make an address) are
named once.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

from .. import lexicon as lx
from ..model import Field


class Topic(StrEnum):
    PRICE = "price"
    DELIVERY = "delivery"
    HOURS = "hours"
    AREA = "area"
    PAYMENT = "payment"
    BOTTLE = "bottle"
    OTHER = "other"


# -- normalisation ---------------------------------------------------------------------------

_PLAIN = str.maketrans({"ң": "н", "ө": "о", "ү": "у", "ё": "е", "һ": "х", "ә": "а", "’": "'"})


def fold(word: str) -> str:
    """Case-folded, Kyrgyz letters and ё made plain: how words are compared."""
    return word.casefold().translate(_PLAIN)


def _fold_all(words: frozenset[str] | tuple[str, ...] | set[str]) -> frozenset[str]:
    return frozenset(fold(w) for w in words)


def _phrases(phrases: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    out = []
    for phrase in phrases:
        words = tuple(fold(t) for t in _WORD_RE.findall(unicodedata.normalize("NFKC", phrase)))
        if words:
            out.append(words)
    return tuple(sorted(set(out), key=len, reverse=True))


_WORD_RE = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")

YES = _fold_all(lx.YES)
NO = _fold_all(lx.NO)
HEDGES = _fold_all(lx.HEDGES)
GREETINGS = _fold_all(lx.GREETINGS)
THANKS = _fold_all(lx.THANKS)
REQUEST = _fold_all(lx.ORDER_REQUEST)
CORRECTION = _fold_all(lx.CORRECTION)
HANDOFF_WORDS = _fold_all(lx.HANDOFF_WORDS)
HANDOFF_REQUEST = _fold_all(lx.HANDOFF_REQUEST)
BOT_WORDS = _fold_all(lx.BOT_WORDS)
MARKERS = _fold_all(lx.ADDRESS_MARKERS)
LANDMARKS = _fold_all(lx.LANDMARKS)
PLACES = _fold_all(lx.PLACES)
INTRO = _fold_all(lx.ADDRESS_INTRO)
QUESTION_WORDS = _fold_all(lx.QUESTION_WORDS)
QUANTITY_FILLERS = _fold_all(lx.QUANTITY_FILLERS)
KY_WORDS = _fold_all(lx.KYRGYZ_WORDS) - {"он"}
EN_WORDS = _fold_all(lx.ENGLISH_WORDS)
RU_LATIN = _fold_all(lx.RUSSIAN_LATIN_WORDS)
FIELD_WORDS = {Field(name): _fold_all(words) for name, words in lx.FIELD_WORDS.items()}
ALL_FIELD_WORDS = frozenset().union(*FIELD_WORDS.values())
ONES = {fold(k): v for k, v in lx.ONES.items()}
TEENS = {fold(k): v for k, v in lx.TEENS.items()}
TENS = {fold(k): v for k, v in lx.TENS.items()}
DOUBTFUL_NUMBERS = {fold(k): v for k, v in lx.DOUBTFUL_NUMBERS.items()}
KY_STEMS = {fold(k): v for k, v in lx.KY_NUMBER_STEMS.items()}
KY_ENDINGS = tuple(fold(e) for e in lx.KY_NUMBER_ENDINGS)
UNIT_PREFIXES = tuple(fold(u) for u in lx.UNIT_PREFIXES)

YES_PHRASES = _phrases(lx.YES_PHRASES)
CANCEL_PHRASES = _phrases(lx.CANCEL_PHRASES)
RESTART_PHRASES = _phrases(lx.RESTART_PHRASES)
HELP_PHRASES = _phrases(lx.HELP_PHRASES)
LATER_PHRASES = _phrases(lx.LATER_PHRASES)
LOCALE_PHRASES = {locale: _phrases(p) for locale, p in lx.LOCALE_SWITCH.items()}
TOPIC_PHRASES = {Topic(t): _phrases(p) for t, p in lx.QUESTION_TOPICS.items()}
_TOPIC_WORDS = frozenset(w for phrases in TOPIC_PHRASES.values() for p in phrases for w in p)

_NEGATORS = _fold_all({"не", "ne", "not", "вместо", "vmesto", "instead"})
_POST_NEGATORS = _fold_all({"эмес", "emes"})
_APOLOGIES = _fold_all(
    {"sorry", "извините", "простите", "кечиресиз", "excuse", "izvinite", "prostite",
     "kechiresiz", "сорри", "sori", "sorri", "пардон"}
)  # fmt: skip
_SELF_FIX = _fold_all(
    {
        "правильно",
        "правильный",
        "вернее",
        "точнее",
        "sorry",
        "correct",
        "actually",
        "туурасы",
        "tuurasy",
        "то есть",
        "тоесть",
    }
)

# Words that never make a text an address by themselves.
_NOT_ADDRESS_WORDS = (
    YES | NO | GREETINGS | THANKS | REQUEST | CORRECTION | QUESTION_WORDS | QUANTITY_FILLERS
    | HANDOFF_WORDS | HANDOFF_REQUEST | ALL_FIELD_WORDS | HEDGES | BOT_WORDS
    | _fold_all({"что", "это", "у", "вас", "есть", "будет", "сегодня", "завтра", "утром",
                 "вечером", "днем", "днём", "после", "до", "обеда", "пожалуйста", "спасибо",
                 "you", "your", "today", "tomorrow", "morning", "evening", "after", "before",
                 "i", "am", "will", "be", "home", "дома", "буду", "звоните", "позвоните",
                 "call", "me", "бүгүн", "эртең", "эртен", "бугун", "саат", "сейчас", "now",
                 "азыр", "тоже", "также", "too", "also", "ещё", "еще", "раз", "уже",
                 "скину", "напишу", "отправлю", "позже", "потом", "later", "send", "ок",
                 "понял", "поняла", "понятно", "ясно", "хорошо", "ладно", "ага", "угу",
                 "is", "are", "i'm", "im", "to", "for", "at", "on", "our", "we", "it",
                 "this", "that", "here", "there", "my", "мы", "я", "он", "она", "они", "мой",
                 "моя", "наш", "наша", "нас", "вы", "вам", "ваш", "мен", "биз", "сиз", "менин",
                 "биздин", "сиздин", "эле", "гана", "да", "же", "жана", "и", "или",
                 "but", "or", "so", "then", "ok", "okay", "окей", "sorry", "извините",
                 "простите", "кечиресиз", "excuse", "меня", "тебя", "них", "его",
                 "её", "ее", "ей", "им", "blin", "блин", "tot", "zhe", "тот", "та", "то",
                 "те", "пустые", "пустых", "пустую", "пустой", "пустая", "теперь", "вот",
                 "всё", "все", "эми", "anda", "анда", "тогда", "togda", "верно",
                 "правильно", "точно", "empty", "empties", "бош", "have", "has", "got",
                 "было", "бар", "жок", "i'd", "id", "i've", "ive", "i'll", "ill",
                 "meant", "mean", "вернее", "забыл", "забыла", "про", "lol", "лол", "haha",
                 "хаха", "that's", "thats"})
)  # fmt: skip
# Talk around values that never makes an address: intensifiers, "to the office", "forgot".
_NOT_ADDRESS_WORDS = _NOT_ADDRESS_WORDS | _fold_all(
    {"большое", "огромное", "much", "very", "so", "ofiske", "офиске", "офиско", "уйго", "үйгө",
     "дописать", "дописала", "дописал", "забыла", "забыл", "написать", "forgot", "forget",
     "указать", "сказать", "that", "my"}
)  # fmt: skip

_SMALL_TALK = YES | NO | GREETINGS | THANKS
