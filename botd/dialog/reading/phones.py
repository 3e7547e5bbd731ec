"""Phones: every valid number in a message, wherever it stands.

``phonenumbers``' matcher finds the numbers; digit runs it does not take are looked at again (a
count run on after the number, a Kyrgyz mobile typed without 0 or +996) before they count as a
phone that is not valid. House and flat numbers ("41-7 кв 5") are never a phone attempt.
"""

from __future__ import annotations

import re

import phonenumbers

from .tokens import _Tok
from .vocab import _SELF_FIX, CORRECTION, NO

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


def _settle_phones(
    phones: list[tuple[int, int, str]], toks: list[_Tok]
) -> list[tuple[int, int, str]]:
    """The phones the customer stands by; their tokens (and numbers taken back) marked used."""
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
    return phones
