"""How much a run of tokens looks like a delivery address.

A street or place word with a number is an address; a street without a number needs the house; a
city alone needs the street; place-like words with nothing that makes an address are doubtful.
"кв 12", "подъезд 2" alone are a detail to add to an address given before.
"""

from __future__ import annotations

import itertools
from enum import IntEnum

from .tokens import _Tok
from .vocab import _NOT_ADDRESS_WORDS, LANDMARKS, MARKERS, ONES, PLACES, TEENS, TENS, _fold_all


class AddressQuality(IntEnum):
    """How much a text looks like a delivery address (higher is better)."""

    NONE = 0
    DOUBTFUL = 1  # some place-like words, nothing that makes it an address: asked back
    CITY_ONLY = 2  # a city/district alone: the street and house are asked for
    NEEDS_HOUSE = 3  # a street without a number: the house is asked for
    STRONG = 4  # a street/place with a number, a microdistrict, a landmark phrase


_SINGLE_LETTER_MARKERS = frozenset({"д", "с", "г", "п", "ж", "м", "к", "у"})
_STREET_MARKERS = _fold_all(
    {"ул", "улица", "улице", "улицы", "улицу", "пр", "пр-т", "просп", "проспект", "пер",
     "переулок", "бульвар", "бул", "б-р", "шоссе", "тупик", "проезд", "көчөсү", "көчө", "көч",
     "кочосу", "коче", "коч", "street", "st", "str", "avenue", "ave", "av", "road", "rd",
     "lane", "blvd", "boulevard", "ulitsa", "ul", "prospekt"}
)  # fmt: skip
_DETAIL_MARKERS = _fold_all(
    {"кв", "квартира", "квартиры", "квартиру", "кв-ра", "под", "подъезд", "подьезд", "пд", "эт",
     "этаж", "этаже", "корпус", "корп", "блок", "офис", "оф", "домофон", "код", "батир",
     "батири", "кабат", "кабатта", "кире", "apartment", "apt", "flat", "floor", "entrance",
     "suite", "office", "дом", "д", "үй", "уй", "house", "building", "bldg", "уйу", "kv",
     "dom", "batir", "kabat", "этажа", "подъезда", "квартире", "ofis", "офиси"}
)  # fmt: skip
_ADDRESS_WORDS = _fold_all(
    {
        "адрес",
        "адреса",
        "адрести",
        "address",
        "adres",
        "дарек",
        "даректи",
        "дарегим",
        "дарегин",
        "darek",
        "daregim",
        "adresim",
        "адресим",
        "адресибиз",
    }
)


def _is_marker(tok: _Tok, text: str) -> bool:
    word = tok.word
    if word not in MARKERS:
        return False
    if len(word) == 1 or word in _SINGLE_LETTER_MARKERS:
        # "д. 5", "с. Байтик", "г.Ош", "д5": a single letter counts only as an abbreviation.
        follow = text[tok.end : tok.end + 2]
        return (
            follow.startswith(".")
            or follow[:1].isdigit()
            or (
                follow.startswith(" ") and (tok.end + 1 < len(text) and text[tok.end + 1].isdigit())
            )
        )
    return True


def _is_name(tok: _Tok) -> bool:
    """Capitalised like a name ("Ахунбаева"), not shouted ("ВЫ МНЕ ВЧЕРА")."""
    return tok.raw[:1].isupper() and not (len(tok.raw) > 3 and tok.raw.isupper())


def _address_quality(toks: list[_Tok], text: str, *, asked: bool = True) -> AddressQuality:
    """How address-like ``toks`` are. ``asked``: the bot asked for the address (or nothing
    yet), so a lowercase word with a number ("ахунбаева 12") is a street; otherwise only a
    capitalised one is ("Ахунбаева 12" yes, "вернее 4" no)."""
    if not toks:
        return AddressQuality.NONE
    markers = [t for t in toks if _is_marker(t, text)]
    street = any(t.word in _STREET_MARKERS for t in markers)
    numbers = [t for t in toks if t.number is not None]
    for before, tok in itertools.pairwise(toks):
        if before in markers and tok.number is None and _spelled_number(tok.word):
            numbers.append(tok)  # "дом сто двадцать": a house number in words
    places = [t for t in toks if t.word in PLACES]
    landmark = any(t.word in LANDMARKS for t in toks)
    content = [
        t
        for t in toks
        if t.number is None
        and t.word not in _NOT_ADDRESS_WORDS
        and t.word not in MARKERS
        and t.word not in LANDMARKS
        and t.word not in PLACES
        and t not in numbers
        and len(t.word) >= 2
    ]
    named_number = False
    for a, b in itertools.pairwise(toks):
        if a.number is None and b.number is not None and (a in content or a in places):
            named_number = named_number or asked or _is_name(a) or a in places
        if a.number is not None and b.number is None and b.word in MARKERS:
            named_number = True  # "8 мкр", "12 микрорайон"
    if markers and numbers and (content or places or street or len(markers) >= 2):
        return AddressQuality.STRONG
    if numbers and any(t.word in _LOCALITY_MARKERS for t in markers):
        return AddressQuality.STRONG  # "мкр 8", "8 мкр", "квартал 12"
    if named_number:
        return AddressQuality.STRONG
    if landmark and (len(content) >= 2 or (numbers and (content or markers))):
        return AddressQuality.STRONG  # "напротив филармонии", "возле школы 61"
    if street and (content or places):
        return AddressQuality.NEEDS_HOUSE
    if places and not content:
        return AddressQuality.CITY_ONLY
    if content and (markers or landmark or any(_is_name(t) for t in content)):
        return AddressQuality.DOUBTFUL
    if places:
        return AddressQuality.DOUBTFUL
    return AddressQuality.NONE


_LOCALITY_MARKERS = _fold_all(
    {"мкр", "мкрн", "микрорайон", "микрорайоне", "мкр-н", "м-н", "жм", "жилмассив", "квартал",
     "mkr", "microdistrict", "mikrorayon", "кичи", "массив", "массиви"}
)  # fmt: skip
_ORDINALS = _fold_all({"первый", "второй", "третий", "четвертый", "четвёртый", "пятый",
                       "шестой", "седьмой", "восьмой", "девятый", "десятый", "first", "second",
                       "third", "fourth", "fifth", "биринчи", "экинчи", "үчүнчү", "учунчу",
                       "төртүнчү", "тортунчу", "бешинчи"})  # fmt: skip


_HUNDREDS = _fold_all({"сто", "двести", "триста", "четыреста", "пятьсот", "жүз", "жуз",
                       "hundred"})  # fmt: skip


def _spelled_number(word: str) -> bool:
    return word in ONES or word in TEENS or word in TENS or word in _HUNDREDS


def _is_detail_only(toks: list[_Tok], text: str) -> bool:
    """ "кв 12", "2 подъезд", "этаж 3", "подъезд второй": an address detail, no street."""
    if not toks or not any(t.number is not None or t.word in _ORDINALS for t in toks):
        return False
    words = [t for t in toks if t.number is None and t.word not in _ORDINALS]
    return (
        bool(words)
        and all(
            (t.word in _DETAIL_MARKERS and _is_marker(t, text)) or t.word in _NOT_ADDRESS_WORDS
            for t in words
        )
        and any(t.word in _DETAIL_MARKERS for t in words)
    )
