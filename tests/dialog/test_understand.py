"""``understand.read``: every value and intent found anywhere in one customer message.

Each case is what a customer of the shop really writes; the dialog's decisions on top of these
readings are tested in test_step.py.
"""

from __future__ import annotations

import pytest

from botd.dialog import Field
from botd.dialog.understand import AddressQuality, Reading, detect_locale, read

Q = AddressQuality
ASKED_ADDRESS = Field.ADDRESS
ASKED_COUNT = Field.QUANTITY

# -- phones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "phones"),
    [
        ("+996 555 123 456", ("+996555123456",)),
        ("0555123456", ("+996555123456",)),
        ("996555123456 звоните", ("+996555123456",)),
        ("555 12 34 56", ("+996555123456",)),  # no 0, no +996: still a Kyrgyz mobile
        ("мой номер 0555 12 34 56", ("+996555123456",)),
        ("тел: +996 (700) 12-34-56", ("+996700123456",)),
        ("номер 0555 123 456 или 0700 123 456", ("+996555123456", "+996700123456")),
        ("+7 701 123 45 67", ("+77011234567",)),
    ],
)
def test_phones_are_found_anywhere(text: str, phones: tuple[str, ...]) -> None:
    reading = read(text)
    assert reading.phones == phones
    assert not reading.phone_rejected


@pytest.mark.parametrize(
    ("text", "rejected"),
    [
        ("Чуй 100, кв 5", False),  # house and flat numbers are no phone
        ("0555 12", False),  # too short to be a phone attempt
        ("12345678901234", True),  # phone-like, but no valid number
        ("0555 1234 5678", True),
    ],
)
def test_digits_that_are_no_phone(text: str, rejected: bool) -> None:
    reading = read(text)
    assert reading.phones == ()
    assert reading.phone_rejected is rejected


def test_a_phone_of_a_country_not_allowed_is_reported_not_taken() -> None:
    reading = read("+7 701 123 45 67", allowed_regions=("KG",))
    assert reading.phones == () and reading.phone_region_blocked
    assert read("0555 123 456", allowed_regions=("KG",)).phones == ("+996555123456",)


# -- counts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expecting", "quantity"),
    [
        ("3 шт", None, 3),
        ("x2", None, 2),
        ("три бутылки", None, 3),
        ("2 бутыли по 19 литров", None, 2),
        ("2 по 19 л", ASKED_COUNT, 2),  # the bottle's size is not the count
        ("5-литровые 2 штуки", None, 2),
        ("мне 2", ASKED_COUNT, 2),
        ("3", ASKED_COUNT, 3),
        ("бешти", None, 5),  # Kyrgyz counts with case and collective endings
        ("үчөө", None, 3),
        ("учоо", None, 3),  # ... also without the Kyrgyz letters
        ("он эки", None, 12),
        ("бир эле", None, 1),
        ("twenty two", None, 22),
        ("two please", None, 2),
    ],
)
def test_counts_in_digits_and_words(text: str, expecting: Field | None, quantity: int) -> None:
    reading = read(text, expecting=expecting)
    assert reading.quantity == quantity
    assert reading.quantity_doubtful is None and not reading.quantity_conflict


@pytest.mark.parametrize(
    ("text", "expecting"),
    [
        ("3", None),  # a bare number counts only when the count was asked for
        ("19 литров", ASKED_COUNT),
        ("5 человек", None),
        ("Чуй 100", ASKED_ADDRESS),
    ],
)
def test_numbers_that_are_no_count(text: str, expecting: Field | None) -> None:
    assert read(text, expecting=expecting).quantity is None


@pytest.mark.parametrize(
    ("text", "doubtful"), [("пару", 2), ("пару бутылок", 2), ("a couple of bottles", 2)]
)
def test_a_couple_is_doubtful(text: str, doubtful: int) -> None:
    reading = read(text, expecting=ASKED_COUNT)
    assert reading.quantity is None
    assert reading.quantity_doubtful == doubtful


