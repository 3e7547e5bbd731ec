"""Every state and every rule of ``step``/``handle``, one turn at a time."""

from __future__ import annotations

import dataclasses

import pytest

from botd.dialog import (
    DialogSettings,
    DialogState,
    Field,
    OperatorMessage,
    OrderCancel,
    OrderDraft,
    Pending,
    Reply,
    Step,
    TimerFired,
    TimerKind,
    Turn,
    handle,
    step,
)

from .support import SETTINGS, Chat, at_confirmation, keys, params

ADDRESS = "Бишкек, ул. Токтогула 10, кв. 5"
PHONE = "+996555123456"
QUANTITY_PARAMS = (("min", "1"), ("max", "50"))
_AFTER_ADDRESS = (Step.WAITING_PHONE, Step.WAITING_QUANTITY, Step.WAITING_CONFIRMATION)
replace = dataclasses.replace


def state_at(step_: Step, **changes: object) -> DialogState:
    """A consistent state at ``step_`` with the answers the earlier questions collected, in a
    dialog whose language (Russian) the customer's words already told."""
    state = DialogState(
        step=step_,
        dialog_id="client-1:m0",
        locale="ru",
        started_at=100.0,
        updated_at=100.0,
        address=ADDRESS if step_ in _AFTER_ADDRESS else None,
        phone=PHONE if step_ in (Step.WAITING_QUANTITY, Step.WAITING_CONFIRMATION) else None,
        quantity=3 if step_ is Step.WAITING_CONFIRMATION else None,
        locale_sure=True,
    )
    return replace(state, **changes)


def turn(text: str | None = "hello", message_id: str = "m1", **extra: object) -> Turn:
    return Turn(message_id, "client-1", text, 0.0, **extra)  # type: ignore[arg-type]


SUMMARY = Reply("ask_confirmation", (("address", ADDRESS), ("phone", PHONE), ("quantity", "3")))
ASKS = {
    Step.WAITING_ADDRESS: Reply("ask_address"),
    Step.WAITING_PHONE: Reply("ask_phone"),
    Step.WAITING_QUANTITY: Reply("ask_quantity", QUANTITY_PARAMS),
    Step.WAITING_CONFIRMATION: SUMMARY,
}
WAITING = tuple(ASKS)
FIELD_STEP = {
    Field.ADDRESS: Step.WAITING_ADDRESS,
    Field.PHONE: Step.WAITING_PHONE,
    Field.QUANTITY: Step.WAITING_QUANTITY,
}


def summary(**shown: str) -> Reply:
    values = {"address": ADDRESS, "phone": PHONE, "quantity": "3"} | shown
    return Reply("ask_confirmation", tuple(values.items()))


def idle_after_order(at: float = 100.0, **changes: object) -> DialogState:
    """No dialog in progress; the customer placed the order of dialog ``client-1:m0`` at ``at``."""
    state = DialogState(
        Step.IDLE,
        "",
        "ru",
        at,
        at,
        locale_sure=True,
        last_order_key="client-1:m0",
        last_order_at=at,
    )
    return replace(state, **changes)


# -- starting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        None,
        replace(state_at(Step.IDLE), dialog_id=""),
        replace(state_at(Step.IDLE), dialog_id="x:y"),
    ],
)
def test_any_message_starts_a_dialog(state: DialogState | None) -> None:
    transition = step(state, turn("Здравствуйте", "m7"), 150.0, SETTINGS)
    # locale_sure: see test_the_first_words_that_tell_the_language_make_it_sure
    assert replace(transition.state, locale_sure=False) == DialogState(
        step=Step.WAITING_ADDRESS,
        dialog_id="client-1:m7",
        locale="ru",
        started_at=150.0,
        updated_at=150.0,
    )
    assert transition.replies == (Reply("greeting"), Reply("ask_address"))
    assert transition.order is None


def test_the_first_message_keeps_every_value_it_holds() -> None:
    text = "Здравствуйте! Чуй 100, кв 5, 0555 123 456, 3 бутылки"
    transition = step(None, turn(text, "m7"), 150.0, SETTINGS)
    assert transition.state.step is Step.WAITING_CONFIRMATION
    assert (transition.state.address, transition.state.phone, transition.state.quantity) == (
        "Чуй 100, кв 5",
        PHONE,
        3,
    )
    assert keys(transition) == ("greeting", "ask_confirmation")
    assert transition.order is None  # the summary must be confirmed first


def test_media_only_first_message_starts_the_dialog() -> None:
    transition = step(None, turn(None, media=("photo",)), 1.0, SETTINGS)
    assert transition.state.step is Step.WAITING_ADDRESS
    assert keys(transition) == ("greeting", "ask_address")


def test_the_same_turn_always_gives_the_same_transition() -> None:
    first = step(None, turn("hi", "msg-9"), 5.0, SETTINGS)
    again = step(None, turn("hi", "msg-9"), 5.0, SETTINGS)
    assert first == again
    assert first.state.dialog_id == "client-1:msg-9"
    other = step(None, turn("hi", "msg-10"), 5.0, SETTINGS)
    assert other.state.dialog_id == "client-1:msg-10"


@pytest.mark.parametrize("step_", [*WAITING, Step.HANDOFF])
def test_expired_state_starts_over_politely(step_: Step) -> None:
    old = state_at(step_)
    now = old.updated_at + SETTINGS.state_ttl_seconds + 0.001
    transition = step(old, turn("3", "m9"), now, SETTINGS)
    assert transition.state == DialogState(
        Step.WAITING_ADDRESS, "client-1:m9", "ru", now, now, locale_sure=True
    )
    assert keys(transition) == ("dialog_expired", "ask_address")


def test_an_expired_dialog_forgets_its_values_but_reads_the_new_message() -> None:
    old = state_at(Step.WAITING_CONFIRMATION)
    now = old.updated_at + SETTINGS.state_ttl_seconds + 1
    transition = step(old, turn("Чуй 100", "m9"), now, SETTINGS)
    assert transition.state.step is Step.WAITING_PHONE
    assert transition.state.address == "Чуй 100"
    assert transition.state.phone is None and transition.state.quantity is None
    assert keys(transition) == ("dialog_expired", "ask_phone")
    assert transition.order is None


