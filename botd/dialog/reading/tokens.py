"""Tokens and clauses: a message cut into words and numbers, and at its sentence breaks.

Each word token carries its canonical form (folded, letter runs squeezed, one typo forgiven in
longer words by rapidfuzz against the lexicon); each number token its digits. Clauses are cut by
line breaks, ``;!?``, commas and sentence full stops, never inside numbers or after
abbreviations like "ул.".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from .vocab import (
    _NOT_ADDRESS_WORDS,
    _TOPIC_WORDS,
    ALL_FIELD_WORDS,
    GREETINGS,
    HANDOFF_WORDS,
    KY_WORDS,
    MARKERS,
    NO,
    ONES,
    PLACES,
    TEENS,
    TENS,
    THANKS,
    YES,
    fold,
)

_TOKEN_RE = re.compile(
    r"(?i)ж\s*/\s*м|\d+(?:[.,]\d+)?(?:(?:st|nd|rd|th|[абвгabcd]|-(?:я|й|е|го|ая|ий|ый|ой))(?![^\W\d_]))?"
    r"|[^\W\d_]+(?:['-][^\W\d_]+)*"
)

# Words of an abbreviation before a full stop that does not end a sentence ("ул. Ленина").
_ABBREVIATIONS = frozenset(
    {fold(w) for w in ("ул", "д", "кв", "г", "с", "пр", "мкр", "мкрн", "эт", "под", "корп", "обл",
                       "р", "ст", "пер", "б", "ж", "м", "пос", "просп", "бул", "кор", "св",
                       "st", "apt", "ave", "rd", "str", "bldg", "fl", "no", "көч", "коч",
                       "ш", "мр", "тел", "пгт", "р-н", "им", "ul", "kv", "d", "g", "mkr", "pr",
                       "s", "etc", "ж-м", "жм", "мкр-н", "пр-т", "тел", "ориент")}
)  # fmt: skip

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


def _content_toks(clause: _Clause) -> list[_Tok]:
    return [t for t in clause.toks if not t.used]
