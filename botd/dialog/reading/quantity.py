"""The count of a whole message: one clear value, a conflict, a swap, a relative change.

The counts of every clause (:func:`.counts._counts`) add up here: negated ones give way ("не 3,
а 4"), two different ones are a conflict unless the customer corrected themselves, "one more"
is relative to the count given before, and a number taken back ("103 ой нет 105") is no value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .counts import _Count
from .tokens import _Clause, _Tok
from .vocab import _APOLOGIES, CORRECTION, NO, _fold_all


@dataclass(slots=True)
class _Quantity:
    """The count a message gives, as :class:`~botd.dialog.understand.Reading` reports it."""

    value: int | None = None
    conflict: bool = False
    fraction: bool = False
    doubtful: int | None = None  # "пару", "a couple": to be asked back
    swap: tuple[int, int] | None = None  # "не 12, а 21", "вместо 4 давайте 6": (old, new)
    delta: int | None = None  # "ещё одну", "one more", "на одну меньше": +1, +1, -1


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


def _swap(by_clause: list[tuple[int, _Count]]) -> tuple[int, int] | None:
    """(old, new) of "не 3, а 4", "вместо 4 давайте 6", "30 not 3": the old and the new value
    stand in the same clause or the next one."""
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
            return old.value, news[0]
    return None


def _quantity(
    chosen: list[_Count],
    by_clause: list[tuple[int, _Count]],
    toks: list[_Tok],
    *,
    changed_mind: bool,
    correction: bool,
) -> _Quantity:
    """The count of the ``chosen`` ones (not negated). ``changed_mind``: a correction, a "no"
    or a hedge in the message; ``correction``: a correction word."""
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
        if changed_mind:
            quantity = clear[-1].value  # "five. no wait, four", "четыре... хотя нет, пять"
        elif len({c.value for c in strong}) == 1:
            quantity = strong[0].value
        else:
            conflict = True
    if quantity is None and not conflict:
        maybe = [c for c in chosen if c.doubtful]
        if maybe:
            doubtful = maybe[0].value
    if quantity is not None and correction and len(clear) > 1:
        quantity = clear[-1].value  # "3, точнее 4"
    return _Quantity(quantity, conflict, fraction, doubtful)