@pytest.mark.parametrize("step_", WAITING)
def test_state_exactly_at_ttl_is_still_alive(step_: Step) -> None:
    old = state_at(step_)
    now = old.updated_at + SETTINGS.state_ttl_seconds
    transition = step(old, turn(None, media=("photo",)), now, SETTINGS)
    assert transition.state == replace(old, updated_at=now)


@pytest.mark.parametrize(
    "broken",
    [
        state_at(Step.WAITING_CONFIRMATION, quantity=None),
        state_at(Step.WAITING_CONFIRMATION, phone=None),
        state_at(Step.WAITING_ADDRESS, dialog_id=""),
        state_at(Step.WAITING_ADDRESS, editing=True),  # editing needs a complete order
        state_at(Step.WAITING_ADDRESS, pending=Pending(Field.QUANTITY, "2")),  # asked elsewhere
        state_at(Step.WAITING_PHONE, pending=Pending(Field.ADDRESS, "Токтогула")),
    ],
)
def test_inconsistent_state_starts_a_fresh_dialog(broken: DialogState) -> None:
    transition = step(broken, turn("да"), 200.0, SETTINGS)
    assert transition.state.step is Step.WAITING_ADDRESS
    assert transition.state.dialog_id == "client-1:m1"
    assert transition.state.pending is None and transition.state.address is None
    assert transition.order is None
    assert keys(transition) == ("greeting", "ask_address")


# -- the address ------------------------------------------------------------------------------


def test_valid_address_asks_for_the_phone() -> None:
    transition = step(state_at(Step.WAITING_ADDRESS), turn(f"  {ADDRESS} "), 200.0, SETTINGS)
    assert transition.state == replace(state_at(Step.WAITING_PHONE), updated_at=200.0)
    assert transition.replies == (Reply("ask_phone"),)


@pytest.mark.parametrize("text", ["ул", "abcde", "x" * 201, "дом", "12", "qwerty uiop"])
def test_what_does_not_look_like_an_address_is_not_taken(text: str) -> None:
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply("address_not_understood"), Reply("ask_address"))


@pytest.mark.parametrize(
    "text",
    [
        "сколько стоит?",
        "здравствуйте",
        "хочу воды",
        "адрес скину позже",
        "у вас есть доставка в Ош?",
        "0555 123 456",  # a phone first: taken, but no address
    ],
)
def test_questions_greetings_and_requests_never_become_the_address(text: str) -> None:
    transition = step(state_at(Step.WAITING_ADDRESS), turn(text), 200.0, SETTINGS)
    assert transition.state.address is None and transition.state.pending is None
    assert transition.state.step is Step.WAITING_ADDRESS
    assert transition.replies[-1] == Reply("ask_address")


def test_an_address_longer_than_the_limit_is_refused() -> None:
    text = "ул. Токтогула 10, " + "кв 5, " * 40
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (
        Reply("address_too_long", (("max_chars", "200"),)),
        Reply("ask_address"),
    )


@pytest.mark.parametrize(
    ("first", "second", "address"),
    [
        ("Бишкек", "ул. Токтогула 10", "Бишкек, ул. Токтогула 10"),
        ("Токмок", "Ленина 5", "Токмок, Ленина 5"),
        ("ул. Ленина", "дом 5", "ул. Ленина, дом 5"),
    ],
)
def test_an_address_in_pieces_is_asked_for_and_joined(
    first: str, second: str, address: str
) -> None:
    old = state_at(Step.WAITING_ADDRESS)
    asked = step(old, turn(first), 200.0, SETTINGS)
    assert asked.state == replace(old, address_part=first, updated_at=200.0)
    assert asked.replies == (Reply("ask_address_detail", (("part", first),)),)
    done = step(asked.state, turn(second, "m2"), 201.0, SETTINGS)
    assert done.state.address == address and done.state.address_part is None
    assert done.state.step is Step.WAITING_PHONE
    assert done.replies == (Reply("ask_phone"),)


@pytest.mark.parametrize("text", ["Токтогула", "Аламединский рынок"])
def test_a_doubtful_address_is_quoted_back_and_recorded_only_after_a_yes(text: str) -> None:
    old = state_at(Step.WAITING_ADDRESS)
    asked = step(old, turn(text), 200.0, SETTINGS)
    assert asked.state == replace(old, pending=Pending(Field.ADDRESS, text), updated_at=200.0)
    assert asked.replies == (Reply("confirm_address", (("address", text),)),)
    unclear = step(asked.state, turn(None, media=("photo",)), 201.0, SETTINGS)
    assert unclear.state.address is None and unclear.state.pending == Pending(Field.ADDRESS, text)
    yes = step(asked.state, turn("да", "m2"), 201.0, SETTINGS)
    assert yes.state.address == text and yes.state.pending is None
    assert yes.state.step is Step.WAITING_PHONE
    assert yes.replies == (Reply("ask_phone"),)


def test_a_doubtful_address_is_replaced_by_the_next_address() -> None:
    asked = step(state_at(Step.WAITING_ADDRESS), turn("Токтогула"), 200.0, SETTINGS)
    better = step(asked.state, turn("Токтогула 10, кв 5", "m2"), 201.0, SETTINGS)
    assert better.state.address == "Токтогула 10, кв 5" and better.state.pending is None
    assert better.replies == (Reply("ask_phone"),)


def test_no_to_a_doubtful_address_records_nothing() -> None:
    asked = step(state_at(Step.WAITING_ADDRESS), turn("Токтогула"), 200.0, SETTINGS)
    refused = step(asked.state, turn("нет", "m2"), 201.0, SETTINGS)
    assert refused.state == replace(asked.state, pending=None, updated_at=201.0)
    assert keys(refused)[0] == "address_asked_again"
    assert refused.replies[-1] == Reply("ask_address")


