"""One clause at a time: what each clause of a message adds to what the message holds.

A clause is read in this order: its intents; whether it asks something (a number in a question is
no count); a house or flat number that goes on the address of the clause before; a number that
corrects that address; its counts; "не Токтогула" (what it is not); and what remains, classified
as an address part or as other words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..model import Field
from .address_quality import _ADDRESS_WORDS, AddressQuality, _address_quality, _is_detail_only
from .address_text import _CONTRAST, _LEAD_FILLERS, _drop_negated, _Part, _trim
from .counts import _AROUND_A_COUNT, _Count, _counts
from .intents import _Acc, _only, _read_intents
from .quantity import _TAKE_BACK, _self_fixed
from .questions import _is_asking, _question_clause
from .tokens import _Clause, _content_toks, _Tok
from .vocab import (
    _APOLOGIES,
    _NOT_ADDRESS_WORDS,
    _SELF_FIX,
    CORRECTION,
    GREETINGS,
    HEDGES,
    MARKERS,
    NO,
    PLACES,
    THANKS,
    YES,
    _fold_all,
)

_INTENT_WORDS = (
    CORRECTION
    | NO
    | YES
    | GREETINGS
    | THANKS
    | HEDGES
    | _fold_all({"sorry", "извините", "простите", "кечиресиз", "excuse", "wrong"})
)
_WANT = _fold_all({"нужно", "нужна", "нужны", "надо", "хочу", "мне", "нам", "давайте", "need",
                   "want", "керек", "мага", "бизге"})  # fmt: skip


@dataclass(slots=True)
class _Walk:
    """What the clauses of one message add up to so far (mutable while reading)."""

    text: str
    expecting: Field | None
    clauses: list[_Clause]
    asked: bool  # the address was asked for (or nothing yet): lowercase streets count
    acc: _Acc = field(default_factory=_Acc)
    counts: list[_Count] = field(default_factory=list)  # the counts taken
    swaps_old: list[_Count] = field(default_factory=list)  # negated ones: "не 3"
    # counts not taken (bare, part of an address): maybe the new value of a swap ("а 4")
    swaps_new: list[_Count] = field(default_factory=list)
    # token id → the customer's own correction of it
    subs: dict[int, str] = field(default_factory=dict)
    places_asked: list[_Tok] = field(default_factory=list)  # towns named in a question
    # clauses that begin with "адрес", "address", "дарек"
    address_led: set[int] = field(default_factory=set)
    # every count with its clause, for swaps
    by_clause: list[tuple[int, _Count]] = field(default_factory=list)
    address_parts: list[_Part] = field(default_factory=list)


def _walk(text: str, clauses: list[_Clause], expecting: Field | None) -> _Walk:
    """Read every clause of the message in order."""
    asked = expecting is None or expecting is Field.ADDRESS
    walk = _Walk(text, expecting, clauses, asked)
    for index, clause in enumerate(clauses):
        _read_clause(walk, index, clause)
    return walk


def _read_clause(walk: _Walk, index: int, clause: _Clause) -> None:
    """Add what one clause holds: intents, a question, counts, an address part."""
    clause.words = tuple(t.word for t in clause.toks if not t.used)
    kept = {id(t) for t in _self_fixed([t for t in clause.toks if not t.used])}
    for tok in clause.toks:
        if not tok.used and id(tok) not in kept and tok.number is not None:
            tok.used = True  # "3 ой нет 4": the number taken back is no value at all
    clause_counts = _counts(clause)
    words = tuple(t.word for t in clause.toks if not t.used)
    number_free = tuple(t.word for t in clause.toks if not t.used and t.number is None)
    intents_only = _read_intents(clause, words, walk.acc)
    if _is_asking(clause, words, walk.acc):
        # "how much is one bottle?", "50 бутылка алсам скидка барбы?": a number in a
        # question is no count; an address before it still is one ("Жибек Жолу 455 …
        # бүгүн жеткиресизби?").
        _question_clause(clause, words, walk.acc, asked=True)
        clause_counts = []
        walk.places_asked.extend(t for t in clause.toks if t.word in PLACES)
        if not any(t.word in MARKERS or t.word in PLACES for t in clause.toks):
            return
    if intents_only and not any(t.number is not None and not t.used for t in clause.toks):
        return
    if _goes_on_address(walk, index, clause):
        return
    if _fixes_address_number(walk, index, clause, clause_counts):
        return
    _take_counts(walk, index, clause, clause_counts)
    if _what_it_is_not(walk, index, clause, words):
        return
    _address_part(walk, index, clause, number_free, intents_only=intents_only)


def _goes_on_address(walk: _Walk, index: int, clause: _Clause) -> bool:
    """Numbers alone right after an address clause: its house or its house and flat."""
    parts = walk.address_parts
    free = [t for t in clause.toks if not t.used]
    after_address = bool(parts) and parts[-1][0] == index - 1
    if (
        len(free) == 1
        and free[0].number is not None
        and after_address
        and parts[-1][2] is AddressQuality.NEEDS_HOUSE
    ):
        parts.append((index, free, AddressQuality.STRONG, False))
        return True  # "улица Киевская, 95": the house number, not a count
    if (
        2 <= len(free) <= 3
        and all(t.number is not None for t in free)
        and after_address
        and re.fullmatch(
            r"\s*\d+\w?(?:\s*[-/]\s*\d+\w?){1,2}\s*", walk.text[free[0].start : free[-1].end]
        )
    ):
        parts.append((index, free, AddressQuality.NONE, False))
        return True  # "мкр Восток-5, 4-21": house and flat
    return False


def _fixes_address_number(
    walk: _Walk, index: int, clause: _Clause, clause_counts: list[_Count]
) -> bool:
    """ "Frunze street 300, no sorry 330": the last number of the address before was wrong."""
    fix_toks = _trim(_drop_negated(_content_toks(clause)))
    fixing = any(
        t.word in CORRECTION or t.word in NO or t.word in _SELF_FIX or t.word in _APOLOGIES
        for t in clause.toks
    )
    negated_here = any(c.negated for c in clause_counts)
    parts = walk.address_parts
    if (
        fixing
        and not negated_here
        and len(fix_toks) == 1
        and fix_toks[0].number is not None
        and parts
        and parts[-1][0] == index - 1
        and walk.expecting is not Field.QUANTITY
    ):
        numbers = [t for t in parts[-1][1] if t.number is not None]
        if numbers:
            walk.subs[id(numbers[-1])] = fix_toks[0].raw
            parts.append((index, [], AddressQuality.NONE, False))
            fix_toks[0].used = True
            return True
    return False


def _take_counts(walk: _Walk, index: int, clause: _Clause, clause_counts: list[_Count]) -> None:
    """Counts: strong ones anywhere; bare ones when a count is expected or the clause is
    nothing but the number and filler words."""
    negated_toks = {id(t) for c in clause_counts if c.negated for t in c.toks}
    for count in clause_counts:
        walk.by_clause.append((index, count))
        if count.negated:
            walk.swaps_old.append(count)
            continue
        if count.address_part:
            walk.swaps_new.append(count)  # may still be the new value of a swap
            continue
        if _is_count_to_take(walk, clause, count, negated_toks):
            walk.counts.append(count)
        else:
            walk.swaps_new.append(count)
            continue
        for tok in count.toks:
            tok.used = True
    if walk.swaps_old:
        for count in walk.swaps_old:
            for tok in count.toks:
                tok.used = True


def _is_count_to_take(walk: _Walk, clause: _Clause, count: _Count, negated_toks: set[int]) -> bool:
    """A strong or doubtful count, one asked for, or a bare one the clause leaves no doubt on."""
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
    return (
        count.strong
        or count.doubtful
        or asked_for
        or (
            bare_ok
            and not other_numbers
            and (
                walk.expecting is Field.QUANTITY
                or count.toks[0].number is None
                or len(walk.clauses) > 1
            )
        )
    )


def _what_it_is_not(walk: _Walk, index: int, clause: _Clause, words: tuple[str, ...]) -> bool:
    """ "не Токтогула", "нет не Чуй 136, а Чуй 163": a clause that says what it is not."""
    clauses = walk.clauses
    leading = [w for w in words if w not in _LEAD_FILLERS]
    return bool(
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
    )


def _address_part(
    walk: _Walk, index: int, clause: _Clause, number_free: tuple[str, ...], *, intents_only: bool
) -> None:
    """What remains of the clause: an address part (or a word joining two), else other words."""
    text, asked = walk.text, walk.asked
    rest_toks = _trim(_self_fixed(_drop_negated(_content_toks(clause))))
    if not rest_toks:
        return
    if any(t.word in _ADDRESS_WORDS for t in clause.toks[:3]):
        walk.address_led.add(index)  # "это фото дома, адрес 7 мкр 15-32": it starts here
    elif any(t.word in _TAKE_BACK for t in clause.toks[:2]) and (
        _address_quality(rest_toks, text, asked=asked) is AddressQuality.STRONG
    ):
        walk.address_led.add(index)  # "Горького 1г, ой точнее Горького 1в": it starts again
    quality = _address_quality(rest_toks, text, asked=asked)
    detail = _is_detail_only(rest_toks, text)
    if clause.question and quality < AddressQuality.STRONG:
        _question_clause(clause, tuple(t.word for t in rest_toks), walk.acc)
        return
    joiner = all(t.word in MARKERS for t in rest_toks) or (
        len(rest_toks) <= 4
        and not intents_only
        and not any(t.word in _INTENT_WORDS for t in clause.toks)
        and all(t.number is None for t in rest_toks)
        and any(t.word not in _NOT_ADDRESS_WORDS for t in rest_toks)
    )
    if quality is AddressQuality.NONE and not detail and joiner:
        walk.address_parts.append((index, rest_toks, quality, False))
        return
    if quality is AddressQuality.NONE and not detail:
        walk.acc.other_words += sum(
            1 for t in rest_toks if t.number is None and t.word not in _NOT_ADDRESS_WORDS
        )
        if number_free and not intents_only and any(t.number is not None for t in rest_toks):
            walk.acc.other_words += 1
        return
    walk.address_parts.append((index, rest_toks, quality, detail))
