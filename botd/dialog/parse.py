"""Parsers for the three answers the dialog collects: address, phone, quantity.

Each parser returns the normalised value, or a :class:`Reply` naming the specific reason the
input was rejected (the dialog sends it before asking the same question again). Pure functions:
no I/O, no clock, no randomness. The yes/no answer and commands live in :mod:`.phrases`.
"""

from __future__ import annotations

import math
import re
import unicodedata

import phonenumbers

from .model import Reply

__all__ = [
    "MAX_ADDRESS_CHARS",
    "MAX_QUANTITY",
    "MIN_ADDRESS_CHARS",
    "MIN_QUANTITY",
    "describe_regions",
    "format_location",
    "parse_address",
    "parse_phone",
    "parse_quantity",
    "quantity_params",
]

MIN_ADDRESS_CHARS = 5
MAX_ADDRESS_CHARS = 200
MIN_QUANTITY = 1
MAX_QUANTITY = 50
_MAX_PHONE_INPUT_CHARS = 64  # a longer message is not a phone number (and stays cheap to parse)


def parse_address(text: str) -> str | Reply:
    """An address of 5–200 characters after trimming (characters, not bytes)."""
    address = unicodedata.normalize("NFC", text).strip()
    if len(address) < MIN_ADDRESS_CHARS:
        return Reply("address_too_short", (("min_chars", str(MIN_ADDRESS_CHARS)),))
    if len(address) > MAX_ADDRESS_CHARS:
        return Reply("address_too_long", (("max_chars", str(MAX_ADDRESS_CHARS)),))
    return address


def format_location(location: tuple[float, float]) -> str | None:
    """A shared location as an address line, or None when the coordinates are impossible."""
    latitude, longitude = location
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        return None
    if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
        return None
    return f"📍 {latitude:.5f}, {longitude:.5f}"


_PHONE_CHUNK = re.compile(r"\+?\d[\d\s().\-]{4,}\d")


def parse_phone(raw: str, default_region: str, allowed_regions: tuple[str, ...]) -> str | Reply:
    """A valid phone number in E.164; national formats are read in ``default_region``.

    Words around the number are tolerated ("мой номер 0555 123 456"), but letters are never
    read as digits (phonenumbers would read "1-800-FLOWERS" style vanity numbers).
    """
    invalid = Reply("phone_invalid")
    text = unicodedata.normalize("NFKC", raw).strip()
    if len(text) > _MAX_PHONE_INPUT_CHARS:
        return invalid
    chunks = _PHONE_CHUNK.findall(text)
    if len(chunks) != 1:
        return invalid
    try:
        number = phonenumbers.parse(chunks[0], default_region.upper())
    except phonenumbers.NumberParseException:
        return invalid
    if not phonenumbers.is_valid_number(number):
        return invalid
    allowed = tuple(region.upper() for region in allowed_regions)
    if allowed and phonenumbers.region_code_for_number(number) not in allowed:
        return Reply("phone_region_not_allowed", (("countries", describe_regions(allowed)),))
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


def describe_regions(regions: tuple[str, ...]) -> str:
    """ "+996 (KG), +7 (KZ)": readable in every locale without a table of country names."""
    parts = []
    for region in regions:
        code = phonenumbers.country_code_for_region(region)
        parts.append(f"+{code} ({region})" if code else region)
    return ", ".join(parts)


def quantity_params() -> tuple[tuple[str, str], ...]:
    """The ``min``/``max`` parameters of every quantity message."""
    return (("min", str(MIN_QUANTITY)), ("max", str(MAX_QUANTITY)))


# Units a customer may add after the number ("3 шт", "3 pcs", "3 бутылки", "three bottles").
_UNITS = frozenset(
    {
        "шт", "штук", "штука", "штуки", "штучки", "штучек", "бут", "бутылка", "бутылки",
        "бутылок", "бутыль", "бутыли", "бутылей", "баллон", "баллона", "баллонов",
        "pcs", "pc", "piece", "pieces", "bottle", "bottles", "x",
        "даана", "бөтөлкө", "бөтөлкөлөр",
    }
)  # fmt: skip

_ONES = {
    # ru
    "ноль": 0, "один": 1, "одна": 1, "одну": 1, "два": 2, "две": 2, "три": 3, "четыре": 4,
    "пять": 5, "шесть": 6, "семь": 7, "восемь": 8, "девять": 9,
    # en
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9,
    # ky
    "нөл": 0, "бир": 1, "эки": 2, "үч": 3, "төрт": 4, "беш": 5, "алты": 6, "жети": 7,
    "сегиз": 8, "тогуз": 9,
}  # fmt: skip
_TEENS = {
    "десять": 10, "одиннадцать": 11, "двенадцать": 12, "тринадцать": 13, "четырнадцать": 14,
    "пятнадцать": 15, "шестнадцать": 16, "семнадцать": 17, "восемнадцать": 18,
    "девятнадцать": 19,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "двадцать": 20, "тридцать": 30, "сорок": 40, "пятьдесят": 50, "шестьдесят": 60,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "он": 10, "жыйырма": 20, "отуз": 30, "кырк": 40, "элүү": 50, "алтымыш": 60,
}  # fmt: skip

_NUMERIC = re.compile(r"([+-]?)(\d+)(?:[.,](\d+))?")
_WORD = re.compile(r"[^\W\d_]+")


def parse_quantity(text: str) -> int | Reply:
    """A whole number 1–50, as digits or words (ru/ky/en), optionally followed by a unit."""
    params = quantity_params()
    cleaned = _strip_units(unicodedata.normalize("NFKC", text).casefold())
    match = _NUMERIC.fullmatch(cleaned)
    if match is not None:
        sign, whole, fraction = match.groups()
        if fraction is not None and fraction.strip("0"):
            return Reply("quantity_not_whole")
        value = int(whole) if len(whole) <= 9 else MAX_QUANTITY + 1
        if sign == "-":
            value = -value
    else:
        words = _WORD.findall(cleaned)
        only_words = _WORD.sub("", cleaned).strip(" -") == ""
        number = _words_to_number(words) if only_words else None
        if number is None:
            return Reply("quantity_not_a_number")
        value = number
    if not MIN_QUANTITY <= value <= MAX_QUANTITY:
        return Reply("quantity_out_of_range", params)
    return value


def _strip_units(text: str) -> str:
    """The text without trailing unit words and dots ("3 шт." → "3")."""
    text = text.strip()
    while True:
        trimmed = text.rstrip(" .")
        match = re.search(r"([^\W\d_]+)$", trimmed)
        if match is None or match.group(1) not in _UNITS:
            return trimmed
        text = trimmed[: match.start()].strip()


def _words_to_number(words: list[str]) -> int | None:
    """ "три" → 3, "двадцать пять" → 25, "он эки" → 12, "twenty two" → 22; else None."""
    if len(words) == 1:
        word = words[0]
        for table in (_ONES, _TEENS, _TENS):
            if word in table:
                return table[word]
        return None
    if len(words) == 2 and words[0] in _TENS and words[1] in _ONES and _ONES[words[1]] > 0:
        return _TENS[words[0]] + _ONES[words[1]]
    return None