@pytest.mark.parametrize(
    ("pending", "step_", "expected"),
    [
        (Pending(Field.ADDRESS, "Токтогула"), Step.WAITING_ADDRESS, ("address_asked_again",)),
        (Pending(Field.QUANTITY, "2"), Step.WAITING_QUANTITY, ()),
    ],
)
def test_no_to_a_value_asked_back_is_understood(
    pending: Pending, step_: Step, expected: tuple[str, ...]
) -> None:
    old = state_at(step_, pending=pending)
    transition = step(old, turn("нет"), 200.0, SETTINGS)
    assert transition.state.pending is None
    assert "pending_unclear" not in keys(transition)
    assert transition.replies == (*(Reply(k) for k in expected), ASKS[step_])


def test_location_is_an_address() -> None:
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn(None, location=(42.8746, 74.5698)), 200.0, SETTINGS)
    assert transition.state.step is Step.WAITING_PHONE
    assert transition.state.address == "📍 42.87460, 74.56980"


def test_impossible_location_is_not_taken() -> None:
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn(None, location=(123.0, 74.0)), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies[-1] == Reply("ask_address")
    assert transition.order is None


# -- the phone --------------------------------------------------------------------------------


def test_valid_phone_asks_for_the_quantity() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn("(0555) 12-34-56"), 200.0, SETTINGS)
    assert transition.state == replace(state_at(Step.WAITING_QUANTITY), updated_at=200.0)
    assert transition.replies == (Reply("ask_quantity", QUANTITY_PARAMS),)


@pytest.mark.parametrize(
    "text",
    ["мой номер 0555 12 34 56", "996555123456", "555 12 34 56", "+996 (555) 12-34-56 звоните"],
)
def test_a_phone_is_found_anywhere_in_the_message(text: str) -> None:
    transition = step(state_at(Step.WAITING_PHONE), turn(text), 200.0, SETTINGS)
    assert transition.state.phone == PHONE
    assert transition.state.step is Step.WAITING_QUANTITY


def test_shared_contact_is_the_phone() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn(None, contact_phone="+996 555 123 456"), 200.0, SETTINGS)
    assert transition.state.step is Step.WAITING_QUANTITY
    assert transition.state.phone == PHONE


def test_invalid_shared_contact_is_not_taken() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn(None, contact_phone="12"), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies[-1] == Reply("ask_phone")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("12345", "phone_expected"),  # too short to be a phone attempt
        ("0555 12", "phone_expected"),
        ("0555 1234 5678", "phone_invalid"),  # a phone attempt, but no valid number in it
        ("12345678901234", "phone_invalid"),
        ("0555 123 45", "phone_invalid"),  # a digit missing
    ],
)
def test_not_a_phone_reasks_with_the_reason(text: str, key: str) -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply(key), Reply("ask_phone"))


def test_two_phones_ask_which_one() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn("0555 123 456 или 0700 123 456"), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply("phone_which"), Reply("ask_phone"))


def test_phone_from_a_region_not_allowed() -> None:
    only_kg = DialogSettings(allowed_regions=("KG",))
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn("+7 701 123 45 67"), 200.0, only_kg)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (
        Reply("phone_region_not_allowed", (("countries", "+996 (KG)"),)),
        Reply("ask_phone"),
    )


def test_kazakh_phone_accepted_when_any_region_is() -> None:
    transition = step(state_at(Step.WAITING_PHONE), turn("+7 701 123 45 67"), 200.0, SETTINGS)
    assert transition.state.phone == "+77011234567"


# -- the quantity -----------------------------------------------------------------------------


def test_valid_quantity_shows_the_summary() -> None:
    old = state_at(Step.WAITING_QUANTITY)
    transition = step(old, turn("3 бутылки"), 200.0, SETTINGS)
    assert transition.state == replace(state_at(Step.WAITING_CONFIRMATION), updated_at=200.0)
    assert transition.replies == (SUMMARY,)
    assert params(transition.replies[0]) == {"address": ADDRESS, "phone": PHONE, "quantity": "3"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("три бутылки, пожалуйста", 3),
        ("мне 2", 2),
        ("2 по 19 литров", 2),
        ("бешти", 5),
        ("бир эле", 1),
        ("он эки", 12),
        ("two please", 2),
        ("twenty two", 22),
    ],
)
def test_counts_inside_words_are_read(text: str, value: int) -> None:
    transition = step(state_at(Step.WAITING_QUANTITY), turn(text), 200.0, SETTINGS)
    assert transition.state.quantity == value
    assert transition.state.step is Step.WAITING_CONFIRMATION


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("0", "quantity_out_of_range"),
        ("51", "quantity_out_of_range"),
        ("100 шт", "quantity_out_of_range"),
        ("2.5", "quantity_not_whole"),
        ("abc", "quantity_not_a_number"),
        ("сто", "quantity_not_a_number"),
        ("3 бутылки или 4 бутылки", "quantity_which"),
        pytest.param(
            "3 или 4",
            "quantity_which",
        ),
        pytest.param(
            "3 или 4 бутылки",
            "quantity_which",
        ),
        ("19 литров", "quantity_not_a_number"),  # the bottle's size, not a count
        ("5 человек", "quantity_not_a_number"),  # not a count of bottles, not a person either
        pytest.param(
            "-1",
            "quantity_out_of_range",
        ),
    ],
)
def test_invalid_quantity_reasks(text: str, key: str) -> None:
    old = state_at(Step.WAITING_QUANTITY)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert keys(transition) == (key, "ask_quantity")


@pytest.mark.parametrize("text", ["пару", "пару бутылок", "парочку"])
def test_a_doubtful_count_is_asked_back(text: str) -> None:
    old = state_at(Step.WAITING_QUANTITY)
    asked = step(old, turn(text), 200.0, SETTINGS)
    assert asked.state == replace(old, pending=Pending(Field.QUANTITY, "2"), updated_at=200.0)
    assert asked.replies == (Reply("confirm_quantity", (("quantity", "2"),)),)
    assert step(asked.state, turn("да", "m2"), 201.0, SETTINGS).state.quantity == 2
    other = step(asked.state, turn("4", "m2"), 201.0, SETTINGS)
    assert other.state.quantity == 4 and other.state.pending is None


