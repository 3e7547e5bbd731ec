"""Address, phone and quantity parsers: every rule and the formats customers really type."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botd.dialog import Reply
from botd.dialog.parse import format_location, parse_address, parse_phone, parse_quantity

# -- address ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ул. Ленина 1", "ул. Ленина 1"),
        ("  Токтогула 10, кв 5  ", "Токтогула 10, кв 5"),
        ("abcde", "abcde"),  # exactly 5
        ("ы" * 200, "ы" * 200),  # 200 characters (400 bytes) is fine
        ("  " + "x" * 200 + "\n", "x" * 200),  # trimmed first
    ],
)
def test_address_accepted(text: str, expected: str) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", "address_too_short"),
        ("abcd", "address_too_short"),
        ("   abcd   ", "address_too_short"),
        ("ы" * 201, "address_too_long"),
        ("x" * 1000, "address_too_long"),
    ],
)
def test_address_rejected_with_reason(text: str, key: str) -> None:
    result = parse_address(text)
    assert isinstance(result, Reply)
    assert result.key == key


def test_address_reasons_carry_the_limits() -> None:
    assert parse_address("ab") == Reply("address_too_short", (("min_chars", "5"),))
    assert parse_address("a" * 201) == Reply("address_too_long", (("max_chars", "200"),))


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


# -- quantity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("3", 3),
        (" 12 ", 12),
        ("50", 50),
        ("+3", 3),
        ("03", 3),
        ("2.0", 2),
        ("3 шт", 3),
        ("3 шт.", 3),
        ("3шт", 3),
        ("3 pcs", 3),
        ("3 штуки", 3),
        ("5 штук", 5),
        ("3 бутылки", 3),
        ("10 bottles", 10),
        ("4 даана", 4),
        ("один", 1),
        ("одну", 1),
        ("два", 2),
        ("две", 2),
        ("три", 3),
        ("Четыре", 4),
        ("пять", 5),
        ("шесть", 6),
        ("семь", 7),
        ("восемь", 8),
        ("девять", 9),
        ("десять", 10),
        ("двенадцать", 12),
        ("двадцать пять", 25),
        ("пятьдесят", 50),
        ("one", 1),
        ("two", 2),
        ("three", 3),
        ("four", 4),
        ("five", 5),
        ("six", 6),
        ("seven", 7),
        ("eight", 8),
        ("nine", 9),
        ("ten", 10),
        ("twenty-five", 25),
        ("бир", 1),
        ("эки", 2),
        ("үч", 3),
        ("төрт", 4),
        ("беш", 5),
        ("алты", 6),
        ("жети", 7),
        ("сегиз", 8),
        ("тогуз", 9),
        ("он", 10),
        ("он эки", 12),
        ("три бутылки", 3),
        ("two bottles", 2),
        ("үч даана", 3),
    ],
)
def test_quantity_accepted(text: str, value: int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("0", "quantity_out_of_range"),
        ("51", "quantity_out_of_range"),
        ("-1", "quantity_out_of_range"),
        ("100 шт", "quantity_out_of_range"),
        ("9" * 5000, "quantity_out_of_range"),  # no int() of a huge string
        ("ноль", "quantity_out_of_range"),
        ("шестьдесят", "quantity_out_of_range"),
        ("2.5", "quantity_not_whole"),
        ("2,5", "quantity_not_whole"),
        ("abc", "quantity_not_a_number"),
        ("", "quantity_not_a_number"),
        ("шт", "quantity_not_a_number"),
        ("три или четыре", "quantity_not_a_number"),
        ("3 4", "quantity_not_a_number"),
        ("1/2", "quantity_not_a_number"),
        ("3 stones", "quantity_not_a_number"),
        ("пять пять", "quantity_not_a_number"),
    ],
)
def test_quantity_rejected_with_reason(text: str, key: str) -> None:
    result = parse_quantity(text)
    assert isinstance(result, Reply)
    assert result.key == key


def test_quantity_out_of_range_carries_the_limits() -> None:
    assert parse_quantity("51") == Reply("quantity_out_of_range", (("min", "1"), ("max", "50")))


@settings(max_examples=200, derandomize=True)
@given(st.text(max_size=40))
def test_quantity_never_raises(text: str) -> None:
    result = parse_quantity(text)
    assert isinstance(result, Reply) or 1 <= result <= 50
