"""Reading one customer message whole: every intent and every value it holds.

:func:`read` is pure and deterministic. It never decides what to do next (that is
:mod:`.step`); it reports what is in the message:

- intents that apply anywhere: cancel, restart, a person, help, a question (and its topic), a
  greeting, thanks, "later", an order request, yes/no, a correction and which fields it names;
- every value: phones (``phonenumbers``' matcher, so a number anywhere in the text is found),
  a quantity (digits or number words in ru/ky/en, with units and fillers, the bottle size told
  apart: "2 по 19 л" is 2), an address-like text with a quality (strong, needs a house number,
  a city alone, doubtful);
- the language the words are in.

How: the message is cut into clauses (by line breaks, ``;!?``, commas and sentence full stops,
never inside numbers or after abbreviations like "ул."), each clause into tokens; quantities and
phones are taken out first, what remains of each clause is classified, and adjacent
address-like clauses are joined back into one address with the customer's own spelling.
Lexicons live in :mod:`.lexicon`; fuzzy matching (rapidfuzz) forgives one typo in longer words.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

import phonenumbers
from rapidfuzz import fuzz, process

from . import lexicon as lx
from .model import Field

__all__ = [
    "AddressQuality",
    "Reading",
    "Topic",
    "fold",
    "read",
]


class AddressQuality(IntEnum):
    """How much a text looks like a delivery address (higher is better)."""

    NONE = 0
    DOUBTFUL = 1  # some place-like words, nothing that makes it an address: asked back
    CITY_ONLY = 2  # a city/district alone: the street and house are asked for
    NEEDS_HOUSE = 3  # a street without a number: the house is asked for
    STRONG = 4  # a street/place with a number, a microdistrict, a landmark phrase


class Topic(StrEnum):
    PRICE = "price"
    DELIVERY = "delivery"
    HOURS = "hours"
    AREA = "area"
    PAYMENT = "payment"
    BOTTLE = "bottle"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Reading:
    """Everything found in one message."""

    phones: tuple[str, ...] = ()  # valid numbers in E.164, in order of appearance
    phone_rejected: bool = False  # digits that look like a phone but are not a valid one
    phone_region_blocked: bool = False  # a valid number from a country not allowed
    quantity: int | None = None  # a clear count (may be out of range: check it)
    quantity_doubtful: int | None = None  # "пару", "a couple": to be asked back
    quantity_conflict: bool = False  # two different counts ("3 или 4")
    quantity_fraction: bool = False  # "2.5"
    swap: tuple[int, int] | None = None  # "не 12, а 21", "вместо 4 давайте 6": (old, new)
    quantity_delta: int | None = None  # "ещё одну", "one more", "на одну меньше": +1, +1, -1
    word_swap: tuple[str, str] | None = None  # "не Ахунбаева, а Абдрахманова": (old, new)
    detail_fix: tuple[str, str] | None = None  # "wrong flat, it's 12": ("кв", "12")
    address: str | None = None
    address_quality: AddressQuality = AddressQuality.NONE
    address_detail_only: bool = False  # "кв 12", "подъезд 2": a part to add to an address
    cancel: bool = False
    restart: bool = False
    handoff: bool = False
    help: bool = False
    bot: bool = False  # "бот", "/bot": back to the bot
    locale_switch: str | None = None
    question: Topic | None = None
    greeting: bool = False
    thanks: bool = False
    later: bool = False
    request: bool = False  # "хочу воды", "суу керек", "I want to order"
    yes: bool = False
    no: bool = False
    hedge: bool = False  # "но", "not sure": a yes that is not a clear yes
    starts_yes: bool = False  # the message opens with a yes ("yes, sorry, was busy")
    strong_yes: bool = False  # an explicit confirmation: "подтверждаю", "go ahead", "всё верно"
    correction: bool = False
    apology: bool = False  # "извините", "sorry", "кечиресиз": often before a correction
    fields: frozenset[Field] = frozenset()  # fields named ("адрес", "телефон", "количество")
    other_words: int = 0  # words nothing above accounts for
    locale: str | None = None  # the language of the words, when they tell
    locale_clear: bool = False  # ... and only that language's words (or twice as many)
    empty: bool = True  # no words at all (emoji, punctuation)

    @property
    def has_value(self) -> bool:
        return bool(
            self.phones
            or self.quantity is not None
            or self.quantity_doubtful is not None
            or self.address_quality >= AddressQuality.NEEDS_HOUSE
            or self.address_detail_only
        )


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
_TOKEN_RE = re.compile(
    r"(?i)ж\s*/\s*м|\d+(?:[.,]\d+)?(?:(?:st|nd|rd|th|[абвгabcd]|-(?:я|й|е|го|ая|ий|ый|ой))(?![^\W\d_]))?"
    r"|[^\W\d_]+(?:['-][^\W\d_]+)*"
)

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

# Cancel phrases that mean cancel wherever they stand; the others only as (almost) the whole
# clause ("не надо" cancels; "звонить не надо" does not).
_STRONG_CANCEL = tuple(
    p
    for p in CANCEL_PHRASES
    if any(
        w.startswith(("отмен", "cancel", "передума", "отказ", "жокко", "otmen", "отбой", "купил"))
        or w in ("bought",)
        for w in p
    )
)
_CANCEL_CONTEXT = frozenset(
    {fold(w) for w in ("уже", "мне", "нам", "пожалуйста", "извините", "все", "всё", "я", "а",
                       "ой", "спасибо", "заказ", "заказа", "воду", "воды", "вода", "тогда",
                       "эми", "азыр", "sorry", "please", "thanks", "the", "order", "it", "my",
                       "then", "ok", "ну", "короче", "lets", "let's", "сураныч", "кечиресиз",
                       "буйрутманы", "буйрутма", "заказды", "суу", "anymore", "water",
                       "рахмат", "эле", "давайте", "нет", "no", "жок", "его", "этот", "мой",
                       "последний", "пожалуста", "плиз", "pls", "please", "болуп", "калды",
                       "болду", "калды", "эми", "уже", "anymore", "more", "any", "i", "we",
                       "всё", "все", "тогда", "пока")}
)  # fmt: skip
# Words of an abbreviation before a full stop that does not end a sentence ("ул. Ленина").
_ABBREVIATIONS = frozenset(
    {fold(w) for w in ("ул", "д", "кв", "г", "с", "пр", "мкр", "мкрн", "эт", "под", "корп", "обл",
                       "р", "ст", "пер", "б", "ж", "м", "пос", "просп", "бул", "кор", "св",
                       "st", "apt", "ave", "rd", "str", "bldg", "fl", "no", "көч", "коч",
                       "ш", "мр", "тел", "пгт", "р-н", "им", "ul", "kv", "d", "g", "mkr", "pr",
                       "s", "etc", "ж-м", "жм", "мкр-н", "пр-т", "тел", "ориент")}
)  # fmt: skip
_SINGLE_LETTER_MARKERS = frozenset({"д", "с", "г", "п", "ж", "м", "к", "у"})
_STREET_MARKERS = _fold_all(
    {"ул", "улица", "улице", "улицы", "улицу", "пр", "пр-т", "просп", "проспект", "пер",
     "переулок", "бульвар", "бул", "б-р", "шоссе", "тупик", "проезд", "көчөсү", "көчө", "көч",
     "кочосу", "коче", "коч", "street", "st", "str", "avenue", "ave", "av", "road", "rd",
     "lane", "blvd", "boulevard", "ulitsa", "ul", "prospekt"}
)  # fmt: skip
_DETAIL_MARKERS = _fold_all(
    {"кв", "квартира", "квартиры", "квартиру", "кв-ра", "под", "подъезд", "подьезд", "пд", "эт",
     "этаж", "этаже", "корпус", "корп", "блок", "офис", "оф", "домофон", "код", "батир",
     "батири", "кабат", "кабатта", "кире", "apartment", "apt", "flat", "floor", "entrance",
     "suite", "office", "дом", "д", "үй", "уй", "house", "building", "bldg", "уйу", "kv",
     "dom", "batir", "kabat", "этажа", "подъезда", "квартире", "ofis", "офиси"}
)  # fmt: skip
_NEGATORS = _fold_all({"не", "ne", "not", "вместо", "vmesto", "instead"})
_POST_NEGATORS = _fold_all({"эмес", "emes"})
_ADDRESS_WORDS = _fold_all(
    {
        "адрес",
        "адреса",
        "адрести",
        "address",
        "adres",
        "дарек",
        "даректи",
        "дарегим",
        "дарегин",
        "darek",
        "daregim",
        "adresim",
        "адресим",
        "адресибиз",
    }
)
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
_STRONG_YES = _fold_all(
    {"подтверждаю", "подтверждаем", "оформляйте", "оформляй", "оформите", "confirm", "confirmed",
     "proceed", "верно", "правильно", "туура", "correct", "макулмун", "ооба"}
)  # fmt: skip
_YES_NEGATORS = _fold_all({"не", "ne", "not", "dont", "don't", "isn't", "isnt", "ни", "no"})
_UNIT_GAP = _fold_all(
    {
        "water",
        "воды",
        "big",
        "large",
        "больших",
        "большие",
        "литровых",
        "литровые",
        "литровую",
        "19",
        "л",
        "по",
        "of",
        "суу",
        "литрлик",
        "жаңы",
        "полных",
        "full",
        "чистой",
        "питьевой",
        "эле",
        "ele",
        "gana",
        "гана",
        "литрдик",
        "litr",
        "liter",
        "litre",
        "l",
    }
)
_LITRE = ("л", "литр", "lit", "l", "ltr", "литрл")
_SIZE_VALUES = frozenset({"19", "18,9", "18.9", "20", "10", "5", "1,5", "1.5", "1", "0,5", "0.5",
                          "12", "6", "2", "3"})  # fmt: skip

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
_INTENT_WORDS = (
    CORRECTION
    | NO
    | YES
    | GREETINGS
    | THANKS
    | HEDGES
    | _fold_all({"sorry", "извините", "простите", "кечиресиз", "excuse", "wrong"})
)
_FUZZY_VOCAB = tuple(
    sorted(
        w
        for w in (YES | GREETINGS | THANKS | HANDOFF_WORDS | ALL_FIELD_WORDS | MARKERS
                  | frozenset(ONES) | frozenset(TEENS) | frozenset(TENS) | KY_WORDS)
        if len(w) >= 5
    )
)  # fmt: skip


@functools.lru_cache(maxsize=8192)
def _fuzzy(word: str) -> str:
    """The lexicon word ``word`` is one typo away from (words of 6+ letters), else ``word``."""
    if len(word) < 6 or not word.isalpha():
        return word
    found = process.extractOne(word, _FUZZY_VOCAB, scorer=fuzz.ratio, score_cutoff=86)
    return found[0] if found is not None else word


def _squeeze(word: str) -> str:
    """ "дааа" → "даа", "ооооба" → "ооба": runs of 3+ equal letters cut to 2."""
    return re.sub(r"(.)\1{2,}", r"\1\1", word)


def _known(word: str) -> bool:
    return (
        word in _NOT_ADDRESS_WORDS
        or word in MARKERS
        or word in PLACES
        or word in KY_WORDS
        or word in _TOPIC_WORDS
    )


def _canonical(raw: str) -> str:
    word = _squeeze(fold(raw))
    if _known(word) or word in ONES or word in TENS or word in TEENS or word in KY_WORDS:
        return word
    single = re.sub(r"(.)\1+", r"\1", word)  # "оччень" → "очень", "дда" → "да"
    if single != word and (_known(single) or single in YES or single in NO):
        return single
    return _fuzzy(word)


# -- tokens and clauses ----------------------------------------------------------------------


@dataclass(slots=True)
class _Tok:
    start: int
    end: int
    raw: str
    word: str  # canonical folded form
    number: str | None  # the digits for numeric tokens ("18,9")
    used: bool = False  # taken by a phone/quantity: not part of an address
    negative: bool = False  # "-1": a minus sign right before the digits


@dataclass(slots=True)
class _Clause:
    toks: list[_Tok]
    question: bool  # ended with "?"
    words: tuple[str, ...] = ()
    start: int = 0
    end: int = 0


def _tokens(text: str) -> list[_Tok]:
    out = []
    for m in _TOKEN_RE.finditer(text):
        raw = m.group(0)
        if raw[0].isdigit():
            digits = re.sub(r"(?i)(st|nd|rd|th|[абвгabcd]|-(?:я|й|е|го|ая|ий|ый|ой))$", "", raw)
            before = text[max(0, m.start() - 2) : m.start()]
            negative = before.endswith(("-", "−")) and not before[:-1].strip().isalnum()
            out.append(_Tok(m.start(), m.end(), raw, digits, digits, negative=negative))
        elif "/" in raw:
            out.append(_Tok(m.start(), m.end(), raw, "жм", None))
        else:
            out.append(_Tok(m.start(), m.end(), raw, _canonical(raw), None))
    return out


def _slash_inside_word(text: str, i: int) -> bool:
    """ "12/3", "ж/м": a slash between two non-spaces is part of a word or number."""
    return 0 < i < len(text) - 1 and not text[i - 1].isspace() and not text[i + 1].isspace()


def _clauses(text: str, toks: list[_Tok]) -> list[_Clause]:
    """Cut at line breaks, ``;!?``, commas (not inside numbers) and sentence full stops."""
    cuts: list[tuple[int, bool]] = []  # (position, ends a question)
    for i, ch in enumerate(text):
        if ch in "\n;!?…|/—–" and not (ch == "/" and _slash_inside_word(text, i)):
            cuts.append((i, ch == "?"))
        elif ch == ",":
            if 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
                continue
            cuts.append((i, False))
        elif ch == ".":
            nxt = text[i + 1] if i + 1 < len(text) else " "
            if not nxt.isspace():
                continue
            before = re.search(r"([^\W_]+)\s*$", text[:i])
            if before is not None and fold(before.group(1)) in _ABBREVIATIONS:
                continue
            cuts.append((i, False))
    clauses: list[_Clause] = []
    ti = 0
    start = 0
    for position, question in [*cuts, (len(text), False)]:
        chunk: list[_Tok] = []
        while ti < len(toks) and toks[ti].start < position:
            chunk.append(toks[ti])
            ti += 1
        if chunk:
            clauses.append(_Clause(chunk, question, start=start, end=position))
        elif question and clauses:
            clauses[-1].question = True
        start = position + 1
    return clauses


# -- phones ----------------------------------------------------------------------------------

_DIGIT_RUN = re.compile(r"\+?\d[\d\s().\-]{5,}\d")
_KG_MOBILE = re.compile(r"^(5\d\d|7\d\d|22\d|99\d|20\d|88\d|31\d)\d{6}$")


def _find_phones(
    text: str, region: str, allowed: tuple[str, ...]
) -> tuple[list[tuple[int, int, str]], bool, bool]:
    """Valid numbers (start, end, E.164); whether a phone-like run was invalid; region-blocked."""
    found: list[tuple[int, int, str]] = []
    blocked = False
    try:
        matches = list(phonenumbers.PhoneNumberMatcher(text, region.upper()))
    except Exception:  # pragma: no cover - the matcher is defensive, but never trust it fully
        matches = []
    allowed_up = tuple(r.upper() for r in allowed)
    for match in matches:
        number = match.number
        if allowed_up and phonenumbers.region_code_for_number(number) not in allowed_up:
            blocked = True
            continue
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        found.append((match.start, match.end, e164))
    rejected = False
    for run in _DIGIT_RUN.finditer(text):
        if any(s <= run.start() < e or run.start() <= s < run.end() for s, e, _ in found):
            continue
        digits = re.sub(r"\D", "", run.group(0))
        leading = _leading_phone(run.group(0), region)
        if leading is not None:  # "0550 61 72 83 4pcs": the count ran on after the number
            length, e164 = leading
            found.append((run.start(), run.start() + length, e164))
            continue
        if region.upper() == "KG" and _KG_MOBILE.match(digits):  # "555 12 34 56": no 0 or +996
            try:
                kg_number: phonenumbers.PhoneNumber | None = phonenumbers.parse("+996" + digits)
            except phonenumbers.NumberParseException:
                kg_number = None
            if kg_number is not None and phonenumbers.is_valid_number(kg_number):
                number = kg_number
                if allowed_up and "KG" not in allowed_up:
                    blocked = True
                    continue
                e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                found.append((run.start(), run.end(), e164))
                continue
        if len(digits) >= 7 and not _looks_like_address_numbers(run.group(0)):
            rejected = True
    found.sort()
    return found, rejected, blocked


def _leading_phone(chunk: str, region: str) -> tuple[int, str] | None:
    """A valid number made of the first groups of a longer digit run, and its length."""
    groups = list(re.finditer(r"\d+", chunk))
    for n in range(len(groups) - 1, 0, -1):
        end = groups[n - 1].end()
        candidate = chunk[:end]
        digits = re.sub(r"\D", "", candidate)
        if len(digits) < 9:
            break
        try:
            number = phonenumbers.parse(candidate, region.upper())
        except phonenumbers.NumberParseException:
            continue
        rest = re.sub(r"\D", "", chunk[end:])
        if phonenumbers.is_valid_number(number) and len(rest) <= 2:
            return end, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def _looks_like_address_numbers(chunk: str) -> bool:
    """ "41-7 кв 5", "12/3": house/flat numbers, not a phone attempt."""
    groups = re.findall(r"\d+", chunk)
    return len(groups) >= 2 and all(len(g) <= 4 for g in groups) and len("".join(groups)) < 9


# -- quantities ------------------------------------------------------------------------------


def _number_word(word: str) -> int | None:
    if word in ONES:
        return ONES[word]
    if word in TEENS:
        return TEENS[word]
    if word in TENS and word not in ("он", "on"):
        return TENS[word]
    for stem, value in KY_STEMS.items():
        if len(stem) >= 2 and word.startswith(stem) and _ky_ending(word[len(stem) :]):
            return value
    return None


def _ky_ending(rest: str) -> bool:
    """One case or collective ending, or a collective and a case one ("оо" + "ну")."""
    if rest in KY_ENDINGS:
        return True
    return any(rest.startswith(e) and rest[len(e) :] in KY_ENDINGS for e in ("оо", "oo"))


_COUNT_NOUNS = _fold_all(
    {"количество", "количества", "кол-во", "колво", "quantity", "amount", "саны", "санын", "sany",
     "sanyn", "kolichestvo"}
)  # fmt: skip


def strong_before_set(tok: _Tok | None) -> bool:
    return tok is None or tok.used


def _ky_inflected(word: str) -> bool:
    for stem in KY_STEMS:
        if len(stem) >= 2 and word.startswith(stem) and _ky_ending(word[len(stem) :]):
            return True
    return False


def _is_unit(word: str) -> bool:
    return (len(word) >= 2 and word.startswith(UNIT_PREFIXES)) or word in ("x", "х")


def _is_litre(word: str, number: str | None = None) -> bool:
    if word in ("ку", "ка", "ти"):  # "19-ку", "20-ка", "19-ти литровые": slang for the size
        return number in ("19", "20", "18,9", "18.9")
    return (
        word in _LITRE
        or word in ("ти-литровые", "литрлик", "литрдик", "litrlik", "l")
        or word.startswith(("литр", "liter", "litre", "litr"))
    )


@dataclass(slots=True)
class _Count:
    value: int | None  # None for a fraction
    strong: bool  # had a unit, "x", or is a number word next to a unit
    negated: bool
    doubtful: bool = False
    toks: list[_Tok] = field(default_factory=list)
    address_part: bool = False


def _counts(clause: _Clause) -> list[_Count]:
    toks = clause.toks
    counts: list[_Count] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        prev = toks[i - 1] if i > 0 else None
        value: int | None = None
        span = [tok]
        fraction = False
        doubtful = False
        if tok.used:
            i += 1
            continue
        if tok.number is not None:
            if re.search(r"[.,]", tok.number):
                whole, _, frac = re.split(r"([.,])", tok.number)
                if frac.strip("0"):
                    fraction = True
                value = int(whole) if len(whole) <= 6 else 10**6
            else:
                value = int(tok.number) if len(tok.number) <= 6 else 10**6
            if tok.negative:
                value = -value  # "-1": never a count to take
        elif (
            tok.word in ("half", "пол")
            and nxt is not None
            and (
                nxt.word in ("dozen", "дюжины")
                or (nxt.word == "a" and i + 2 < len(toks) and toks[i + 2].word == "dozen")
            )
        ):
            value = 6  # "half a dozen", "пол дюжины"
            span.extend(toks[i + 1 : i + (3 if nxt.word == "a" else 2)])
        elif tok.word in DOUBTFUL_NUMBERS:
            value = DOUBTFUL_NUMBERS[tok.word]
            doubtful = True
        else:
            value = _number_word(tok.word)
            if value is not None and tok.word in TENS and nxt is not None:
                ones = _number_word(nxt.word) if nxt.number is None else None
                if ones is not None and 0 < ones < 10:
                    value += ones
                    span.append(nxt)
            elif tok.word in ("он", "on") and all(
                t is tok or t.used or t.word in _AROUND_A_COUNT or _is_unit(t.word) for t in toks
            ):
                value = 10  # "он" alone, as the answer to "how many"
            elif tok.word in ("он", "on") and nxt is not None and nxt.number is None:
                ones = _number_word(nxt.word)
                if ones is not None and 0 < ones < 10:
                    value = 10 + ones
                    span.append(nxt)
        if value is None and not fraction:
            i += 1
            continue
        after = toks[i + len(span)] if i + len(span) < len(toks) else None
        address_part = (
            tok.number is not None
            and after is not None
            and after.word in MARKERS
            and not _is_unit(after.word)
            and _is_marker(after, "")
        )  # "11 мкр", "3 этаж": part of an address, never a count to take
        # A bottle size: "19 л", "по 19", "19-литровые", "5 литровых".
        if tok.number is not None and (
            (after is not None and _is_litre(after.word, tok.number))
            or (
                prev is not None
                and prev.word == "по"
                and tok.number in _SIZE_VALUES
                and (after is None or not _is_unit(after.word))
            )
        ):
            tok.used = True
            if after is not None and _is_litre(after.word, tok.number):
                after.used = True
            i += len(span) + 1
            continue
        # "x2", "2x", "х 2".
        times = (prev is not None and prev.word in ("x", "х") and prev.end == tok.start) or (
            after is not None and after.word in ("x", "х") and after.start == tok.end
        )
        unit = after is not None and _is_unit(after.word) and not after.used
        if (
            tok.number is not None
            and after is not None
            and after.word == "по"
            and i + len(span) + 1 < len(toks)
            and toks[i + len(span) + 1].number in _SIZE_VALUES
        ):
            times = True  # "2 по 19 литров": 2 bottles of 19 litres
        if unit and after is not None:
            span.append(after)
        elif tok.number is not None or value is not None:
            # "5 water bottles", "2 больших бутыли", "3 19-литровых бутыли"
            j = i + len(span)
            gap: list[_Tok] = []
            while j < len(toks) and len(gap) < 2 and toks[j].word in _UNIT_GAP:
                gap.append(toks[j])
                j += 1
            if gap and j < len(toks) and _is_unit(toks[j].word) and not toks[j].used:
                unit = True
                span.extend([*gap, toks[j]])
        if times:
            if prev is not None and prev.word in ("x", "х"):
                span.insert(0, prev)
            elif after is not None:
                span.append(after)
        if (
            not strong_before_set(prev)
            and prev is not None
            and prev.number is None
            and (_is_unit(prev.word) or prev.word in FIELD_WORDS[Field.QUANTITY])
            and not (after is not None and _is_unit(after.word))
        ):
            unit_before = True
        elif (
            tok.number is not None
            and any(t.word in _COUNT_NOUNS for t in toks[max(0, i - 3) : i])
            and not any(t.number is not None for t in toks[max(0, i - 3) : i])
        ):
            unit_before = True  # "поменяйте количество на 6", "quantity should be 2"
        else:
            unit_before = False
        negated = (
            (prev is not None and prev.word in _NEGATORS)
            or (after is not None and after.word in _POST_NEGATORS)
            or (unit and i + len(span) < len(toks) and toks[i + len(span)].word in _POST_NEGATORS)
        )
        if (i >= 2 and toks[i - 2].word in ("вместо", "instead")) or (
            prev is not None and prev.word == "of" and i >= 2 and toks[i - 2].word == "instead"
        ):
            negated = True
        if unit_before and prev is not None:
            span.insert(0, prev)
        word_unit = tok.number is None and not doubtful and after is not None
        strong = unit or times or unit_before or (word_unit and after is not None
                                   and _is_unit(after.word))  # fmt: skip
        if any(t.number is None and t.word not in ONES and _ky_inflected(t.word) for t in span):
            strong = True  # "бешти", "экини", "үчөө": Kyrgyz counts by their endings
        counts.append(
            _Count(
                None if fraction else value,
                strong,
                negated,
                doubtful or False,
                span,
                address_part=address_part,
            )
        )
        i += len(span)
    return counts


# -- addresses -------------------------------------------------------------------------------


def _is_marker(tok: _Tok, text: str) -> bool:
    word = tok.word
    if word not in MARKERS:
        return False
    if len(word) == 1 or word in _SINGLE_LETTER_MARKERS:
        # "д. 5", "с. Байтик", "г.Ош", "д5": a single letter counts only as an abbreviation.
        follow = text[tok.end : tok.end + 2]
        return (
            follow.startswith(".")
            or follow[:1].isdigit()
            or (
                follow.startswith(" ") and (tok.end + 1 < len(text) and text[tok.end + 1].isdigit())
            )
        )
    return True


def _is_name(tok: _Tok) -> bool:
    """Capitalised like a name ("Ахунбаева"), not shouted ("ВЫ МНЕ ВЧЕРА")."""
    return tok.raw[:1].isupper() and not (len(tok.raw) > 3 and tok.raw.isupper())


def _address_quality(toks: list[_Tok], text: str, *, asked: bool = True) -> AddressQuality:
    """How address-like ``toks`` are. ``asked``: the bot asked for the address (or nothing
    yet), so a lowercase word with a number ("ахунбаева 12") is a street; otherwise only a
    capitalised one is ("Ахунбаева 12" yes, "вернее 4" no)."""
    if not toks:
        return AddressQuality.NONE
    markers = [t for t in toks if _is_marker(t, text)]
    street = any(t.word in _STREET_MARKERS for t in markers)
    numbers = [t for t in toks if t.number is not None]
    for before, tok in itertools.pairwise(toks):
        if before in markers and tok.number is None and _spelled_number(tok.word):
            numbers.append(tok)  # "дом сто двадцать": a house number in words
    places = [t for t in toks if t.word in PLACES]
    landmark = any(t.word in LANDMARKS for t in toks)
    content = [
        t
        for t in toks
        if t.number is None
        and t.word not in _NOT_ADDRESS_WORDS
        and t.word not in MARKERS
        and t.word not in LANDMARKS
        and t.word not in PLACES
        and t not in numbers
        and len(t.word) >= 2
    ]
    named_number = False
    for a, b in itertools.pairwise(toks):
        if a.number is None and b.number is not None and (a in content or a in places):
            named_number = named_number or asked or _is_name(a) or a in places
        if a.number is not None and b.number is None and b.word in MARKERS:
            named_number = True  # "8 мкр", "12 микрорайон"
    if markers and numbers and (content or places or street or len(markers) >= 2):
        return AddressQuality.STRONG
    if numbers and any(t.word in _LOCALITY_MARKERS for t in markers):
        return AddressQuality.STRONG  # "мкр 8", "8 мкр", "квартал 12"
    if named_number:
        return AddressQuality.STRONG
    if landmark and (len(content) >= 2 or (numbers and (content or markers))):
        return AddressQuality.STRONG  # "напротив филармонии", "возле школы 61"
    if street and (content or places):
        return AddressQuality.NEEDS_HOUSE
    if places and not content:
        return AddressQuality.CITY_ONLY
    if content and (markers or landmark or any(_is_name(t) for t in content)):
        return AddressQuality.DOUBTFUL
    if places:
        return AddressQuality.DOUBTFUL
    return AddressQuality.NONE


_LOCALITY_MARKERS = _fold_all(
    {"мкр", "мкрн", "микрорайон", "микрорайоне", "мкр-н", "м-н", "жм", "жилмассив", "квартал",
     "mkr", "microdistrict", "mikrorayon", "кичи", "массив", "массиви"}
)  # fmt: skip
_ORDINALS = _fold_all({"первый", "второй", "третий", "четвертый", "четвёртый", "пятый",
                       "шестой", "седьмой", "восьмой", "девятый", "десятый", "first", "second",
                       "third", "fourth", "fifth", "биринчи", "экинчи", "үчүнчү", "учунчу",
                       "төртүнчү", "тортунчу", "бешинчи"})  # fmt: skip


_HUNDREDS = _fold_all({"сто", "двести", "триста", "четыреста", "пятьсот", "жүз", "жуз",
                       "hundred"})  # fmt: skip


def _spelled_number(word: str) -> bool:
    return word in ONES or word in TEENS or word in TENS or word in _HUNDREDS


def _is_detail_only(toks: list[_Tok], text: str) -> bool:
    """ "кв 12", "2 подъезд", "этаж 3", "подъезд второй": an address detail, no street."""
    if not toks or not any(t.number is not None or t.word in _ORDINALS for t in toks):
        return False
    words = [t for t in toks if t.number is None and t.word not in _ORDINALS]
    return (
        bool(words)
        and all(
            (t.word in _DETAIL_MARKERS and _is_marker(t, text)) or t.word in _NOT_ADDRESS_WORDS
            for t in words
        )
        and any(t.word in _DETAIL_MARKERS for t in words)
    )


_STRIP = (
    INTRO | GREETINGS | THANKS | REQUEST | CORRECTION | YES | NO | ALL_FIELD_WORDS | HEDGES
    | _fold_all({"пожалуйста", "спасибо", "please", "thanks", "ой", "и", "and", "а", "вот", "ну",
                 "так", "да", "там", "ещё", "еще", "номер", "сураныч", "рахмат", "тел",
                 "кстати", "тогда", "togda", "then", "анда", "anda", "ok", "ок", "okay",
                 "хорошо", "ладно", "fine", "good", "короче", "значит", "it's", "its",
                 "it", "is", "it`s", "sorry", "извините", "кечиресиз"})
) - MARKERS  # fmt: skip


_LEAD_FILLERS = _fold_all(
    {"ой", "oi", "oy", "нет", "net", "no", "да", "извините", "sorry", "кечиресиз", "блин",
     "blin", "ну", "а", "ой-ой", "стоп", "wait", "oops", "точнее"}
)  # fmt: skip
_REASONS = _fold_all(
    {"а", "но", "потому", "так", "т", "because", "since", "as", "бирок", "анткени", "себеби",
     "пока", "просто", "уже"}
)  # fmt: skip


# Words between a number and the one that replaces it ("103 ой нет 105", "3, sorry, 4"); never
# "не"/"not"/"эмес", which deny the number next to them ("30 not 3" is 30).
_TAKE_BACK = (CORRECTION | NO | _APOLOGIES) - _fold_all(
    {"не", "not", "эмес", "emes", "ne", "вместо", "instead", "тот", "другой", "другая"}
)


def _self_fixed(toks: list[_Tok]) -> list[_Tok]:
    """ "дом 103 ой нет 105 кв 8" → "дом 105 кв 8": a number corrected on the spot."""
    out = list(toks)
    i = 0
    while i < len(out):
        if out[i].number is not None:
            j = i + 1
            while (
                j < len(out) and j - i <= 3 and out[j].number is None and out[j].word in _TAKE_BACK
            ):
                j += 1
            if j > i + 1 and j < len(out) and out[j].number is not None:
                del out[i:j]
                continue
        i += 1
    return out


def _talk(word: str) -> bool:
    """A closing word that is talk, not address: thanks, "бүгүн жеткиресизби", "please"."""
    return (
        word in _STRIP
        or (word in _NOT_ADDRESS_WORDS and word not in MARKERS)
        or word in QUESTION_WORDS
        or word in _TOPIC_WORDS
        or (len(word) >= 6 and word.endswith(("бы", "би", "бу", "пы", "пи", "by", "bi")))
    )


_STRIP = (
    _STRIP
    | _ADDRESS_WORDS
    | _APOLOGIES
    | _LEAD_FILLERS
    | _fold_all(
        {"эле", "ele", "дедим", "dedim", "кылайын", "kylaiyn", "kylayn", "деп", "dep", "атам"}
    )
    | _fold_all({"nomerim", "nomerum", "nomer", "номерим", "tel"})
    # Kyrgyz case endings typed apart from a number: "5 ка", "12 ге"
    | _fold_all({"ка", "ке", "га", "ге", "ко", "го", "ga", "ge", "ka", "ke"})
)


# Words after which an address never goes on: the phone or count being given, a request,
# thanks, a greeting, a time ("…кв 8 номер …", "… привезите до обеда", "…, спасибо").
_AFTER_ADDRESS = (
    FIELD_WORDS[Field.PHONE] | FIELD_WORDS[Field.QUANTITY] | REQUEST | THANKS | GREETINGS
    | QUESTION_WORDS | _TOPIC_WORDS
    | _fold_all({"nomerim", "nomerum", "tel", "тел", "сегодня", "завтра", "утром", "вечером",
                 "обеда", "после", "today", "tomorrow", "morning", "evening", "бүгүн", "бугун",
                 "эртең", "эртен", "если", "if", "срочно", "urgent"})
) - MARKERS - LANDMARKS - PLACES - _fold_all(
    {"the", "a", "an", "of", "to", "with", "and", "на", "в", "с", "по", "у", "за", "и", "к"}
)  # fmt: skip


def _trim(toks: list[_Tok]) -> list[_Tok]:
    """Drop introducing and closing words: "мой адрес Токтогула 10, спасибо" → "Токтогула 10"."""
    start, end = 0, len(toks)
    while start < end and toks[start].number is None and toks[start].word in _STRIP:
        start += 1
    while end > start and toks[end - 1].number is None and _talk(toks[end - 1].word):
        end -= 1
    kept = toks[start:end]
    anchors = [i for i, t in enumerate(kept) if t.number is not None or t.word in MARKERS]
    if anchors:
        for i in range(anchors[-1] + 1, len(kept)):
            word = kept[i].word
            if word in _REASONS or word in _AFTER_ADDRESS:
                # "…квартира 33 а то закончилась", "…кв 8 номер … привезите до обеда": the
                # address ends where the talk starts
                return kept[:i]
    return kept


def _render(
    text: str, toks: list[_Tok], every: list[_Tok], subs: dict[int, str] | None = None
) -> str:
    """The customer's own text of ``toks``; where tokens of ``every`` were left out between
    two kept ones (a phone, a count, a corrected number), the gap closes up."""
    if not toks:
        return ""
    subs = subs or {}
    pieces = [subs.get(id(toks[0]), toks[0].raw)]
    for before, tok in itertools.pairwise(toks):
        gap = text[before.end : tok.start]
        if any(before.end <= u.start < tok.start for u in every):
            gap = ", " if "," in gap or "\n" in gap else " "
        pieces.append(gap.replace("\n", ", "))
        pieces.append(subs.get(id(tok), tok.raw))
    # keep a closing full stop of an abbreviation or flat number ("кв. 5." is cut anyway)
    out = "".join(pieces)
    out = re.sub(r"\s+", " ", out)
    out = re.sub(r"\s+([,.;:])", r"\1", out)
    out = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", out)
    return out.strip(" ,;:-—–")


_CONTRAST = _fold_all({"а", "a", "but", "бирок", "birok"})


def _drop_negated(toks: list[_Tok]) -> list[_Tok]:
    """ "не Московская, а Киевская 45" → "Киевская 45" (within one clause)."""
    post = [i for i, t in enumerate(toks) if t.word in _POST_NEGATORS]
    if post:
        return toks[post[-1] + 1 :]  # "Жал эмес Арча-Бешик 30": what follows "эмес"
    for i, tok in enumerate(toks):
        if tok.word in _NEGATORS and tok.word not in ("вместо", "vmesto", "instead"):
            for j in range(i + 1, len(toks)):
                if toks[j].word in _CONTRAST:
                    return toks[:i] + toks[j + 1 :]
            before = toks[:i]
            if any(t.number is not None for t in before) and all(
                t.number is None for t in toks[i + 1 :]
            ):
                return before  # "Kievskaya 45 not Moskovskaya"
    return toks


_DETAIL_KIND = {
    fold(w): kind
    for kind, words in {
        "кв": ("кв", "квартира", "квартиру", "квартиры", "flat", "apt", "apartment", "батир",
               "batir", "kv", "kvartira"),
        "дом": ("дом", "дома", "house", "building", "үй", "уй", "uy", "dom"),
        "подъезд": ("подъезд", "подьезд", "подъезда", "entrance", "кире", "podezd"),
        "этаж": ("этаж", "этаже", "floor", "кабат", "kabat", "etaj", "etazh"),
    }.items()
    for w in words
}  # fmt: skip


_EITHER = _fold_all({"или", "либо", "or", "ili"})


def by_clause_counts(by_clause: list[tuple[int, _Count]]) -> list[_Count]:
    return [c for _, c in by_clause if c.value is not None and not c.doubtful]


def swaps_new_value(swaps_new: list[_Count], chosen: list[_Count]) -> int | None:
    values = [c.value for c in swaps_new + chosen if c.value is not None]
    return values[-1] if values else None


_MORE = _fold_all(
    {
        "ещё",
        "еще",
        "more",
        "дагы",
        "кошуп",
        "кошуңуз",
        "кошуп коюңуз",
        "add",
        "добавьте",
        "добавить",
        "добавь",
        "больше",
        "plus",
        "extra",
        "another",
    }
)
_LESS = _fold_all({"меньше", "less", "fewer", "азыраак", "кемитип", "минус", "убавьте"})


def _relative(clauses: list[_Clause], by_clause: list[tuple[int, _Count]]) -> int | None:
    """ "one more bottle", "дагы бирөөнү кошуңуз", "на одну больше" → +1; "на 2 меньше" → -2.

    The word must stand right next to the count (two words at most between): in "поменяйте на
    12, нас больше стало" the 12 is the new count, not twelve more."""
    for index, count in by_clause:
        if count.negated or not count.value or count.value <= 0:
            continue
        own = clauses[index].toks  # only words of the count's own clause
        first = own.index(count.toks[0])
        last = own.index(count.toks[-1])
        near = own[max(0, first - 2) : first] + own[last + 1 : last + 3]
        words = {t.word for t in near if t.number is None}
        if words & _MORE:
            return count.value
        if words & _LESS:
            return -count.value
    return None