def test_several_values_in_one_message_are_all_taken() -> None:
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn("Чуй 100 кв 5, 0555123456, 3 шт"), 200.0, SETTINGS)
    assert (transition.state.address, transition.state.phone, transition.state.quantity) == (
        "Чуй 100 кв 5",
        PHONE,
        3,
    )
    assert transition.state.step is Step.WAITING_CONFIRMATION
    assert keys(transition) == ("ask_confirmation",)
    assert transition.order is None


def test_a_value_given_early_is_kept_and_not_asked_again() -> None:
    chat = Chat()
    chat.say("Здравствуйте, нужно 2 бутылки")
    assert chat.state is not None and chat.state.quantity == 2
    chat.say("Чуй 100")
    assert keys(chat.say("0555 123 456")) == ("ask_confirmation",)  # the count is not asked


# -- the summary ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "да",
        "Ооба.",
        "yes",
        "ok",
        "👍",
        "+",
        "Да, всё верно",
        "всё верно",
        "оформляйте",
        "дааа",
        "da",
        "макулмун",
        "sounds good",
    ],
)
def test_yes_creates_the_order(text: str) -> None:
    old = state_at(Step.WAITING_CONFIRMATION)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.order == OrderDraft(
        idempotency_key="client-1:m0",
        client_id="client-1",
        phone=PHONE,
        address=ADDRESS,
        quantity=3,
    )
    assert transition.state == idle_after_order(at=200.0)
    assert keys(transition) == ("order_created",)
    assert params(transition.replies[0]) == {"minutes": "15"}  # the cancel window


@pytest.mark.parametrize(
    ("text", "locale"),
    [
        ("нет", "ru"),
        ("жок", "ru"),
        ("No.", "ru"),
        ("👎", "ru"),
        ("not ok", "ru"),
        ("не да", "ru"),
        ("туура эмес", "ky"),  # clearly Kyrgyz: the language follows the customer
    ],
)
def test_a_bare_no_asks_what_to_change(text: str, locale: str) -> None:
    old = state_at(Step.WAITING_CONFIRMATION)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.order is None
    assert transition.state == replace(
        old, asked_what_to_change=True, locale=locale, updated_at=200.0
    )
    assert transition.replies == (Reply("what_to_change"),)


def test_after_what_to_change_a_yes_shows_the_summary_again_before_ordering() -> None:
    asked = step(state_at(Step.WAITING_CONFIRMATION), turn("нет"), 200.0, SETTINGS)
    again = step(asked.state, turn("да", "m2"), 201.0, SETTINGS)
    assert again.order is None
    assert again.replies == (SUMMARY,)
    assert not again.state.asked_what_to_change
    placed = step(again.state, turn("да", "m3"), 202.0, SETTINGS)
    assert placed.order is not None and placed.order.quantity == 3


@pytest.mark.parametrize("text", ["отмена", "cancel", "жокко чыгаруу", "передумал"])
def test_only_an_explicit_cancel_cancels_at_the_summary(text: str) -> None:
    asked = step(state_at(Step.WAITING_CONFIRMATION), turn("нет"), 200.0, SETTINGS)
    again = step(asked.state, turn("нет", "m2"), 201.0, SETTINGS)
    assert again.state.step is Step.WAITING_CONFIRMATION  # "no" twice still cancels nothing
    cancelled = step(asked.state, turn(text, "m2"), 201.0, SETTINGS)
    assert cancelled.state.step is Step.IDLE
    assert cancelled.replies == (Reply("order_cancelled"),)
    assert cancelled.order is None and cancelled.cancel is None


@pytest.mark.parametrize(
    ("text", "changed"),
    [
        ("нет, 4 штуки", {"quantity": "4"}),
        ("no, 2 bottles", {"quantity": "2"}),
        ("жок, үч болсун", {"quantity": "3"}),
        ("не 3, а 4", {"quantity": "4"}),
        ("5", {"quantity": "5"}),
        ("количество 7", {"quantity": "7"}),
        ("поменяйте количество на 5", {"quantity": "5"}),
        ("нет, 0700 123 456", {"phone": "+996700123456"}),
        ("номер другой: 0700 123 456", {"phone": "+996700123456"}),
        ("телефон 0700 123 456", {"phone": "+996700123456"}),
        ("нет, адрес Чуй 100", {"address": "Чуй 100"}),
        ("адрес Чуй 100", {"address": "Чуй 100"}),
        ("wrong street, it's Chui 100", {"address": "Chui 100"}),
        ("кв 12", {"address": "Бишкек, ул. Токтогула 10, кв. 12"}),
    ],
)
def test_a_new_value_at_the_summary_changes_it_and_asks_again(
    text: str, changed: dict[str, str]
) -> None:
    old = state_at(Step.WAITING_CONFIRMATION)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.order is None
    assert transition.state.step is Step.WAITING_CONFIRMATION
    assert transition.replies == (Reply("value_updated"), summary(**changed))
    assert not transition.state.asked_what_to_change and not transition.state.editing


@pytest.mark.parametrize(
    ("answer", "changed"),
    [
        ("4", {"quantity": "4"}),
        ("Чуй 100", {"address": "Чуй 100"}),
        ("0700 123 456", {"phone": "+996700123456"}),
    ],
)
def test_after_what_to_change_a_value_changes_it(answer: str, changed: dict[str, str]) -> None:
    asked = step(state_at(Step.WAITING_CONFIRMATION), turn("нет"), 200.0, SETTINGS)
    result = step(asked.state, turn(answer, "m2"), 201.0, SETTINGS)
    assert result.state.step is Step.WAITING_CONFIRMATION
    assert result.replies == (Reply("value_updated"), summary(**changed))
    assert not result.state.asked_what_to_change
    assert result.order is None


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("здравствуйте", "greeting_again"),
        ("сколько стоит?", "answer_price"),
        ("nothing", "confirm_unclear"),
        ("yesterday", "confirm_unclear"),
        ("может быть", "confirm_unclear"),
        ("да нет", "confirm_unclear"),
        ("okey-dokey", "confirm_unclear"),
    ],
)
def test_anything_else_at_the_summary_reasks_with_the_summary(text: str, reply: str) -> None:
    old = state_at(Step.WAITING_CONFIRMATION)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.order is None
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply(reply), SUMMARY)


