"""The value helpers the dialog still uses: a shared contact's phone, a shared location, limits.

Text is read by ``understand.read`` (tests/dialog/test_understand.py); these are the formats a
shared contact card really carries.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botd.dialog import Reply
from botd.dialog.parse import (
    MAX_ADDRESS_CHARS,
    MAX_QUANTITY,
    MIN_QUANTITY,
    describe_regions,
    format_location,
    parse_phone,
    quantity_params,
)

# -- location ---------------------------------------------------------------------------------


def test_location_formatting() -> None:
    assert format_location((42.8746, 74.5698)) == "📍 42.87460, 74.56980"
    assert format_location((-90.0, 180.0)) == "📍 -90.00000, 180.00000"
    assert format_location((91.0, 0.0)) is None
    assert format_location((0.0, -181.0)) is None
    assert format_location((math.nan, 0.0)) is None
    assert format_location((0.0, math.inf)) is None


# -- phone ------------------------------------------------------------------------------------

KG = ("KG", ())


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0555 123 456", "+996555123456"),
        ("+996 555 123 456", "+996555123456"),
        ("996555123456", "+996555123456"),
        ("(0555) 12-34-56", "+996555123456"),
        ("0555123456", "+996555123456"),
        ("555 123 456", "+996555123456"),
        ("+996-555-123-456", "+996555123456"),
        ("  +996555123456  ", "+996555123456"),
        ("мой номер 0555 123 456", "+996555123456"),
        ("+7 701 123 45 67", "+77011234567"),  # KZ: any country while allowed_regions is empty
        ("+1 202 555 0143", "+12025550143"),
        ("＋９９６５５５１２３４５６", "+996555123456"),  # full-width digits
    ],
)
def test_phone_formats_accepted(raw: str, e164: str) -> None:
    assert parse_phone(raw, *KG) == e164


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "12345",
        "+996 555 12",  # too short
        "0555 123 456 789 000",  # too long
        "8 701 123 45 67",  # a Kazakh national format is not a Kyrgyz number
        "+996 555 123 456 and 0555 123 457",  # two numbers: which one?
        "1-800-FLOWERS",  # letters are never read as digits
        "0" * 100,
    ],
)
def test_phone_invalid(raw: str) -> None:
    assert parse_phone(raw, *KG) == Reply("phone_invalid")


def test_phone_region_not_allowed_names_the_allowed_countries() -> None:
    result = parse_phone("+7 701 123 45 67", "KG", ("KG",))
    assert result == Reply("phone_region_not_allowed", (("countries", "+996 (KG)"),))
    two = parse_phone("+1 202 555 0143", "KG", ("kg", "KZ"))
    assert two == Reply("phone_region_not_allowed", (("countries", "+996 (KG), +7 (KZ)"),))


def test_phone_allowed_region_accepted() -> None:
    assert parse_phone("+7 701 123 45 67", "KG", ("KG", "KZ")) == "+77011234567"
    assert parse_phone("0555 123 456", "KG", ("KG",)) == "+996555123456"


def test_phone_national_format_read_in_the_default_region() -> None:
    assert parse_phone("8 701 123 45 67", "KZ", ()) == "+77011234567"


@settings(max_examples=200, derandomize=True)
@given(st.text(max_size=80))
def test_phone_never_raises(raw: str) -> None:
    result = parse_phone(raw, "KG", ())
    assert isinstance(result, Reply) or (result.startswith("+") and result[1:].isdigit())


# -- limits ---------------------------------------------------------------------------------


def test_quantity_limits_and_their_message_parameters() -> None:
    assert (MIN_QUANTITY, MAX_QUANTITY, MAX_ADDRESS_CHARS) == (1, 50, 200)
    assert quantity_params() == (("min", "1"), ("max", "50"))


def test_regions_are_described_by_calling_code() -> None:
    assert describe_regions(("KG",)) == "+996 (KG)"
    assert describe_regions(("KG", "KZ")) == "+996 (KG), +7 (KZ)"
    assert describe_regions(("XX",)) == "XX"  # unknown: named as given