def _taken_back(toks: list[_Tok], clauses: list[_Clause]) -> tuple[int, int] | None:
    """A number, words taking it back, another number in the next clause: (old, new)."""
    clause_of = {id(t): n for n, c in enumerate(clauses) for t in c.toks}
    free = [t for t in toks if not (t.used and t.number is None)]
    for i, tok in enumerate(free):
        old = tok.number
        if old is None or not old.isdigit():
            continue
        j = i + 1
        while (
            j < len(free) and j - i <= 3 and free[j].number is None and free[j].word in _TAKE_BACK
        ):
            j += 1
        new = free[j].number if i + 1 < j < len(free) else None
        elsewhere = j < len(free) and clause_of.get(id(free[j])) != clause_of.get(id(tok))
        if new is not None and new.isdigit() and elsewhere:
            return int(old), int(new)
    return None


_WANT = _fold_all({"нужно", "нужна", "нужны", "надо", "хочу", "мне", "нам", "давайте", "need",
                   "want", "керек", "мага", "бизге"})  # fmt: skip


def _word_swap(toks: list[_Tok]) -> tuple[str, str] | None:
    """ "не Ахунбаева, а Абдрахманова", "Манас эмес, Чуй": (what it is not, what it is)."""
    words = [t for t in toks if not t.used]
    for i, tok in enumerate(words):
        if tok.word in ("не", "ne", "not"):
            old: list[_Tok] = []
            j = i + 1
            while j < len(words) and words[j].word not in _CONTRAST and len(old) < 3:
                old.append(words[j])
                j += 1
            new = [t for t in words[j + 1 : j + 4] if t.number is None]
            named = any(t.word not in _NOT_ADDRESS_WORDS for t in old)
            if old and new and j < len(words) and named and all(t.number is None for t in old):
                return " ".join(t.raw for t in old), " ".join(t.raw for t in new)
            before = words[i - 1] if i > 0 else None
            after_not = words[i + 1] if i + 1 < len(words) else None
            if (
                tok.word == "not"
                and before is not None
                and after_not is not None
                and _is_name(before)
                and _is_name(after_not)
            ):
                return after_not.raw, before.raw  # "it's Manas not Moskovskaya"
        if tok.word in _POST_NEGATORS and i > 0:
            old = [t for t in words[max(0, i - 2) : i] if t.word not in _NOT_ADDRESS_WORDS]
            new = [t for t in words[i + 1 : i + 4] if t.number is None
                   and t.word not in _NOT_ADDRESS_WORDS]  # fmt: skip
            if old and new and all(t.number is None for t in old):
                return " ".join(t.raw for t in old), " ".join(t.raw for t in new)
    return None