# -- media, empty text ------------------------------------------------------------------------

# What each step says when the message holds no words at all.
WORDLESS = {
    Step.WAITING_ADDRESS: "address_not_understood",
    Step.WAITING_PHONE: "phone_expected",
    Step.WAITING_QUANTITY: "quantity_not_a_number",
    Step.WAITING_CONFIRMATION: "confirm_unclear",
}
# ... and when it has no text at all (a photo, a voice message).
NO_TEXT = {
    Step.WAITING_ADDRESS: "text_expected",
    Step.WAITING_PHONE: "text_expected",
    Step.WAITING_QUANTITY: "text_expected",
    Step.WAITING_CONFIRMATION: "confirm_unclear",
}


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize(
    ("extra", "reasons"),
    [
        ({"text": None, "media": ("photo",)}, NO_TEXT),
        ({"text": None, "media": ("audio", "pdf")}, NO_TEXT),
        ({"text": None}, NO_TEXT),
        ({"text": "   "}, WORDLESS),
        ({"text": ""}, WORDLESS),
        ({"text": "🙂"}, WORDLESS),
    ],
)
def test_media_or_empty_text_never_advances(
    step_: Step, extra: dict[str, object], reasons: dict[Step, str]
) -> None:
    old = state_at(step_)
    transition = step(old, Turn("m1", "client-1", at=0.0, **extra), 200.0, SETTINGS)  # type: ignore[arg-type]
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply(reasons[step_]), ASKS[step_])
    assert transition.order is None


def test_caption_with_media_is_read_as_text() -> None:
    transition = step(
        state_at(Step.WAITING_ADDRESS), turn(ADDRESS, media=("photo",)), 200.0, SETTINGS
    )
    assert transition.state.step is Step.WAITING_PHONE


@pytest.mark.parametrize("step_", [Step.WAITING_PHONE, Step.WAITING_QUANTITY])
def test_a_location_at_another_step_is_asked_back_before_it_replaces_the_address(
    step_: Step,
) -> None:
    old = state_at(step_)
    transition = step(old, turn(None, location=(42.0, 74.0)), 200.0, SETTINGS)
    located = "📍 42.00000, 74.00000"
    assert transition.state.address == old.address  # the typed address is not replaced yet
    assert transition.state.pending == Pending(Field.ADDRESS, located)
    assert keys(transition) == ("confirm_address",)
    confirmed = step(transition.state, turn("да"), 201.0, SETTINGS)
    assert confirmed.state.address == located
    assert confirmed.state.step is step_  # back to the question that was pending


# -- commands and intents anywhere ------------------------------------------------------------


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize(
    ("text", "locale"),
    [
        ("/cancel", "ru"),
        ("отмена", "ru"),
        ("cancel", "ru"),  # one English word does not outweigh the Russian already told
        ("жокко чыгаруу", "ky"),  # clearly Kyrgyz
        ("кереги жок", "ky"),
        ("токтот", "ru"),
        ("уже не надо", "ru"),
        ("передумал", "ru"),
        ("stop", "ru"),
        ("не надо, спасибо", "ru"),
    ],
)
def test_cancel_at_any_step(step_: Step, text: str, locale: str) -> None:
    transition = step(state_at(step_), turn(text), 200.0, SETTINGS)
    assert transition.state == DialogState(Step.IDLE, "", locale, 200.0, 200.0, locale_sure=True)
    assert transition.replies == (Reply("order_cancelled"),)
    assert transition.order is None and transition.cancel is None


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize("text", ["звонить не надо", "сдачи не надо"])
def test_not_needing_something_else_is_no_cancel(step_: Step, text: str) -> None:
    transition = step(state_at(step_), turn(text), 200.0, SETTINGS)
    assert transition.state.step is step_
    assert transition.replies[-1] == ASKS[step_]


@pytest.mark.parametrize("state", [None, replace(state_at(Step.IDLE), dialog_id="")])
def test_cancel_with_no_dialog(state: DialogState | None) -> None:
    transition = step(state, turn("/cancel"), 200.0, SETTINGS)
    assert transition.state.step is Step.IDLE
    assert transition.replies == (Reply("nothing_to_cancel"),)
    assert transition.cancel is None


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize(
    "text", ["/start", "начать заново", "restart", "start over", "кайра баштоо"]
)
def test_restart_at_any_step(step_: Step, text: str) -> None:
    transition = step(state_at(step_), turn(text, "m5"), 200.0, SETTINGS)
    assert transition.state == DialogState(
        Step.WAITING_ADDRESS, "client-1:m5", "ru", 200.0, 200.0, locale_sure=True
    )
    assert keys(transition) == ("restarted", "ask_address")


HELP_KEYS = [
    (Step.WAITING_ADDRESS, "help_address"),
    (Step.WAITING_PHONE, "help_phone"),
    (Step.WAITING_QUANTITY, "help_quantity"),
    (Step.WAITING_CONFIRMATION, "help_confirmation"),
]


@pytest.mark.parametrize(("step_", "help_key"), HELP_KEYS)
@pytest.mark.parametrize("text", ["/help", "помощь", "help", "жардам", "не понял"])
def test_help_explains_and_reasks(step_: Step, help_key: str, text: str) -> None:
    old = state_at(step_)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply(help_key), ASKS[step_])


@pytest.mark.parametrize(("step_", "help_key"), HELP_KEYS)
def test_a_bare_question_mark_asks_for_help(step_: Step, help_key: str) -> None:
    transition = step(state_at(step_), turn("?"), 200.0, SETTINGS)
    assert transition.replies == (Reply(help_key), ASKS[step_])


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize(
    ("text", "locale"), [("english", "en"), ("кыргызча", "ky"), ("русский", "ru")]
)
def test_language_switch_reasks_in_the_new_language(step_: Step, text: str, locale: str) -> None:
    old = state_at(step_, locale="en" if locale == "ru" else "ru")
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == replace(old, locale=locale, updated_at=200.0)
    assert transition.replies == (Reply("locale_switched"), ASKS[step_])


