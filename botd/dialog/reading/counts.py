"""Counts in one clause: digits and number words (ru/ky/en), with their units and sizes.

A count is strong when a unit, an "x", a count noun or a Kyrgyz count ending goes with it; a
bare number is weak (whether it is the count is decided with its clause, :mod:`.clause`). A
bottle size ("19 л", "по 19", "19-литровые") is never a count; "11 мкр", "3 этаж" are part of an
address.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from ..model import Field
from .address_quality import _is_marker
from .tokens import _Clause, _Tok
from .vocab import (
    _APOLOGIES,
    _NEGATORS,
    _POST_NEGATORS,
    CORRECTION,
    DOUBTFUL_NUMBERS,
    FIELD_WORDS,
    GREETINGS,
    HEDGES,
    KY_ENDINGS,
    KY_STEMS,
    MARKERS,
    NO,
    ONES,
    QUANTITY_FILLERS,
    REQUEST,
    TEENS,
    TENS,
    THANKS,
    UNIT_PREFIXES,
    YES,
    _fold_all,
)

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

# Words that may stand around a bare count ("мне 2 пожалуйста", "нет, 4", "sorry I meant 3").
_AROUND_A_COUNT = (
    QUANTITY_FILLERS | YES | NO | CORRECTION | _NEGATORS | _POST_NEGATORS
    | FIELD_WORDS[Field.QUANTITY] | GREETINGS | THANKS | REQUEST | _APOLOGIES | HEDGES
)  # fmt: skip


@functools.lru_cache(maxsize=8192)  # every word is looked up; the Kyrgyz stems are many
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
    """Every count of ``clause``, in order; bottle sizes are marked used and left out."""
    toks = clause.toks
    counts: list[_Count] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.used:
            i += 1
            continue
        value, span, fraction, doubtful = _value_at(toks, i)
        if value is None and not fraction:
            i += 1
            continue
        prev = toks[i - 1] if i > 0 else None
        after = toks[i + len(span)] if i + len(span) < len(toks) else None
        if _is_bottle_size(tok, prev, after):
            tok.used = True
            if after is not None and _is_litre(after.word, tok.number):
                after.used = True
            i += len(span) + 1
            continue
        count = _count_at(toks, i, value, span, fraction=fraction, doubtful=doubtful)
        counts.append(count)
        i += len(count.toks)
    return counts


def _value_at(toks: list[_Tok], i: int) -> tuple[int | None, list[_Tok], bool, bool]:
    """(value, tokens it spans, a fraction, doubtful) of a count starting at ``toks[i]``."""
    tok = toks[i]
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    span = [tok]
    if tok.number is not None:
        value, fraction = _digits_value(tok.number, negative=tok.negative)
        return value, span, fraction, False
    if (
        tok.word in ("half", "пол")
        and nxt is not None
        and (
            nxt.word in ("dozen", "дюжины")
            or (nxt.word == "a" and i + 2 < len(toks) and toks[i + 2].word == "dozen")
        )
    ):
        span.extend(toks[i + 1 : i + (3 if nxt.word == "a" else 2)])
        return 6, span, False, False  # "half a dozen", "пол дюжины"
    if tok.word in DOUBTFUL_NUMBERS:
        return DOUBTFUL_NUMBERS[tok.word], span, False, True
    return _word_value(toks, i, span), span, False, False


def _digits_value(number: str, *, negative: bool) -> tuple[int, bool]:
    """(value, a fraction) of digits: "12", "2,5", "1234567" (capped at a million)."""
    fraction = False
    if re.search(r"[.,]", number):
        whole, _, frac = re.split(r"([.,])", number)
        if frac.strip("0"):
            fraction = True
        value = int(whole) if len(whole) <= 6 else 10**6
    else:
        value = int(number) if len(number) <= 6 else 10**6
    if negative:
        value = -value  # "-1": never a count to take
    return value, fraction


def _word_value(toks: list[_Tok], i: int, span: list[_Tok]) -> int | None:
    """The value of a number word ("двадцать пять", "он бир"); a second word joins ``span``."""
    tok = toks[i]
    nxt = toks[i + 1] if i + 1 < len(toks) else None
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
    return value


def _is_bottle_size(tok: _Tok, prev: _Tok | None, after: _Tok | None) -> bool:
    """A bottle size: "19 л", "по 19", "19-литровые", "5 литровых"."""
    return tok.number is not None and (
        (after is not None and _is_litre(after.word, tok.number))
        or (
            prev is not None
            and prev.word == "по"
            and tok.number in _SIZE_VALUES
            and (after is None or not _is_unit(after.word))
        )
    )


def _count_at(
    toks: list[_Tok], i: int, value: int | None, span: list[_Tok], *, fraction: bool, doubtful: bool
) -> _Count:
    """The count whose value starts at ``toks[i]``, with the unit words around it."""
    tok = toks[i]
    prev = toks[i - 1] if i > 0 else None
    after = toks[i + len(span)] if i + len(span) < len(toks) else None
    address_part = (
        tok.number is not None
        and after is not None
        and after.word in MARKERS
        and not _is_unit(after.word)
        and _is_marker(after, "")
    )  # "11 мкр", "3 этаж": part of an address, never a count to take
    unit, times = _unit_after(toks, i, value, span, prev, after)
    unit_before = _unit_before(toks, i, prev, after)
    negated = _is_negated(toks, i, span, prev, after, unit=unit)
    if unit_before and prev is not None:
        span.insert(0, prev)
    word_unit = tok.number is None and not doubtful and after is not None
    strong = unit or times or unit_before or (word_unit and after is not None
                               and _is_unit(after.word))  # fmt: skip
    if any(t.number is None and t.word not in ONES and _ky_inflected(t.word) for t in span):
        strong = True  # "бешти", "экини", "үчөө": Kyrgyz counts by their endings
    return _Count(
        None if fraction else value,
        strong,
        negated,
        doubtful or False,
        span,
        address_part=address_part,
    )


def _unit_after(
    toks: list[_Tok],
    i: int,
    value: int | None,
    span: list[_Tok],
    prev: _Tok | None,
    after: _Tok | None,
) -> tuple[bool, bool]:
    """(a unit follows, multiplied by "x"/"по"); the unit and "x" tokens join ``span``."""
    tok = toks[i]
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
    return unit, times


def _unit_before(toks: list[_Tok], i: int, prev: _Tok | None, after: _Tok | None) -> bool:
    """A unit or count noun before the number: "бутылок 5", "количество 3"."""
    tok = toks[i]
    if (
        not strong_before_set(prev)
        and prev is not None
        and prev.number is None
        and (_is_unit(prev.word) or prev.word in FIELD_WORDS[Field.QUANTITY])
        and not (after is not None and _is_unit(after.word))
    ):
        return True
    # "поменяйте количество на 6", "quantity should be 2"
    return (
        tok.number is not None
        and any(t.word in _COUNT_NOUNS for t in toks[max(0, i - 3) : i])
        and not any(t.number is not None for t in toks[max(0, i - 3) : i])
    )


def _is_negated(
    toks: list[_Tok],
    i: int,
    span: list[_Tok],
    prev: _Tok | None,
    after: _Tok | None,
    *,
    unit: bool,
) -> bool:
    """ "не 3", "3 эмес", "вместо 4", "instead of 4": the count is what it is not."""
    negated = (
        (prev is not None and prev.word in _NEGATORS)
        or (after is not None and after.word in _POST_NEGATORS)
        or (unit and i + len(span) < len(toks) and toks[i + len(span)].word in _POST_NEGATORS)
    )
    if (i >= 2 and toks[i - 2].word in ("вместо", "instead")) or (
        prev is not None and prev.word == "of" and i >= 2 and toks[i - 2].word == "instead"
    ):
        negated = True
    return negated
