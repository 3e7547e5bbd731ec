"""Address details in the text of an address: "кв 5", "дом 12", "5 подъезд", "этаж 3".

Used when a customer adds or corrects one part of an address already given: the detail of the
same kind is replaced in place, a new kind is added, and when a detail was given twice the last
one wins. Pure string functions; the dialog (:mod:`.step`) decides when to use them.
"""

from __future__ import annotations

import re

_KINDS = (
    ("кв", r"кв|квартира|квартиру|квартиры|батир|apt|apartment|flat|kv|kvartira"),
    ("дом", r"дом|д|house|building|үй|уй|uy|dom"),
    ("подъезд", r"под|подъезд|подьезд|entrance|кире бериш|podezd"),
    ("этаж", r"эт|этаж|этаже|floor|кабат|kabat|etaj|etazh"),
    ("код", r"код|домофон|code"),
    ("офис", r"офис|оф|office|ofis"),
)
_KIND_WORDS = "|".join(p for _, p in _KINDS)
_KIND_FIRST = re.compile(r"(?i)(?<!\w)(" + _KIND_WORDS + r")(?!\w)\.?\s*(?:is\s+)?(\d+[\w/]*)")
_NUMBER_FIRST = re.compile(
    r"(?i)(?<![\w/])(\d+[\w/]*?)(?:-?(?:й|я|е|ый|ий))?[-\s]*(" + _KIND_WORDS + r")(?!\w)"
)


def _kind(word: str) -> str:
    word = word.casefold()
    for name, pattern in _KINDS:
        if re.fullmatch(pattern, word):
            return name
    return word


def _details(text: str) -> list[tuple[str, str, tuple[int, int], str]]:
    """(kind, value, span of the value, as written) of each "кв 5", "дом 12", "5 кв"."""
    out = []
    taken: list[tuple[int, int]] = []
    for m in _KIND_FIRST.finditer(text):
        out.append((_kind(m.group(1)), m.group(2), m.span(2), m.group(0)))
        taken.append(m.span())
    for m in _NUMBER_FIRST.finditer(text):
        if any(a < m.end() and m.start() < b for a, b in taken):
            continue  # "89 кв 12": the 12 belongs to кв, the 89 is the house
        out.append((_kind(m.group(2)), m.group(1), m.span(1), m.group(0)))
    return out


def _merge_detail(address: str, detail: str, *, correcting: bool = False) -> str:
    """ "Токтогула 10, кв. 5" + "кв 12" → "Токтогула 10, кв. 12"; a new kind of detail is
    added; when correcting, "дом 15" replaces the house number written after the street."""
    found = _details(detail)
    if not found:
        return f"{address}, {detail}"
    if not any(k in {kind for kind, _, _, _ in _details(address)} for k, _, _, _ in found) and not (
        correcting and any(k == "дом" for k, _, _, _ in found)
    ):
        return f"{address}, {detail}"  # only new details: as the customer wrote them
    extra = []
    for kind, value, _, written in found:
        existing = [span for k, _, span, _ in _details(address) if k == kind]
        if existing:
            start, end = existing[-1]
            address = address[:start] + value + address[end:]
        elif kind == "дом" and correcting and re.search(r"\d", address):
            number = re.search(r"\d+[\w/]*", address)
            assert number is not None
            address = address[: number.start()] + value + address[number.end() :]
        else:
            extra.append(written)
    return ", ".join([address, *extra])


def _replace_words(address: str, old: str, new: str) -> str | None:
    """ "Ахунбаева 170" with ("Ахунбаева", "Абдрахманова") → "Абдрахманова 170"."""
    position = address.casefold().find(old.casefold())
    if position < 0:
        stem = old.casefold()[: max(4, len(old) - 2)]
        position = address.casefold().find(stem)
        if position < 0:
            return None
        end = position + len(stem)
        while end < len(address) and address[end].isalpha():
            end += 1
        return address[:position] + new + address[end:]
    return address[:position] + new + address[position + len(old) :]


def _last_detail_wins(address: str) -> str:
    """ "7 мкр, дом 20, кв 48, кв 84" (from "кв 48, точнее кв 84") → "7 мкр, дом 20, кв 84"."""
    seen: dict[str, tuple[int, int]] = {}
    for kind, _value, _span, written in _details(address):
        if kind in seen and kind != "дом":
            start = address.find(written)
            first_start, first_end = seen[kind]
            if start > first_start:
                # drop the earlier detail of this kind, with the separator after it
                tail = re.match(r"\s*,?\s*", address[first_end:])
                cut_end = first_end + (tail.end() if tail else 0)
                return _last_detail_wins(address[:first_start] + address[cut_end:])
        start = address.find(written)
        seen[kind] = (start, start + len(written))
    return address


def _swap_number(address: str, old: int, new: int) -> str:
    """The first ``old`` standing alone in ``address`` made ``new`` ("21st" → "12th")."""
    return re.sub(
        rf"(?<!\d){old}(st|nd|rd|th)?(?!\d)",
        lambda m: str(new) + (_ordinal_suffix(new) if m.group(1) else ""),
        address,
        count=1,
    )


def _ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