def test_bot_command_while_the_bot_answers_just_reasks() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn("/bot"), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply("ask_phone"),)


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("здравствуйте", "greeting_again"),
        ("Салам", "greeting_again"),
        ("сколько стоит?", "answer_price"),
        ("когда привезете?", "answer_delivery"),
    ],
)
def test_small_talk_mid_dialog_is_answered_and_the_question_asked_again(
    step_: Step, text: str, reply: str
) -> None:
    old = state_at(step_)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply(reply), ASKS[step_])


@pytest.mark.parametrize(
    ("text", "reply"),
    [("спасибо", "you_are_welcome_short"), ("адрес скину позже", "ok_later")],
)
def test_thanks_and_later_are_acknowledged(text: str, reply: str) -> None:
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == replace(old, updated_at=200.0)
    assert transition.replies == (Reply(reply), ASKS[Step.WAITING_ADDRESS])


# -- editing from the summary -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "field", "answer", "changed"),
    [
        (("нет", "адрес"), Field.ADDRESS, "Бишкек, Чуй 100", {"address": "Бишкек, Чуй 100"}),
        (("нет", "телефон"), Field.PHONE, "0700 123 456", {"phone": "+996700123456"}),
        (("no", "quantity"), Field.QUANTITY, "seven", {"quantity": "7"}),
        (("неправильный адрес",), Field.ADDRESS, "Чуй 100", {"address": "Чуй 100"}),
        (("изменить количество",), Field.QUANTITY, "7", {"quantity": "7"}),
        (("телефон неправильный",), Field.PHONE, "0700 123 456", {"phone": "+996700123456"}),
        (("даректи өзгөртүү",), Field.ADDRESS, "Чуй 100", {"address": "Чуй 100"}),
    ],
)
def test_naming_a_field_asks_for_it_then_returns_to_the_summary(
    texts: tuple[str, ...], field: Field, answer: str, changed: dict[str, str]
) -> None:
    state = state_at(Step.WAITING_CONFIRMATION)
    for number, text in enumerate(texts):
        editing = step(state, turn(text, f"m{number + 1}"), 200.0 + number, SETTINGS)
        state = editing.state
    assert editing.state == replace(
        state_at(Step.WAITING_CONFIRMATION),
        step=FIELD_STEP[field],
        editing=True,
        locale=editing.state.locale,  # "no, quantity" is English enough
        updated_at=editing.state.updated_at,
    )
    assert "value_updated" not in keys(editing)
    assert editing.replies[-1] == ASKS[FIELD_STEP[field]]
    done = step(editing.state, turn(answer, "m9"), 210.0, SETTINGS)
    assert done.state.step is Step.WAITING_CONFIRMATION and not done.state.editing
    assert done.replies[-1] == summary(**changed)
    assert done.order is None


def test_cancel_while_editing() -> None:
    editing = state_at(Step.WAITING_PHONE, phone=PHONE, quantity=3, editing=True)
    transition = step(editing, turn("отмена"), 200.0, SETTINGS)
    assert transition.state.step is Step.IDLE and not transition.state.editing
    assert transition.replies == (Reply("order_cancelled"),)


def test_answer_while_editing_returns_to_the_summary() -> None:
    editing = state_at(Step.WAITING_PHONE, phone=PHONE, quantity=3, editing=True)
    transition = step(editing, turn("0700 123 456"), 200.0, SETTINGS)
    assert transition.state.step is Step.WAITING_CONFIRMATION and not transition.state.editing
    assert transition.replies[-1] == summary(phone="+996700123456")


def test_edit_words_outside_the_summary_are_answers() -> None:
    transition = step(state_at(Step.WAITING_QUANTITY), turn("количество"), 200.0, SETTINGS)
    assert keys(transition) == ("quantity_not_a_number", "ask_quantity")


# -- handing off to a human -------------------------------------------------------------------


@pytest.mark.parametrize("step_", [*WAITING, Step.IDLE])
@pytest.mark.parametrize(
    ("text", "locale"),
    [
        ("оператор", "ru"),
        ("operator", "ru"),
        ("менеджер", "ru"),
        ("manager", "ru"),
        ("человек", "ru"),
        ("адам", "ru"),
        ("/operator", "ru"),
        ("позовите оператора, пожалуйста", "ru"),
        ("можно живого человека?", "ru"),
        ("I want to talk to a human", "en"),  # clearly English
        ("адам менен сүйлөшөйүн", "ky"),  # clearly Kyrgyz
    ],
)
def test_asking_for_a_human_hands_off(step_: Step, text: str, locale: str) -> None:
    transition = step(state_at(step_), turn(text), 200.0, SETTINGS)
    assert transition.state == DialogState(Step.HANDOFF, "", locale, 200.0, 200.0, locale_sure=True)
    assert transition.replies == (Reply("handoff_started"),)
    assert transition.handoff_started
    assert transition.order is None


@pytest.mark.parametrize("text", ["5 человек", "нас 5 человек"])
def test_a_count_of_people_is_not_a_handoff(text: str) -> None:
    transition = step(state_at(Step.WAITING_QUANTITY), turn(text), 200.0, SETTINGS)
    assert transition.state.step is Step.WAITING_QUANTITY
    assert not transition.handoff_started


def test_a_handoff_keeps_the_last_order() -> None:
    transition = step(idle_after_order(), turn("оператор"), 200.0, SETTINGS)
    assert transition.state == idle_after_order(
        step=Step.HANDOFF, started_at=200.0, updated_at=200.0
    )


@pytest.mark.parametrize("text", ["да", "3", "/start", "/cancel", "?", None, "оператор", "отмена"])
def test_bot_is_silent_during_handoff(text: str | None) -> None:
    handoff = DialogState(Step.HANDOFF, "", "en", 100.0, 100.0)
    transition = step(handoff, turn(text), 5000.0, SETTINGS)
    assert transition.state == handoff  # unchanged: the hand-off ends one TTL after it began
    assert transition.replies == ()
    assert transition.order is None and transition.cancel is None
    assert not transition.handoff_started