@pytest.mark.parametrize(
    "text",
    [
        "3 бутылки или 4 бутылки",
        "3 или 4",
        "3 или 4 бутылки",
    ],
)
def test_two_different_counts_conflict(text: str) -> None:
    reading = read(text, expecting=ASKED_COUNT)
    assert reading.quantity is None
    assert reading.quantity_conflict


@pytest.mark.parametrize(
    ("text", "swap", "quantity"),
    [
        ("не 3 а 4", (3, 4), 4),
        ("экини эмес бешти", (2, 5), 5),
        ("вместо 4 давайте 6", (4, 6), 6),
    ],
)
def test_not_this_but_that_is_a_swap(text: str, swap: tuple[int, int], quantity: int) -> None:
    reading = read(text, expecting=ASKED_COUNT)
    assert reading.swap == swap
    assert reading.quantity == quantity


def test_a_fraction_is_no_count() -> None:
    reading = read("2,5 бутылки", expecting=ASKED_COUNT)
    assert reading.quantity is None and reading.quantity_fraction


# -- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quality", "address"),
    [
        ("ул. Токтогула 10, кв. 5", Q.STRONG, "ул. Токтогула 10, кв. 5"),
        ("Токтогула 10", Q.STRONG, "Токтогула 10"),
        ("12 мкр, дом 5, кв 3", Q.STRONG, "12 мкр, дом 5, кв 3"),
        ("с. Байтик, ул. Ленина 5", Q.STRONG, "с. Байтик, ул. Ленина 5"),
        ("Бишкек, Чүй 100, 5-батир", Q.STRONG, "Бишкек, Чүй 100, 5-батир"),
        ("Toktogul st. 10, flat 5", Q.STRONG, "Toktogul st. 10, flat 5"),
        ("ул. Ленина", Q.NEEDS_HOUSE, "ул. Ленина"),
        ("Toktogul street", Q.NEEDS_HOUSE, "Toktogul street"),
        ("Ленина көчөсү", Q.NEEDS_HOUSE, "Ленина көчөсү"),
        ("Бишкек", Q.CITY_ONLY, "Бишкек"),
        ("Токтогула", Q.DOUBTFUL, "Токтогула"),
        ("Аламединский рынок", Q.DOUBTFUL, "Аламединский рынок"),
        ("напротив филармонии", Q.DOUBTFUL, "напротив филармонии"),
    ],
)
def test_address_quality(text: str, quality: AddressQuality, address: str) -> None:
    reading = read(text, expecting=ASKED_ADDRESS)
    assert reading.address_quality is quality
    assert reading.address == address  # the customer's own spelling


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("мой адрес ул. Токтогула 10", "ул. Токтогула 10"),
        ("мой адрес: Чуй 100", "Чуй 100"),
        ("my address is Chui Avenue 100", "Chui Avenue 100"),
        ("доставка на Токтогула 10", "Токтогула 10"),
    ],
)
def test_an_introduction_is_not_part_of_the_address(text: str, address: str) -> None:
    reading = read(text, expecting=ASKED_ADDRESS)
    assert reading.address == address
    assert reading.address_quality is Q.STRONG


@pytest.mark.parametrize(
    "text",
    [
        "сколько стоит?",
        "когда привезете?",
        "у вас есть доставка в Ош?",  # a city inside a question is no address
        "здравствуйте",
        "hello",
        "хочу воды",
        "суу керек",
        "адрес скину позже",
        "можно живого человека?",
        "спасибо",
    ],
)
def test_questions_greetings_and_requests_are_no_address(text: str) -> None:
    reading = read(text, expecting=ASKED_ADDRESS)
    assert reading.address is None
    assert reading.address_quality is Q.NONE
    assert not reading.has_value


