"""Value helpers the dialog still needs besides :mod:`.understand`: a shared contact's phone,
a shared location, the limits of the order's values and the parameters of their messages.

Reading a customer's text (addresses, phones and counts anywhere in it) is
:func:`.understand.read`. Pure functions: no I/O, no clock, no randomness.
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
    "parse_phone",
    "quantity_params",
]

MIN_ADDRESS_CHARS = 5
MAX_ADDRESS_CHARS = 200
MIN_QUANTITY = 1
MAX_QUANTITY = 50
_MAX_PHONE_INPUT_CHARS = 64  # a longer message is not a phone number (and stays cheap to parse)


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