@pytest.mark.parametrize("text", ["/bot", "бот", "Бот", "bot", "бот пожалуйста"])
def test_the_bot_word_ends_the_handoff(text: str) -> None:
    handoff = DialogState(Step.HANDOFF, "", "en", 100.0, 100.0)
    transition = step(handoff, turn(text, "m3"), 200.0, SETTINGS)
    assert transition.state == DialogState(Step.WAITING_ADDRESS, "client-1:m3", "en", 200.0, 200.0)
    assert keys(transition) == ("bot_resumed", "ask_address")


def test_handoff_ends_after_handoff_seconds() -> None:
    settings = DialogSettings(handoff_seconds=600)
    handoff = DialogState(Step.HANDOFF, "", "ru", 100.0, 100.0)
    assert step(handoff, turn("алло"), 700.0, settings).replies == ()
    transition = step(handoff, turn("алло", "m2"), 700.5, settings)
    assert transition.state.step is Step.WAITING_ADDRESS
    assert keys(transition)[0] == "dialog_expired"


# -- choosing the language --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hint", "previous", "default", "locale"),
    [
        ("Hello", "ky", None, "ru", "en"),  # the customer's words win over Chat2Desk's hint
        ("12", "ky", None, "ru", "ky"),  # the hint, when the words tell nothing
        ("12", "ky-KG", None, "ru", "ky"),
        ("Hello", "de", None, "ru", "en"),  # an unsupported hint is ignored
        ("12", None, "ky", "ru", "ky"),  # the customer's last language
        ("Hello", None, "ky", "ru", "en"),  # ... until the words tell another (not told yet)
        ("Hello", None, None, "ru", "en"),
        ("Привет", None, None, "en", "ru"),
        ("privet", None, None, "en", "ru"),  # Russian typed in Latin letters
        ("Салам, суу керек, үйгө", None, None, "ru", "ky"),
        ("суу керек", None, None, "ru", "ky"),  # Kyrgyz without its special letters
        ("salamatsyzby", None, None, "ru", "ky"),
        ("/start", None, None, "ky", "ky"),  # a command says nothing about the language
        ("12", None, None, "en", "en"),
        ("12", None, None, "fr", "ru"),  # an unsupported default falls back to Russian
        ("english", "ru", "ky", "ru", "en"),  # asked for explicitly
    ],
)
def test_locale_of_a_new_dialog(
    text: str, hint: str | None, previous: str | None, default: str, locale: str
) -> None:
    state = None if previous is None else DialogState(Step.IDLE, "", previous, 0.0, 0.0)
    settings = DialogSettings(default_locale=default)
    transition = step(state, turn(text, locale_hint=hint), 1.0, settings)
    assert transition.state.locale == locale


@pytest.mark.parametrize(
    "previous",
    [
        pytest.param(
            None,
        ),
        DialogState(Step.IDLE, "", "ru", 0.0, 0.0),
    ],
)
def test_the_first_words_that_tell_the_language_make_it_sure(
    previous: DialogState | None,
) -> None:
    chat = Chat(state=previous)
    chat.say("Здравствуйте")
    assert chat.state is not None and chat.state.locale_sure
    chat.say("Hello")
    assert chat.state.locale == "ru"


def test_a_told_locale_sticks() -> None:
    told = DialogState(Step.IDLE, "", "ky", 0.0, 0.0, locale_sure=True)
    assert step(told, turn("Hello"), 1.0, SETTINGS).state.locale == "ky"
    in_dialog = state_at(Step.WAITING_PHONE, locale="ky")
    transition = step(in_dialog, turn("0555 123 456, thanks"), 200.0, SETTINGS)
    assert transition.state.locale == "ky" and transition.state.locale_sure


def test_until_told_the_next_message_that_tells_switches() -> None:
    unsure = state_at(Step.WAITING_ADDRESS, locale_sure=False)
    transition = step(unsure, turn("hello"), 200.0, SETTINGS)
    assert transition.state.locale == "en" and transition.state.locale_sure
    quiet = step(unsure, turn("Чуй 100"), 200.0, SETTINGS)  # no words of any language
    assert quiet.state.locale == "ru" and not quiet.state.locale_sure


def test_locale_is_kept_during_the_dialog() -> None:
    chat = Chat()
    chat.say("Hello")
    assert chat.state is not None and chat.state.locale == "en"
    chat.say("Бишкек, ул. Токтогула 10", locale_hint="ru")
    assert chat.state.locale == "en"


# -- after the order --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["отмена", "/cancel", "отмените заказ", "передумал", "cancel", "жокко чыгаруу"]
)
@pytest.mark.parametrize("after", [1.0, SETTINGS.cancel_window_seconds])
def test_cancel_right_after_the_order_cancels_it(text: str, after: float) -> None:
    placed = idle_after_order()
    transition = step(placed, turn(text, "m5"), 100.0 + after, SETTINGS)
    assert transition.cancel == OrderCancel(idempotency_key="client-1:m0", client_id="client-1")
    assert transition.replies == (Reply("placed_order_cancelled"),)
    assert transition.refused_replies == (Reply("order_cancel_too_late"),)
    assert transition.state.step is Step.IDLE
    assert transition.order is None


def test_cancel_after_the_window_is_too_late() -> None:
    placed = idle_after_order()
    now = 100.0 + SETTINGS.cancel_window_seconds + 1
    transition = step(placed, turn("отмена"), now, SETTINGS)
    assert transition.cancel is None
    assert transition.replies == (Reply("order_cancel_too_late"),)
    assert transition.state == idle_after_order(started_at=now, updated_at=now)


def test_the_cancel_window_comes_from_the_settings() -> None:
    short = DialogSettings(cancel_window_seconds=60)
    placed = idle_after_order()
    assert step(placed, turn("отмена"), 160.0, short).cancel is not None
    assert step(placed, turn("отмена"), 161.0, short).cancel is None