@pytest.mark.parametrize("text", ["кв 12", "подъезд 2"])
def test_a_flat_or_entrance_alone_is_a_detail(text: str) -> None:
    reading = read(text, expecting=ASKED_ADDRESS)
    assert reading.address_detail_only and reading.address == text
    assert reading.address_quality is Q.NONE


def test_every_value_of_a_whole_order_is_read() -> None:
    reading = read("Чуй 100 кв 5 0555123456 3 шт")
    assert reading.phones == ("+996555123456",)
    assert reading.quantity == 3
    assert reading.address == "Чуй 100 кв 5" and reading.address_quality is Q.STRONG


# -- intents ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cancel"),
    [
        ("отмена", True),
        ("отмените заказ", True),
        ("уже не надо", True),
        ("передумал", True),
        ("не надо, спасибо", True),
        ("stop", True),
        ("жокко чыгаруу", True),
        ("кереги жок", True),
        ("звонить не надо", False),  # not needing something else is no cancel
        ("сдачи не надо", False),
    ],
)
def test_cancel_phrases(text: str, cancel: bool) -> None:
    assert read(text).cancel is cancel


@pytest.mark.parametrize(
    ("text", "handoff"),
    [
        ("можно живого человека?", True),
        ("оператор", True),
        ("I want to talk to a human", True),
        ("адам менен сүйлөшөйүн", True),
        ("5 человек", False),  # a number of people, not a person to talk to
        ("нас 5 человек", False),
    ],
)
def test_asking_for_a_person(text: str, handoff: bool) -> None:
    assert read(text).handoff is handoff


@pytest.mark.parametrize(
    ("text", "yes", "no"),
    [
        ("да", True, False),
        ("дааа", True, False),
        ("ооба", True, False),
        ("всё верно", True, False),
        ("👍", True, False),
        ("нет", False, True),
        ("не да", False, True),  # a negated yes is a no, never a yes
        ("туура эмес", False, True),
    ],
)
def test_yes_and_no(text: str, yes: bool, no: bool) -> None:
    reading = read(text)
    assert (reading.yes, reading.no) == (yes, no)


def test_a_yes_with_but_is_hedged() -> None:
    reading = read("да, но адрес другой")
    assert reading.yes and reading.hedge and reading.correction
    assert Field.ADDRESS in reading.fields


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("начать заново", "restart"),
        ("помощь", "help"),
        ("бот", "bot"),
        ("спасибо", "thanks"),
        ("здравствуйте", "greeting"),
        ("хочу воды", "request"),
    ],
)
def test_other_intents(text: str, intent: str) -> None:
    reading = read(text)
    assert getattr(reading, intent) is True
    assert not reading.cancel and not reading.handoff


@pytest.mark.parametrize(
    ("text", "locale"), [("english", "en"), ("кыргызча", "ky"), ("по-русски", "ru")]
)
def test_asking_for_a_language(text: str, locale: str) -> None:
    assert read(text).locale_switch == locale


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("сколько стоит?", "price"),
        ("когда привезете?", "delivery"),
        ("Где вы находитесь?", "other"),
    ],
)
def test_questions_have_a_topic(text: str, topic: str) -> None:
    assert read(text).question == topic


# -- languages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "locale"),
    [
        ("суу керек", "ky"),  # Kyrgyz without its special letters
        ("salamatsyzby", "ky"),  # ... and in Latin letters
        ("hello", "en"),
        ("hi, I need water", "en"),
        ("privet", "ru"),  # Russian typed in Latin letters
        ("Здравствуйте", "ru"),
        ("ok", None),  # borrowed everywhere
        ("Бишкек", None),
        ("123", None),
        ("/start", None),
    ],
)
def test_the_language_of_the_words(text: str, locale: str | None) -> None:
    assert detect_locale(text) == locale
    assert read(text).locale == locale


def test_no_text_reads_as_nothing() -> None:
    assert read(None) == Reading()
    assert read(None).empty and not read(None).has_value
    assert read("   ").empty
