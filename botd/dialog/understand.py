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

The parts live in :mod:`.reading`, one concept a module: :mod:`~.reading.vocab` (the folded
lexicons), :mod:`~.reading.tokens` (tokens and clauses), :mod:`~.reading.phones`,
:mod:`~.reading.counts` and :mod:`~.reading.quantity` (a clause's counts, the message's count),
:mod:`~.reading.address_quality` and :mod:`~.reading.address_text`, :mod:`~.reading.intents`
and :mod:`~.reading.questions`, :mod:`~.reading.language`, and :mod:`~.reading.clause`, which
reads the clauses one by one. This module puts them together.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .model import Field
from .reading.address_quality import AddressQuality
from .reading.address_quality import _address_quality as _address_quality
from .reading.address_quality import _is_name as _is_name
from .reading.address_text import _Address, _address_run, _detail_fix, _render, _word_swap
from .reading.address_text import _trim as _trim
from .reading.clause import _Walk, _walk
from .reading.intents import _Acc, _read_signs, _yes_strength
from .reading.language import _locale_of, detect_locale, locale_strength
from .reading.phones import _find_phones, _settle_phones
from .reading.quantity import _Quantity, _quantity, _relative, _swap, _taken_back, swaps_new_value
from .reading.quantity import _self_fixed as _self_fixed
from .reading.tokens import _canonical as _canonical
from .reading.tokens import _clauses, _Tok, _tokens
from .reading.vocab import _WORD_RE as _WORD_RE
from .reading.vocab import Topic, fold

__all__ = [
    "AddressQuality",
    "Reading",
    "Topic",
    "detect_locale",
    "fold",
    "locale_strength",
    "read",
]


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
    text = _normalised(text)
    phones, phone_rejected, blocked = _find_phones(text, default_region, allowed_regions)
    toks = _tokens(text)
    phones = _settle_phones(phones, toks)
    walk = _walk(text, _clauses(text, toks), expecting)
    address = _address_run(
        walk.address_parts,
        walk.address_led,
        walk.places_asked,
        text,
        toks,
        walk.subs,
        asked=walk.asked,
    )
    count = _message_count(walk, toks, address)
    word_swap = _word_swap(toks)
    acc = walk.acc
    detail_fix: tuple[str, str] | None = None
    if address.text is None and (acc.correction or acc.no) and count.value is None:
        detail_fix = _detail_fix(toks)  # "wrong flat, it's 12"
    _read_signs(text, acc)
    return _reading(
        text,
        toks,
        (phones, phone_rejected, blocked),
        acc,
        address,
        count,
        word_swap=word_swap,
        detail_fix=detail_fix,
    )


def _normalised(text: str) -> str:
    """NFKC, map links dropped, runs of blanks made one space (line breaks kept)."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"https?://\S+|www\.\S+", " ", text)  # a map link is no part of an address
    return re.sub(r"[^\S\n]+", " ", text).strip()


def _message_count(walk: _Walk, toks: list[_Tok], address: _Address) -> _Quantity:
    """The count of the message; a swapped number found in the address fixes the address."""
    acc = walk.acc
    # The count: negated ones ("не 3, а 4") give way; two different ones are a conflict.
    chosen = [c for c in walk.counts if not c.negated] or []
    swap = _swap(walk.by_clause)
    count = _quantity(
        chosen,
        walk.by_clause,
        toks,
        changed_mind=acc.correction or acc.no or acc.hedge,
        correction=acc.correction,
    )
    if swap is not None and address.run is not None and address.text is not None:
        run_toks = [t for _, ts, _, _ in address.run for t in ts]
        olds_in = [t for t in run_toks if t.number == str(swap[0])]
        if olds_in:  # "кв 7... нет не 7, а 17": fixed within the message
            walk.subs[id(olds_in[-1])] = str(swap[1])
            address.text = _render(walk.text, run_toks, toks, walk.subs)
            swap = None
            if count.value == swaps_new_value(walk.swaps_new, chosen):
                count.value = None
    if swap is None:
        swap = _taken_back(toks, walk.clauses)  # "этаж 5 — неправильно, 7й"
    count.swap = swap
    count.delta = _relative(walk.clauses, walk.by_clause)  # "one more bottle", "на одну больше"
    if count.delta is not None:
        count.value, count.conflict, count.doubtful = None, False, None
    return count


def _reading(
    text: str,
    toks: list[_Tok],
    phones: tuple[list[tuple[int, int, str]], bool, bool],
    acc: _Acc,
    address: _Address,
    count: _Quantity,
    *,
    word_swap: tuple[str, str] | None,
    detail_fix: tuple[str, str] | None,
) -> Reading:
    """The :class:`Reading` of what the message was found to hold."""
    found, phone_rejected, blocked = phones
    all_words = tuple(t.word for t in toks if t.number is None)
    starts_yes, strong_yes = _yes_strength(all_words)
    locale, locale_clear = _locale_of(text, all_words)
    return Reading(
        starts_yes=starts_yes,
        strong_yes=strong_yes,
        phones=tuple(dict.fromkeys(p for _, _, p in found)),
        phone_rejected=phone_rejected,
        phone_region_blocked=blocked,
        quantity=count.value,
        quantity_doubtful=count.doubtful,
        quantity_conflict=count.conflict,
        quantity_fraction=count.fraction and count.value is None,
        swap=count.swap,
        quantity_delta=count.delta,
        word_swap=word_swap,
        detail_fix=detail_fix,
        address=address.text
        if address.quality > AddressQuality.NONE or address.detail_only
        else None,
        address_quality=address.quality,
        address_detail_only=address.detail_only,
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
        locale=locale,
        locale_clear=locale_clear,
        empty=not toks,
    )
