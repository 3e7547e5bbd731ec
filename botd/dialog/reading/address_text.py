"""The address text of a message: trimmed of talk, joined across clauses, in the customer's
own spelling.

Each clause's address-like tokens are trimmed of introducing and closing words; adjacent
address clauses are joined into runs and the best run is rendered from the original text.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from ..model import Field
from .address_quality import _ADDRESS_WORDS, AddressQuality, _address_quality, _is_name
from .tokens import _Tok
from .vocab import (
    _APOLOGIES,
    _NEGATORS,
    _NOT_ADDRESS_WORDS,
    _POST_NEGATORS,
    _TOPIC_WORDS,
    ALL_FIELD_WORDS,
    CORRECTION,
    FIELD_WORDS,
    GREETINGS,
    HEDGES,
    INTRO,
    LANDMARKS,
    MARKERS,
    NO,
    PLACES,
    QUESTION_WORDS,
    REQUEST,
    THANKS,
    YES,
    _fold_all,
    fold,
)

# An address-like part of a clause: (clause index, tokens, quality, a detail only).
_Part = tuple[int, list[_Tok], AddressQuality, bool]

# Words that introduce or close an address (never an address marker)...
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


# ... and these, even where one is also a marker: "адрес", apologies, lead fillers, particles.
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


def _talk(word: str) -> bool:
    """A closing word that is talk, not address: thanks, "бүгүн жеткиресизби", "please"."""
    return (
        word in _STRIP
        or (word in _NOT_ADDRESS_WORDS and word not in MARKERS)
        or word in QUESTION_WORDS
        or word in _TOPIC_WORDS
        or (len(word) >= 6 and word.endswith(("бы", "би", "бу", "пы", "пи", "by", "bi")))
    )


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


def _detail_fix(toks: list[_Tok]) -> tuple[str, str] | None:
    """ "wrong flat, it's 12": the one kind of detail named and the one number given."""
    kinds = {_DETAIL_KIND[t.word] for t in toks if t.word in _DETAIL_KIND}
    free = [t for t in toks if t.number is not None and not t.used]
    if len(kinds) == 1 and len(free) == 1:
        return next(iter(kinds)), free[0].raw
    return None


# -- runs of address clauses -----------------------------------------------------------------


def _runs(parts: list[_Part]) -> list[list[_Part]]:
    """Address parts of adjacent clauses joined."""
    runs: list[list[_Part]] = []
    for part in parts:
        if runs and runs[-1][-1][0] == part[0] - 1:
            runs[-1].append(part)
        else:
            runs.append([part])
    return runs


def _run_start(run: list[_Part], address_led: set[int]) -> list[_Part]:
    """The run from where the address starts: its last "адрес" clause, past leading talk."""
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
    return run


def _best_run(
    parts: list[_Part], address_led: set[int], text: str, *, asked: bool
) -> tuple[list[_Part] | None, AddressQuality]:
    """The most address-like run (then the longest) and its quality."""
    best: list[_Part] | None = None
    best_key: tuple[int, int] = (-1, -1)
    for run in _runs(parts):
        run = _run_start(run, address_led)
        run_toks = [t for _, ts, _, _ in run for t in ts]
        if not run_toks:
            continue
        q = _address_quality(run_toks, text, asked=asked)
        if all(d for _, _, _, d in run):
            q = max(q, AddressQuality.DOUBTFUL)
        key = (int(q), len(run_toks))
        if key > best_key:
            best, best_key = run, key
    return best, AddressQuality(max(best_key[0], 0))


@dataclass(slots=True)
class _Address:
    """The address of a message, as :class:`~botd.dialog.understand.Reading` reports it."""

    text: str | None = None
    quality: AddressQuality = AddressQuality.NONE
    detail_only: bool = False  # "кв 12", "подъезд 2": a part to add to an address
    run: list[_Part] | None = None  # the parts it was rendered from


def _address_run(
    parts: list[_Part],
    address_led: set[int],
    places_asked: list[_Tok],
    text: str,
    every: list[_Tok],
    subs: dict[int, str],
    *,
    asked: bool,
) -> _Address:
    """The address of the best run of ``parts``, in the customer's own spelling."""
    best, quality = _best_run(parts, address_led, text, asked=asked)
    if best is None:
        return _Address()
    run_toks = [t for _, ts, _, _ in best for t in ts]
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
    address = _render(text, run_toks, every, subs)
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
    return _Address(address, quality, detail_only, best)