def test_cancel_in_a_new_dialog_with_values_cancels_that_dialog_not_the_order() -> None:
    chat = at_confirmation()
    chat.say("да")
    chat.say("ещё 2 бутылки")  # a new dialog, holding a value
    transition = chat.say("отмена")
    assert transition.cancel is None
    assert transition.replies == (Reply("order_cancelled"),)


def test_cancel_in_a_new_empty_dialog_cancels_the_order_just_placed() -> None:
    chat = at_confirmation()
    placed = chat.say("да")
    assert placed.order is not None
    chat.say("алло")  # a new dialog, nothing in it yet
    transition = chat.say("отмена")
    assert transition.cancel == OrderCancel(placed.order.idempotency_key, "client-1")


@pytest.mark.parametrize("text", ["спасибо", "рахмат", "thanks", "👍", "спасибо!"])
def test_thanks_after_the_order_is_answered_without_a_new_dialog(text: str) -> None:
    placed = idle_after_order()
    transition = step(placed, turn(text), 200.0, SETTINGS)
    assert transition.replies == (Reply("you_are_welcome"),)
    assert transition.state.step is Step.IDLE
    assert transition.state.last_order_key == "client-1:m0"
    assert transition.state.last_order_at == 100.0


def test_a_new_dialog_remembers_the_last_order() -> None:
    transition = step(idle_after_order(), turn("хочу ещё воды", "m7"), 200.0, SETTINGS)
    assert transition.state == DialogState(
        Step.WAITING_ADDRESS,
        "client-1:m7",
        "ru",
        200.0,
        200.0,
        locale_sure=True,
        last_order_key="client-1:m0",
        last_order_at=100.0,
    )


# -- handle(): timers and operators -----------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "text", "timer"),
    [
        (None, "привет", TimerKind.REMINDER),
        (state_at(Step.WAITING_PHONE), "0555 123 456", TimerKind.REMINDER),
        (state_at(Step.WAITING_CONFIRMATION), "нет", TimerKind.REMINDER),
        (state_at(Step.WAITING_CONFIRMATION), "да", None),  # ordered: nothing to remind of
        (state_at(Step.WAITING_PHONE), "отмена", None),
        (state_at(Step.WAITING_PHONE), "оператор", None),
        (idle_after_order(), "спасибо", None),
    ],
)
def test_handle_asks_for_a_reminder_while_a_question_waits(
    state: DialogState | None, text: str, timer: TimerKind | None
) -> None:
    transition = handle(state, turn(text), 200.0, SETTINGS)
    assert transition is not None
    assert transition.timer is timer
    assert replace(transition, timer=None) == step(state, turn(text), 200.0, SETTINGS)


def test_handle_reminds_once_then_closes() -> None:
    waiting = state_at(Step.WAITING_PHONE)
    reminded = handle(
        waiting, TimerFired("t1", "client-1", TimerKind.REMINDER, 500.0), 500.0, SETTINGS
    )
    assert reminded is not None
    assert reminded.state == waiting  # the dialog's age still counts from the customer
    assert reminded.replies == (Reply("reminder"), Reply("ask_phone"))
    assert reminded.timer is TimerKind.EXPIRE
    closed = handle(waiting, TimerFired("t2", "client-1", TimerKind.EXPIRE, 900.0), 900.0, SETTINGS)
    assert closed is not None
    assert closed.state == DialogState(Step.IDLE, "", "ru", 900.0, 900.0, locale_sure=True)
    assert closed.replies == (Reply("dialog_closed"),)
    assert closed.timer is None


@pytest.mark.parametrize(
    "state", [None, idle_after_order(), DialogState(Step.HANDOFF, "", "ru", 1, 1)]
)
@pytest.mark.parametrize("kind", list(TimerKind))
def test_a_timer_without_a_dialog_does_nothing(state: DialogState | None, kind: TimerKind) -> None:
    assert handle(state, TimerFired("t1", "client-1", kind, 500.0), 500.0, SETTINGS) is None


def test_an_operator_takes_over_silently() -> None:
    waiting = state_at(Step.WAITING_QUANTITY, last_order_key="client-1:x", last_order_at=50.0)
    first = handle(
        waiting, OperatorMessage("o1", "client-1", "Здравствуйте!", 300.0), 300.0, SETTINGS
    )
    assert first is not None
    assert first.state.step is Step.HANDOFF and first.replies == ()
    assert first.handoff_started
    assert (first.state.started_at, first.state.updated_at) == (300.0, 300.0)
    assert first.state.last_order_key == "client-1:x" and first.state.last_order_at == 50.0
    second = handle(first.state, OperatorMessage("o2", "client-1", "ещё", 400.0), 400.0, SETTINGS)
    assert second is not None
    assert not second.handoff_started  # already taken over
    assert (second.state.started_at, second.state.updated_at) == (300.0, 400.0)
    back = handle(second.state, OperatorMessage("o3", "client-1", "/bot", 500.0), 500.0, SETTINGS)
    assert back is not None
    assert back.state.step is Step.IDLE and back.replies == ()
    assert not back.handoff_started


def test_an_operator_taking_over_keeps_the_told_language() -> None:
    waiting = state_at(Step.WAITING_QUANTITY)
    taken = handle(
        waiting, OperatorMessage("o1", "client-1", "Здравствуйте!", 300.0), 300.0, SETTINGS
    )
    assert taken is not None and taken.state.locale_sure


# -- whole conversations ----------------------------------------------------------------------


def test_redelivered_turn_reproduces_the_order() -> None:
    chat = at_confirmation()
    confirming = chat.turn("да")
    first = step(chat.state, confirming, chat.now, SETTINGS)
    again = step(chat.state, confirming, chat.now, SETTINGS)
    assert first == again
    assert first.order is not None and first.order.idempotency_key == "client-1:m1"


def test_a_second_order_gets_a_new_key() -> None:
    chat = at_confirmation()
    first = chat.say("да")
    at_confirmation(chat)
    second = chat.say("да")
    assert first.order is not None and second.order is not None
    assert first.order.idempotency_key != second.order.idempotency_key