def _content_toks(clause: _Clause) -> list[_Tok]:
    return [t for t in clause.toks if not t.used]


# -- phrases ---------------------------------------------------------------------------------


_PhraseIndex = dict[str, tuple[tuple[str, ...], ...]]
_INDEXES: dict[int, _PhraseIndex] = {}


def _index_of(phrases: tuple[tuple[str, ...], ...]) -> _PhraseIndex:
    """The phrases by their first word, longest first (built once per phrase table)."""
    index = _INDEXES.get(id(phrases))
    if index is None:
        grouped: dict[str, list[tuple[str, ...]]] = {}
        for phrase in phrases:
            grouped.setdefault(phrase[0], []).append(phrase)
        index = {w: tuple(sorted(ps, key=len, reverse=True)) for w, ps in grouped.items()}
        _INDEXES[id(phrases)] = index
    return index


def _find_phrase(words: tuple[str, ...], phrases: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The longest phrase found as consecutive words, or ()."""
    index = _index_of(phrases)
    best: tuple[str, ...] = ()
    for i, word in enumerate(words):
        for phrase in index.get(word, ()):
            if len(phrase) <= len(best):
                break
            if words[i : i + len(phrase)] == phrase:
                best = phrase
                break
    return best


def _cancel_stem(words: tuple[str, ...]) -> tuple[str, ...]:
    """ "отмените-ка", "cancelled", "жокко чыгарыңызчы": cancel words by their stems."""
    for i, w in enumerate(words):
        if w.startswith(("отмен", "cancel", "otmen")) and not w.startswith("отменн"):
            return (w,)
        if (
            w in ("жокко", "jokko")
            and i + 1 < len(words)
            and words[i + 1].startswith(("чыгар", "chygar", "chigar"))
        ):
            return words[i : i + 2]
    return ()


def _only(words: tuple[str, ...], allowed: frozenset[str]) -> bool:
    return bool(words) and all(w in allowed for w in words)


# -- reading ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Acc:
    """What the clauses of one message add up to (mutable while reading)."""

    cancel: bool = False
    restart: bool = False
    handoff: bool = False
    help: bool = False
    bot: bool = False
    locale_switch: str | None = None
    question: Topic | None = None
    greeting: bool = False
    thanks: bool = False
    later: bool = False
    request: bool = False
    yes: bool = False
    no: bool = False
    hedge: bool = False
    correction: bool = False
    apology: bool = False
    fields: set[Field] = field(default_factory=set)
    other_words: int = 0


# Words that may stand around a bare count ("мне 2 пожалуйста", "нет, 4", "sorry I meant 3").
_AROUND_A_COUNT = (
    QUANTITY_FILLERS | YES | NO | CORRECTION | _NEGATORS | _POST_NEGATORS
    | FIELD_WORDS[Field.QUANTITY] | GREETINGS | THANKS | REQUEST | _APOLOGIES | HEDGES
)  # fmt: skip


def read(
    text: str | None,
    *,
    expecting: Field | None = None,
    default_region: str = "KG",
    allowed_regions: tuple[str, ...] = (),
) -> Reading:
    """Everything ``text`` holds. ``expecting``: the value the bot asked for (a bare number is
    a count only when the count was asked for, or at the summary — ``Field.QUANTITY``)."""
    if text is None:
        return Reading()
    asked = expecting is None or expecting is Field.ADDRESS
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"https?://\S+|www\.\S+", " ", text)  # a map link is no part of an address
    text = re.sub(r"[^\S\n]+", " ", text).strip()
    phones, phone_rejected, blocked = _find_phones(text, default_region, allowed_regions)
    toks = _tokens(text)
    if len({p for _, _, p in phones}) == 2:
        between = [t.word for t in toks if phones[0][1] <= t.start < phones[-1][0]]
        after = [t.word for t in toks if t.start >= phones[-1][1]]
        if any(w in CORRECTION or w in NO or w in _SELF_FIX for w in between + after):
            phones = [phones[-1]]  # "0705 66 71 20, ой нет, 0705 66 71 02 правильно"
            for tok in toks:
                if tok.number is not None and tok.start < phones[0][0]:
                    tok.used = True
    for tok in toks:
        if any(s <= tok.start < e for s, e, _ in phones):
            tok.used = True
    clauses = _clauses(text, toks)
    acc = _Acc()
    counts: list[_Count] = []
    swaps_old: list[_Count] = []
    swaps_new: list[_Count] = []
    subs: dict[int, str] = {}  # token id → the customer's own correction of it
    places_asked: list[_Tok] = []
    address_led: set[int] = set()  # clauses that begin with "адрес", "address", "дарек"
    by_clause: list[tuple[int, _Count]] = []  # every count with its clause, for swaps
    address_parts: list[tuple[int, list[_Tok], AddressQuality, bool]] = []
    for index, clause in enumerate(clauses):
        clause.words = tuple(t.word for t in clause.toks if not t.used)
        kept = {id(t) for t in _self_fixed([t for t in clause.toks if not t.used])}
        for tok in clause.toks:
            if not tok.used and id(tok) not in kept and tok.number is not None:
                tok.used = True  # "3 ой нет 4": the number taken back is no value at all
        clause_counts = _counts(clause)
        words = tuple(t.word for t in clause.toks if not t.used)
        number_free = tuple(t.word for t in clause.toks if not t.used and t.number is None)
        intents_only = _read_intents(clause, words, acc)
        lead = tuple(w for w in words if w not in _QUESTION_LEAD)
        if lead[:2] in (("как", "обычно"), ("как", "всегда"), ("как", "раньше")):
            lead = lead[2:]  # "как обычно 3 бутылки": as usual, not a question
        question_like = (
            clause.question
            or bool(lead and (lead[0] in QUESTION_WORDS or lead[-1] in QUESTION_WORDS))
            or any(_ky_question(t) for t in clause.toks)
        )
        topic = _has_topic(words)
        asking = (topic and (question_like or not _has_value_words(clause))) or (
            question_like and not any(w in _ASKING_FOR for w in words) and not acc.handoff
        )
        if asking:
            # "how much is one bottle?", "50 бутылка алсам скидка барбы?": a number in a
            # question is no count; an address before it still is one ("Жибек Жолу 455 …
            # бүгүн жеткиресизби?").
            _question_clause(clause, words, acc, asked=True)
            clause_counts = []
            places_asked.extend(t for t in clause.toks if t.word in PLACES)
            if not any(t.word in MARKERS or t.word in PLACES for t in clause.toks):
                continue
        if intents_only and not any(t.number is not None and not t.used for t in clause.toks):
            continue
        free = [t for t in clause.toks if not t.used]
        after_address = bool(address_parts) and address_parts[-1][0] == index - 1
        if (
            len(free) == 1
            and free[0].number is not None
            and after_address
            and address_parts[-1][2] is AddressQuality.NEEDS_HOUSE
        ):
            address_parts.append((index, free, AddressQuality.STRONG, False))
            continue  # "улица Киевская, 95": the house number, not a count
        if (
            2 <= len(free) <= 3
            and all(t.number is not None for t in free)
            and after_address
            and re.fullmatch(
                r"\s*\d+\w?(?:\s*[-/]\s*\d+\w?){1,2}\s*", text[free[0].start : free[-1].end]
            )
        ):
            address_parts.append((index, free, AddressQuality.NONE, False))
            continue  # "мкр Восток-5, 4-21": house and flat
        fix_toks = _trim(_drop_negated(_content_toks(clause)))
        fixing = any(
            t.word in CORRECTION or t.word in NO or t.word in _SELF_FIX or t.word in _APOLOGIES
            for t in clause.toks
        )
        negated_here = any(c.negated for c in clause_counts)
        if (
            fixing
            and not negated_here
            and len(fix_toks) == 1
            and fix_toks[0].number is not None
            and address_parts
            and address_parts[-1][0] == index - 1
            and expecting is not Field.QUANTITY
        ):
            numbers = [t for t in address_parts[-1][1] if t.number is not None]
            if numbers:  # "Frunze street 300, no sorry 330": the last number was wrong
                subs[id(numbers[-1])] = fix_toks[0].raw
                address_parts.append((index, [], AddressQuality.NONE, False))
                fix_toks[0].used = True
                continue
        # Counts: strong ones anywhere; bare ones when a count is expected or the clause is
        # nothing but the number and filler words.
        negated_toks = {id(t) for c in clause_counts if c.negated for t in c.toks}
        for count in clause_counts:
            by_clause.append((index, count))
            if count.negated:
                swaps_old.append(count)
                continue
            if count.address_part:
                swaps_new.append(count)  # may still be the new value of a swap
                continue
            rest = tuple(
                t.word
                for t in clause.toks
                if not t.used and t not in count.toks and t.number is None
                and id(t) not in negated_toks
            )  # fmt: skip
            bare_ok = _only(rest, _AROUND_A_COUNT) or not rest
            other_numbers = [
                t for t in clause.toks if t.number is not None and t not in count.toks
                and not t.used and id(t) not in negated_toks
            ]  # fmt: skip
            asked_for = (
                count.toks[0] in clause.toks
                and clause.toks.index(count.toks[0]) > 0
                and clause.toks[clause.toks.index(count.toks[0]) - 1].word in _WANT
            )  # "нужно 5 на Гоголя 24 кв 2": the count asked for, whatever numbers follow
            if (
                count.strong
                or count.doubtful
                or asked_for
                or (
                    bare_ok
                    and not other_numbers
                    and (
                        expecting is Field.QUANTITY
                        or count.toks[0].number is None
                        or len(clauses) > 1
                    )
                )
            ):
                counts.append(count)
            else:
                swaps_new.append(count)
                continue
            for tok in count.toks:
                tok.used = True
        if swaps_old:
            for count in swaps_old:
                for tok in count.toks:
                    tok.used = True
        leading = [w for w in words if w not in _LEAD_FILLERS]
        if (
            leading
            and leading[0] in ("не", "ne", "not", "вместо", "vmesto", "instead")
            and len(leading) <= 4
            and (
                not any(t.number is not None for t in clause.toks if not t.used)
                or (
                    index + 1 < len(clauses)
                    and bool(clauses[index + 1].toks)
                    and clauses[index + 1].toks[0].word in _CONTRAST
                )
            )
        ):
            continue  # "не Токтогула", "нет не Чуй 136, а Чуй 163": what it is not
        rest_toks = _trim(_self_fixed(_drop_negated(_content_toks(clause))))
        if not rest_toks:
            continue
        if any(t.word in _ADDRESS_WORDS for t in clause.toks[:3]):
            address_led.add(index)  # "это фото дома, адрес 7 мкр 15-32": it starts here
        elif any(t.word in _TAKE_BACK for t in clause.toks[:2]) and (
            _address_quality(rest_toks, text, asked=asked) is AddressQuality.STRONG
        ):
            address_led.add(index)  # "Горького 1г, ой точнее Горького 1в": it starts again
        quality = _address_quality(rest_toks, text, asked=asked)
        detail = _is_detail_only(rest_toks, text)
        if clause.question and quality < AddressQuality.STRONG:
            _question_clause(clause, tuple(t.word for t in rest_toks), acc)
            continue
        joiner = all(t.word in MARKERS for t in rest_toks) or (
            len(rest_toks) <= 4
            and not intents_only
            and not any(t.word in _INTENT_WORDS for t in clause.toks)
            and all(t.number is None for t in rest_toks)
            and any(t.word not in _NOT_ADDRESS_WORDS for t in rest_toks)
        )
        if quality is AddressQuality.NONE and not detail and joiner:
            address_parts.append((index, rest_toks, quality, False))
            continue
        if quality is AddressQuality.NONE and not detail:
            acc.other_words += sum(
                1 for t in rest_toks if t.number is None and t.word not in _NOT_ADDRESS_WORDS
            )
            if number_free and not intents_only and any(t.number is not None for t in rest_toks):
                acc.other_words += 1
            continue
        address_parts.append((index, rest_toks, quality, detail))
    # Join adjacent address clauses; keep the best run.
    address: str | None = None
    quality = AddressQuality.NONE
    detail_only = False
    runs: list[list[tuple[int, list[_Tok], AddressQuality, bool]]] = []
    for part in address_parts:
        if runs and runs[-1][-1][0] == part[0] - 1:
            runs[-1].append(part)
        else:
            runs.append([part])
    best: list[tuple[int, list[_Tok], AddressQuality, bool]] | None = None
    best_key: tuple[int, int] = (-1, -1)
    for run in runs:
        led = [n for n, part in enumerate(run) if part[0] in address_led and n > 0]
        if led:
            run = run[led[-1] :]
        while (
            len(run) > 1
            and run[0][2] is AddressQuality.NONE
            and not run[0][3]
            and any(t.word not in MARKERS for t in run[0][1])
        ):
            run = run[1:]  # "that's my building lol. address: …": talk before the address
        run_toks = [t for _, ts, _, _ in run for t in ts]
        if not run_toks:
            continue
        q = _address_quality(run_toks, text, asked=asked)
        if all(d for _, _, _, d in run):
            q = max(q, AddressQuality.DOUBTFUL)
        key = (int(q), len(run_toks))
        if key > best_key:
            best, best_key = run, key
    if best is not None:
        run_toks = [t for _, ts, _, _ in best for t in ts]
        quality = AddressQuality(best_key[0])
        cut = [i for i, t in enumerate(run_toks) if t.word in _ADDRESS_WORDS]
        if cut and cut[-1] + 1 < len(run_toks):
            tail = _trim(run_toks[cut[-1] + 1 :])  # "that's my building. address: Tokombaev 19"
            if tail and _address_quality(tail, text, asked=asked) >= AddressQuality.STRONG:
                run_toks = tail
                best = [(best[0][0], tail, best[0][2], False)]
        real = [part for part in best if part[2] is not AddressQuality.NONE or part[3]]
        detail_only = bool(real) and all(d for _, _, _, d in real)
        if detail_only:  # "подъезд второй, забыла написать": the detail without the talk
            run_toks = [t for _, ts, _, _ in real for t in ts]
        address = _render(text, run_toks, toks, subs)
        if (
            places_asked
            and quality is AddressQuality.STRONG
            and not any(t.word in PLACES for t in run_toks)
        ):
            # "Каракол шаарына жеткиресизби? Абдрахманов көчөсү 130": the town the customer
            # asked about is the town of the address given with it
            address = f"{places_asked[0].raw}, {address}"
        if detail_only:
            quality = AddressQuality.NONE
    # The count: negated ones ("не 3, а 4") give way; two different ones are a conflict.
    chosen = [c for c in counts if not c.negated] or []
    swap: tuple[int, int] | None = None
    # "не 3, а 4", "вместо 4 давайте 6", "30 not 3": the old and the new value stand in the
    # same clause or the next one.
    for index, old in by_clause:
        if not old.negated or old.value is None:
            continue
        for where in (index, index + 1, index - 1):
            news = [
                c.value
                for i, c in by_clause
                if i == where and not c.negated and not c.doubtful
                and c.value is not None and c.value != old.value
            ]  # fmt: skip
            if news:
                break
        if len(set(news)) == 1:
            swap = (old.value, news[0])
            break
    values = {c.value for c in chosen if not c.doubtful}
    quantity: int | None = None
    conflict = False
    fraction = any(c.value is None for c in chosen)
    doubtful: int | None = None
    clear = [c for c in chosen if not c.doubtful and c.value is not None]
    either = (
        any(t.word in _EITHER for t in toks)
        and len({c.value for c in by_clause_counts(by_clause) if not c.negated}) > 1
    )
    if either:
        conflict = True  # "3 или 4 бутылки": the customer has not chosen
    elif len({c.value for c in clear}) == 1:
        quantity = clear[0].value
    elif len(values - {None}) > 1:
        strong = [c for c in clear if c.strong]
        if acc.correction or acc.no or acc.hedge:
            quantity = clear[-1].value  # "five. no wait, four", "четыре... хотя нет, пять"
        elif len({c.value for c in strong}) == 1:
            quantity = strong[0].value
        else:
            conflict = True
    if quantity is None and not conflict:
        maybe = [c for c in chosen if c.doubtful]
        if maybe:
            doubtful = maybe[0].value
    if quantity is not None and acc.correction and len(clear) > 1:
        quantity = clear[-1].value  # "3, точнее 4"
    if swap is not None and best is not None and address is not None:
        run_toks = [t for _, ts, _, _ in best for t in ts]
        olds_in = [t for t in run_toks if t.number == str(swap[0])]
        if olds_in:  # "кв 7... нет не 7, а 17": fixed within the message
            subs[id(olds_in[-1])] = str(swap[1])
            address = _render(text, run_toks, toks, subs)
            swap = None
            quantity = None if quantity == swaps_new_value(swaps_new, chosen) else quantity
    if swap is None:
        swap = _taken_back(toks, clauses)  # "этаж 5 — неправильно, 7й"
    delta = _relative(clauses, by_clause)  # "one more bottle", "на одну больше"
    if delta is not None:
        quantity, conflict, doubtful = None, False, None
    word_swap = _word_swap(toks)
    detail_fix: tuple[str, str] | None = None
    if address is None and (acc.correction or acc.no):
        kinds = {_DETAIL_KIND[t.word] for t in toks if t.word in _DETAIL_KIND}
        free = [t for t in toks if t.number is not None and not t.used]
        if len(kinds) == 1 and len(free) == 1 and quantity is None:
            detail_fix = (next(iter(kinds)), free[0].raw)  # "wrong flat, it's 12"
    all_words = tuple(t.word for t in toks if t.number is None)
    stripped = text.strip()
    if any(e in text for e in lx.YES_EMOJI) or (stripped and set(stripped) <= {"+", "!", " "}):
        acc.yes = True
    if any(e in text for e in lx.NO_EMOJI) or (stripped and set(stripped) <= {"-", " "}):
        acc.no = True
    first = next((t.word for t in toks if t.number is None), "")
    if stripped and set(stripped) <= {"?", "¿", " "}:
        acc.help = True  # a bare "?": what do you want from me
    return Reading(
        starts_yes=first in YES or bool(_find_phrase(all_words[:3], YES_PHRASES)),
        strong_yes=bool(_find_phrase(all_words, YES_PHRASES))
        or any(w in _STRONG_YES for w in all_words),
        phones=tuple(dict.fromkeys(p for _, _, p in phones)),
        phone_rejected=phone_rejected,
        phone_region_blocked=blocked,
        quantity=quantity,
        quantity_doubtful=doubtful,
        quantity_conflict=conflict,
        quantity_fraction=fraction and quantity is None,
        swap=swap,
        quantity_delta=delta,
        word_swap=word_swap,
        detail_fix=detail_fix,
        address=address if quality > AddressQuality.NONE or detail_only else None,
        address_quality=quality,
        address_detail_only=detail_only,
        cancel=acc.cancel,
        restart=acc.restart,
        handoff=acc.handoff,
        help=acc.help,
        bot=acc.bot,
        locale_switch=acc.locale_switch,
        question=acc.question,
        greeting=acc.greeting,
        thanks=acc.thanks,
        later=acc.later,
        request=acc.request,
        yes=acc.yes,
        no=acc.no,
        hedge=acc.hedge,
        correction=acc.correction or word_swap is not None,
        apology=acc.apology,
        fields=frozenset(acc.fields),
        other_words=acc.other_words,
        locale=detect_locale(text, all_words),
        locale_clear=_clear_margin(_scores(text, all_words)),
        empty=not toks,
    )


def _read_intents(clause: _Clause, words: tuple[str, ...], acc: _Acc) -> bool:
    """Note the clause's intents; True when the clause is nothing but intents."""
    if not words:
        return False
    plain = tuple(w for w in words)
    consumed: set[int] = set()

    def mark(phrase: tuple[str, ...]) -> None:
        n = len(phrase)
        for i in range(len(plain) - n + 1):
            if plain[i : i + n] == phrase:
                consumed.update(range(i, i + n))
                return

    for locale, phrases in LOCALE_PHRASES.items():
        found = _find_phrase(plain, phrases)
        if found and len(plain) <= len(found) + 3:
            acc.locale_switch = locale
            mark(found)
    yes_phrase = _find_phrase(plain, YES_PHRASES)
    if yes_phrase:
        acc.yes = True
        mark(yes_phrase)
    else:
        strong = _find_phrase(plain, _STRONG_CANCEL) or _cancel_stem(plain)
        weak = _find_phrase(plain, CANCEL_PHRASES)
        if strong:
            acc.cancel = True
            mark(strong)
        elif weak:
            rest = [w for i, w in enumerate(plain) if w not in weak]
            if all(w in _CANCEL_CONTEXT or w in THANKS for w in rest) or len(plain) <= 2:
                acc.cancel = True
                mark(weak)
    restart = _find_phrase(plain, RESTART_PHRASES)
    if restart and len(plain) <= len(restart) + 3:
        acc.restart = True
        mark(restart)
    help_phrase = _find_phrase(plain, HELP_PHRASES)
    if help_phrase and len(plain) <= len(help_phrase) + 3:
        acc.help = True
        mark(help_phrase)
    later = _find_phrase(plain, LATER_PHRASES)
    if later:
        acc.later = True
        mark(later)
    numbers_before = {
        i for i, t in enumerate(t for t in clause.toks if not t.used) if t.number is not None
    }
    for i, w in enumerate(plain):
        if w in HANDOFF_WORDS and (i - 1) not in numbers_before:
            others = [x for j, x in enumerate(plain) if j != i]
            if len(plain) <= 3 or any(x in HANDOFF_REQUEST for x in others):
                acc.handoff = True
                consumed.add(i)
                consumed.update(j for j, x in enumerate(plain) if x in HANDOFF_REQUEST)
        if w in BOT_WORDS and len(plain) <= 3:
            acc.bot = True
            consumed.add(i)
    for i, w in enumerate(plain):
        if i in consumed:
            continue
        if w in YES and (
            (i > 0 and plain[i - 1] in QUESTION_WORDS)
            or (i + 1 < len(plain) and plain[i + 1] in QUESTION_WORDS)
        ):
            consumed.add(i)  # "канча болот?": "how much will it be", not "all right"
            continue
        if w in YES and (
            (i > 0 and plain[i - 1] in _YES_NEGATORS)
            or (i + 1 < len(plain) and plain[i + 1] in _POST_NEGATORS)
        ):
            acc.no = True  # "туура эмес", "не верно", "not correct": a no, never a yes
            acc.correction = True
            consumed.update({i - 1, i, i + 1} & set(range(len(plain))))
            continue
        if w in _APOLOGIES:
            acc.apology = True
        elif w in _POST_NEGATORS:
            acc.correction = True
        elif w in GREETINGS:
            acc.greeting = True
        elif w in THANKS:
            acc.thanks = True
        elif w in YES:
            acc.yes = True
        elif w in NO:
            acc.no = True
        elif w in HEDGES:
            acc.hedge = True
        elif w in CORRECTION:
            acc.correction = True
        elif w in REQUEST:
            if w in ("хочу", "заказать", "заказ", "керек", "order", "want", "need", "нужна",
                     "нужно", "нужен", "надо", "воды", "суу", "water", "привезите"):  # fmt: skip
                acc.request = True
        else:
            for name, vocab in FIELD_WORDS.items():
                if w in vocab:
                    acc.fields.add(name)
                    break
            else:
                continue
        consumed.add(i)
    return len(consumed) == len(plain)


# Words that make a question a request with values: "можно 3 бутылки на Токтогула 5?"
_ASKING_FOR = _fold_all(
    {"можно", "хочу", "нужно", "нужна", "привезите", "привезти", "доставьте", "please", "pls",
     "can", "could", "мага", "керек", "бересизби", "алып", "жеткирип", "пожалуйста"}
)  # fmt: skip
_QUESTION_LEAD = _fold_all(
    {"а", "и", "ну", "скажите", "подскажите", "скажи", "подскажи", "извините", "кстати", "еще",
     "ещё", "так", "ok", "ок", "and", "also", "btw", "please", "тell", "айтыңызчы", "айтсаңыз",
     "айтып", "бериңизчи", "анан", "дагы", "a"}
)  # fmt: skip


_KY_QUESTION_ENDINGS = ("сызбы", "сизби", "суздарбы", "сыздарбы", "сиздерби", "сызбу", "биз",
                        "ызбы", "избы", "ызбу")  # fmt: skip


def _ky_question(tok: _Tok) -> bool:
    """ "жеткиресизби", "аласызбы": a Kyrgyz question by its particle, no "?" needed."""
    word = tok.word
    return (
        tok.number is None
        and len(word) >= 7
        and word.endswith(_KY_QUESTION_ENDINGS)
        and word not in YES
        and word not in GREETINGS
    )


def _has_value_words(clause: _Clause) -> bool:
    """Numbers, street words or places: a clause that may carry a value, not just ask."""
    return any(
        t.number is not None or t.word in MARKERS or t.word in PLACES
        for t in clause.toks
        if not t.used
    )


def _has_topic(words: tuple[str, ...]) -> bool:
    return any(_find_phrase(words, phrases) for phrases in TOPIC_PHRASES.values())


def _question_clause(
    clause: _Clause, words: tuple[str, ...], acc: _Acc, *, asked: bool = False
) -> bool:
    """A question clause: note its topic; True when it is a question the bot should answer."""
    if acc.handoff or acc.cancel:
        return True
    topic: Topic | None = None
    for name, phrases in TOPIC_PHRASES.items():
        if _find_phrase(words, phrases):
            topic = name
            break
    if topic is None and not (asked or clause.question or (words and words[0] in QUESTION_WORDS)):
        return False
    if topic is None:
        if _only(words, _SMALL_TALK | REQUEST | CORRECTION):
            return False  # "здравствуйте?" "да?" — not a question to answer
        topic = Topic.OTHER
    if acc.question is None or acc.question is Topic.OTHER:
        acc.question = topic
    return True


# -- language --------------------------------------------------------------------------------

_RU_WORDS = frozenset(
    w
    for w in (YES | NO | GREETINGS | THANKS | REQUEST | CORRECTION | QUESTION_WORDS
              | QUANTITY_FILLERS | HANDOFF_WORDS | HANDOFF_REQUEST | frozenset(ONES)
              | frozenset(TEENS) | frozenset(TENS) | ALL_FIELD_WORDS | HEDGES
              | _fold_all({"и", "в", "на", "с", "по", "я", "мне", "не", "это", "у", "вас",
                           "что", "мой", "моя", "пожалуйста", "спасибо", "улица", "дом",
                           "квартира", "заказ", "привезите", "адрес", "телефон", "номер",
                           "сколько", "стоит", "будет", "нужно", "можно", "есть", "уже",
                           "тоже", "только", "ещё", "еще", "если", "или", "за", "от", "до",
                           "к", "для", "вы", "мы", "нам", "наш", "ваш", "так", "вот"}))
    if re.fullmatch(r"[а-яё\-]+", w)
) - KY_WORDS - {"он", "бир", "эки", "уч", "торт", "беш", "алты", "жети", "адам"}  # fmt: skip
_EN_ONLY = EN_WORDS - RU_LATIN - KY_WORDS


# Words every language borrows in addresses and order talk: they tell no language.
_BORROWED = (MARKERS | ALL_FIELD_WORDS | PLACES | _fold_all({"ok", "ок", "оператор", "operator",
             "заказ", "менеджер", "салам", "salam", "адрес", "номер", "nomer", "adres"})) - (
    KY_WORDS - _fold_all({"үй", "уй", "батир", "кабат"})
) - (EN_WORDS - RU_LATIN)  # fmt: skip


# Verb and question endings only Kyrgyz has ("жеткиресиздерби", "бересизби", "алып келгиле").
_KY_ENDINGS = tuple(
    fold(e)
    for e in ("сызбы", "сизби", "суздарбы", "сыздарбы", "сиздерби", "ңыз", "ңиз", "ңуз", "ңүз",
              "ыныз", "иниз", "гыла", "гиле", "ыңызчы", "иңизчи", "сыздар", "сиздер", "дарбы",
              "дерби", "ыбызбы", "ибизби")
)  # fmt: skip


_SMALL_TALK = YES | NO | GREETINGS | THANKS


def _scores(text: str, words: tuple[str, ...] | None = None) -> dict[str, float]:
    if words is None:
        words = tuple(_canonical(t) for t in _WORD_RE.findall(text))
    lowercase = {fold(t) for t in _WORD_RE.findall(text) if t[:1].islower()}
    scores = {"ky": 3.0 * sum(1 for ch in text if ch in "ңөүҢӨҮ"), "ru": 0.0, "en": 0.0}
    for w in words:
        if w in _BORROWED:
            continue
        inflected = len(w) >= 6 and w.endswith(_KY_ENDINGS) and w in lowercase
        if w in KY_WORDS or (inflected and w not in _RU_WORDS):
            scores["ky"] += 1.5  # Kyrgyz speakers borrow Russian nouns, not Kyrgyz grammar
        elif w in RU_LATIN:
            scores["ru"] += 1
        elif w in _EN_ONLY or (w.isascii() and w in _SMALL_TALK):
            scores["en"] += 1
        elif w in _RU_WORDS:
            scores["ru"] += 0.5 if w in _RU_LOANS else 1.0
    return scores


# Russian words Kyrgyz speakers use every day in a Kyrgyz sentence: weak evidence of Russian.
_RU_LOANS = _fold_all(
    {"вода", "воды", "воду", "штук", "штуки", "штука", "бутылка", "бутылки", "бутылок", "заказ",
     "квартира", "квартиры", "дом", "давайте", "давай", "короче", "ладно", "хорошо", "можно"}
)  # fmt: skip


def _clear_margin(scores: dict[str, float]) -> bool:
    """One language leads clearly: the others have no words, or half as many."""
    ranked = sorted(scores.values(), reverse=True)
    return ranked[0] > 0 and (ranked[1] == 0 or ranked[0] >= 2 * ranked[1])


def detect_locale(text: str, words: tuple[str, ...] | None = None) -> str | None:
    """The language of the words: Kyrgyz by its letters or words (also without ң/ө/ү and in
    Latin), English and Russian (also Russian typed in Latin) by theirs; None when unclear."""
    if text.lstrip().startswith("/"):
        return None
    scores = _scores(text, words)
    best = max(scores.values())
    if best == 0:
        return None
    winners = [name for name, score in scores.items() if score == best]
    return winners[0] if len(winners) == 1 else None


def locale_strength(text: str | None, locale: str) -> tuple[float, float]:
    """(score of ``locale``, best score of the others) for the words of ``text``."""
    if not text:
        return 0, 0
    scores = _scores(text)
    mine = scores.pop(locale, 0)
    return mine, max(scores.values())
