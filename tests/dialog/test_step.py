"""Every state and every rule of ``step``, one turn at a time."""

from __future__ import annotations

import dataclasses

import pytest

from botd.dialog import DialogSettings, DialogState, OrderDraft, Reply, Step, Turn, step

from .support import SETTINGS, Chat, at_confirmation, keys, params

ADDRESS = "Бишкек, ул. Токтогула 10, кв. 5"
QUANTITY_PARAMS = (("min", "1"), ("max", "50"))


def state_at(step_: Step) -> DialogState:
    """A consistent state at ``step_`` with the answers the earlier questions collected."""
    phone = "+996555123456"
    return DialogState(
        step=step_,
        dialog_id="client-1:m0",
        locale="ru",
        started_at=100.0,
        updated_at=100.0,
        address=ADDRESS if step_ in _AFTER_ADDRESS else None,
        phone=phone if step_ in (Step.WAITING_QUANTITY, Step.WAITING_CONFIRMATION) else None,
        quantity=3 if step_ is Step.WAITING_CONFIRMATION else None,
    )


_AFTER_ADDRESS = (Step.WAITING_PHONE, Step.WAITING_QUANTITY, Step.WAITING_CONFIRMATION)
replace = dataclasses.replace


def turn(text: str | None = "hello", message_id: str = "m1", **extra: object) -> Turn:
    return Turn(message_id, "client-1", text, 0.0, **extra)  # type: ignore[arg-type]


ASKS = {
    Step.WAITING_ADDRESS: Reply("ask_address"),
    Step.WAITING_PHONE: Reply("ask_phone"),
    Step.WAITING_QUANTITY: Reply("ask_quantity", QUANTITY_PARAMS),
    Step.WAITING_CONFIRMATION: Reply(
        "ask_confirmation", (("address", ADDRESS), ("phone", "+996555123456"), ("quantity", "3"))
    ),
}
WAITING = tuple(ASKS)

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
    assert transition.state == DialogState(
        step=Step.WAITING_ADDRESS,
        dialog_id="client-1:m7",
        locale="ru",
        started_at=150.0,
        updated_at=150.0,
    )
    assert transition.replies == (Reply("greeting"), Reply("ask_address"))
    assert transition.order is None


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
    assert transition.state == DialogState(Step.WAITING_ADDRESS, "client-1:m9", "ru", now, now)
    assert keys(transition) == ("dialog_expired", "ask_address")


@pytest.mark.parametrize("step_", WAITING)
def test_state_exactly_at_ttl_is_still_alive(step_: Step) -> None:
    old = state_at(step_)
    now = old.updated_at + SETTINGS.state_ttl_seconds
    transition = step(old, turn(None, media=("photo",)), now, SETTINGS)
    assert transition.state == dataclasses.replace(old, updated_at=now)


@pytest.mark.parametrize(
    "broken",
    [
        replace(state_at(Step.WAITING_CONFIRMATION), quantity=None),
        replace(state_at(Step.WAITING_PHONE), address=None),
        replace(state_at(Step.WAITING_QUANTITY), phone=None),
        replace(state_at(Step.WAITING_ADDRESS), dialog_id=""),
        replace(state_at(Step.WAITING_ADDRESS), editing=True),
    ],
)
def test_inconsistent_state_starts_a_fresh_dialog(broken: DialogState) -> None:
    transition = step(broken, turn("да"), 200.0, SETTINGS)
    assert transition.state.step is Step.WAITING_ADDRESS
    assert transition.order is None
    assert keys(transition) == ("greeting", "ask_address")


# -- the questions ----------------------------------------------------------------------------


def test_valid_address_asks_for_the_phone() -> None:
    transition = step(state_at(Step.WAITING_ADDRESS), turn(f"  {ADDRESS} "), 200.0, SETTINGS)
    assert transition.state == replace(state_at(Step.WAITING_PHONE), updated_at=200.0)
    assert transition.replies == (Reply("ask_phone"),)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ул", Reply("address_too_short", (("min_chars", "5"),))),
        ("x" * 201, Reply("address_too_long", (("max_chars", "200"),))),
    ],
)
def test_invalid_address_reasks_with_the_reason(text: str, reason: Reply) -> None:
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert transition.replies == (reason, Reply("ask_address"))


def test_location_is_an_address() -> None:
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn(None, location=(42.8746, 74.5698)), 200.0, SETTINGS)
    assert transition.state.step is Step.WAITING_PHONE
    assert transition.state.address == "📍 42.87460, 74.56980"


def test_impossible_location_asks_for_text() -> None:
    old = state_at(Step.WAITING_ADDRESS)
    transition = step(old, turn(None, location=(123.0, 74.0)), 200.0, SETTINGS)
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert keys(transition) == ("text_expected", "ask_address")


def test_valid_phone_asks_for_the_quantity() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn("(0555) 12-34-56"), 200.0, SETTINGS)
    assert transition.state == replace(state_at(Step.WAITING_QUANTITY), updated_at=200.0)
    assert transition.replies == (Reply("ask_quantity", QUANTITY_PARAMS),)


def test_shared_contact_is_the_phone() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn(None, contact_phone="+996 555 123 456"), 200.0, SETTINGS)
    assert transition.state.step is Step.WAITING_QUANTITY
    assert transition.state.phone == "+996555123456"


def test_invalid_shared_contact_reasks() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn(None, contact_phone="12"), 200.0, SETTINGS)
    assert transition.replies == (Reply("phone_invalid"), Reply("ask_phone"))


def test_invalid_phone_reasks() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn("12345"), 200.0, SETTINGS)
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert transition.replies == (Reply("phone_invalid"), Reply("ask_phone"))


def test_phone_from_a_region_not_allowed() -> None:
    only_kg = DialogSettings(allowed_regions=("KG",))
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn("+7 701 123 45 67"), 200.0, only_kg)
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert transition.replies == (
        Reply("phone_region_not_allowed", (("countries", "+996 (KG)"),)),
        Reply("ask_phone"),
    )


def test_kazakh_phone_accepted_when_any_region_is() -> None:
    transition = step(state_at(Step.WAITING_PHONE), turn("+7 701 123 45 67"), 200.0, SETTINGS)
    assert transition.state.phone == "+77011234567"


def test_valid_quantity_shows_the_summary() -> None:
    old = state_at(Step.WAITING_QUANTITY)
    transition = step(old, turn("3 бутылки"), 200.0, SETTINGS)
    assert transition.state == replace(state_at(Step.WAITING_CONFIRMATION), updated_at=200.0)
    assert transition.replies == (ASKS[Step.WAITING_CONFIRMATION],)
    assert params(transition.replies[0]) == {
        "address": ADDRESS,
        "phone": "+996555123456",
        "quantity": "3",
    }


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("0", "quantity_out_of_range"),
        ("51", "quantity_out_of_range"),
        ("-1", "quantity_out_of_range"),
        ("2.5", "quantity_not_whole"),
        ("abc", "quantity_not_a_number"),
    ],
)
def test_invalid_quantity_reasks(text: str, key: str) -> None:
    old = state_at(Step.WAITING_QUANTITY)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert keys(transition) == (key, "ask_quantity")


# -- confirmation -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["да", "Ооба.", "yes", "ok", "👍", "Да, всё верно"])
def test_yes_creates_the_order(text: str) -> None:
    old = state_at(Step.WAITING_CONFIRMATION)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.order == OrderDraft(
        idempotency_key="client-1:m0",
        client_id="client-1",
        phone="+996555123456",
        address=ADDRESS,
        quantity=3,
    )
    assert transition.state == DialogState(Step.IDLE, "", "ru", 200.0, 200.0)
    assert transition.replies == (Reply("order_created"),)


@pytest.mark.parametrize("text", ["нет", "жок", "No.", "👎"])
def test_no_cancels(text: str) -> None:
    transition = step(state_at(Step.WAITING_CONFIRMATION), turn(text), 200.0, SETTINGS)
    assert transition.order is None
    assert transition.state == DialogState(Step.IDLE, "", "ru", 200.0, 200.0)
    assert transition.replies == (Reply("order_cancelled"),)


@pytest.mark.parametrize("text", ["not ok", "не да", "nothing", "yesterday", "может быть"])
def test_unclear_answer_reasks_with_the_summary(text: str) -> None:
    old = state_at(Step.WAITING_CONFIRMATION)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.order is None
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert transition.replies == (Reply("confirm_unclear"), ASKS[Step.WAITING_CONFIRMATION])


# -- media, empty text ------------------------------------------------------------------------


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize(
    "extra",
    [
        {"text": None, "media": ("photo",)},
        {"text": None, "media": ("audio", "pdf")},
        {"text": "   "},
        {"text": ""},
        {"text": None},
    ],
)
def test_media_or_empty_text_never_advances(step_: Step, extra: dict[str, object]) -> None:
    old = state_at(step_)
    transition = step(old, Turn("m1", "client-1", at=0.0, **extra), 200.0, SETTINGS)  # type: ignore[arg-type]
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert transition.replies == (Reply("text_expected"), ASKS[step_])
    assert transition.order is None


def test_caption_with_media_is_read_as_text() -> None:
    transition = step(
        state_at(Step.WAITING_ADDRESS), turn(ADDRESS, media=("photo",)), 200.0, SETTINGS
    )
    assert transition.state.step is Step.WAITING_PHONE


@pytest.mark.parametrize("step_", [Step.WAITING_PHONE, Step.WAITING_QUANTITY])
def test_location_elsewhere_is_not_an_answer(step_: Step) -> None:
    old = state_at(step_)
    transition = step(old, turn(None, location=(42.0, 74.0)), 200.0, SETTINGS)
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert keys(transition) == ("text_expected", ASKS[step_].key)


# -- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize("text", ["/cancel", "отмена", "cancel", "жокко чыгаруу", "токтот"])
def test_cancel_at_any_step(step_: Step, text: str) -> None:
    transition = step(state_at(step_), turn(text), 200.0, SETTINGS)
    assert transition.state == DialogState(Step.IDLE, "", "ru", 200.0, 200.0)
    assert transition.replies == (Reply("order_cancelled"),)
    assert transition.order is None


@pytest.mark.parametrize("state", [None, replace(state_at(Step.IDLE), dialog_id="")])
def test_cancel_with_no_dialog(state: DialogState | None) -> None:
    transition = step(state, turn("/cancel"), 200.0, SETTINGS)
    assert transition.state.step is Step.IDLE
    assert transition.replies == (Reply("nothing_to_cancel"),)


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize(
    "text", ["/start", "начать заново", "restart", "start over", "кайра баштоо"]
)
def test_restart_at_any_step(step_: Step, text: str) -> None:
    transition = step(state_at(step_), turn(text, "m5"), 200.0, SETTINGS)
    assert transition.state == DialogState(Step.WAITING_ADDRESS, "client-1:m5", "ru", 200.0, 200.0)
    assert keys(transition) == ("restarted", "ask_address")


@pytest.mark.parametrize(
    ("step_", "help_key"),
    [
        (Step.WAITING_ADDRESS, "help_address"),
        (Step.WAITING_PHONE, "help_phone"),
        (Step.WAITING_QUANTITY, "help_quantity"),
        (Step.WAITING_CONFIRMATION, "help_confirmation"),
    ],
)
@pytest.mark.parametrize("text", ["/help", "?", "помощь", "help", "жардам"])
def test_help_explains_and_reasks(step_: Step, help_key: str, text: str) -> None:
    old = state_at(step_)
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert transition.replies == (Reply(help_key), ASKS[step_])


@pytest.mark.parametrize("step_", WAITING)
@pytest.mark.parametrize(
    ("text", "locale"), [("english", "en"), ("кыргызча", "ky"), ("русский", "ru")]
)
def test_language_switch_reasks_in_the_new_language(step_: Step, text: str, locale: str) -> None:
    old = replace(state_at(step_), locale="en" if locale == "ru" else "ru")
    transition = step(old, turn(text), 200.0, SETTINGS)
    assert transition.state == dataclasses.replace(old, locale=locale, updated_at=200.0)
    assert transition.replies == (Reply("locale_switched"), ASKS[step_])


def test_bot_command_while_the_bot_answers_just_reasks() -> None:
    old = state_at(Step.WAITING_PHONE)
    transition = step(old, turn("/bot"), 200.0, SETTINGS)
    assert transition.state == dataclasses.replace(old, updated_at=200.0)
    assert transition.replies == (Reply("ask_phone"),)


# -- editing from the summary -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "step_", "answer", "changed"),
    [
        ("адрес", Step.WAITING_ADDRESS, "Бишкек, Чуй 100", ("address", "Бишкек, Чуй 100")),
        ("дарек", Step.WAITING_ADDRESS, "Бишкек, Чуй 100", ("address", "Бишкек, Чуй 100")),
        ("address", Step.WAITING_ADDRESS, "Bishkek, Chui 100", ("address", "Bishkek, Chui 100")),
        ("телефон", Step.WAITING_PHONE, "0700 123 456", ("phone", "+996700123456")),
        ("phone", Step.WAITING_PHONE, "0700 123 456", ("phone", "+996700123456")),
        ("количество", Step.WAITING_QUANTITY, "7", ("quantity", "7")),
        ("quantity", Step.WAITING_QUANTITY, "seven", ("quantity", "7")),
        ("саны", Step.WAITING_QUANTITY, "жети", ("quantity", "7")),
    ],
)
def test_edit_asks_one_question_then_returns_to_the_summary(
    text: str, step_: Step, answer: str, changed: tuple[str, str]
) -> None:
    old = state_at(Step.WAITING_CONFIRMATION)
    editing = step(old, turn(text), 200.0, SETTINGS)
    assert editing.state == dataclasses.replace(old, step=step_, editing=True, updated_at=200.0)
    assert editing.replies == (ASKS[step_],)
    assert editing.order is None

    invalid = step(editing.state, turn("?!"), 201.0, SETTINGS)
    assert invalid.state.step is step_ and invalid.state.editing

    done = step(editing.state, turn(answer), 202.0, SETTINGS)
    assert done.state.step is Step.WAITING_CONFIRMATION and not done.state.editing
    assert done.state.updated_at == 202.0
    assert len(done.replies) == 1 and done.replies[0].key == "ask_confirmation"
    name, value = changed
    shown = params(done.replies[0])
    assert shown[name] == value
    assert shown == params(ASKS[Step.WAITING_CONFIRMATION]) | {name: value}
    assert done.order is None


def test_cancel_while_editing() -> None:
    editing = replace(
        state_at(Step.WAITING_PHONE), address=ADDRESS, phone="+996555123456", quantity=3
    )
    editing = dataclasses.replace(editing, editing=True)
    transition = step(editing, turn("отмена"), 200.0, SETTINGS)
    assert transition.state.step is Step.IDLE and not transition.state.editing


def test_edit_words_outside_the_summary_are_answers() -> None:
    transition = step(state_at(Step.WAITING_QUANTITY), turn("количество"), 200.0, SETTINGS)
    assert keys(transition) == ("quantity_not_a_number", "ask_quantity")


# -- handing off to a human -------------------------------------------------------------------


@pytest.mark.parametrize("step_", [*WAITING, Step.IDLE])
@pytest.mark.parametrize("text", ["оператор", "operator", "менеджер", "manager", "человек", "адам"])
def test_asking_for_a_human_hands_off(step_: Step, text: str) -> None:
    transition = step(state_at(step_), turn(text), 200.0, SETTINGS)
    assert transition.state == DialogState(Step.HANDOFF, "", "ru", 200.0, 200.0)
    assert transition.replies == (Reply("handoff_started"),)


@pytest.mark.parametrize("text", ["да", "3", "/start", "/cancel", "?", None, "оператор"])
def test_bot_is_silent_during_handoff(text: str | None) -> None:
    handoff = DialogState(Step.HANDOFF, "", "en", 100.0, 100.0)
    transition = step(handoff, turn(text), 5000.0, SETTINGS)
    assert transition.state == handoff  # unchanged: the hand-off ends one TTL after it began
    assert transition.replies == ()
    assert transition.order is None


def test_bot_command_ends_the_handoff() -> None:
    handoff = DialogState(Step.HANDOFF, "", "en", 100.0, 100.0)
    transition = step(handoff, turn("/bot", "m3"), 200.0, SETTINGS)
    assert transition.state == DialogState(Step.WAITING_ADDRESS, "client-1:m3", "en", 200.0, 200.0)
    assert keys(transition) == ("bot_resumed", "ask_address")


# -- choosing the language --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hint", "previous", "default", "locale"),
    [
        ("Hello", "ky", None, "ru", "ky"),  # Chat2Desk's hint wins over the script
        ("Hello", "ky-KG", None, "ru", "ky"),
        ("Hello", "de", None, "ru", "en"),  # an unsupported hint is ignored
        ("Hello", None, "ky", "ru", "ky"),  # the customer's last language
        ("Hello", None, None, "ru", "en"),
        ("Привет", None, None, "en", "ru"),
        ("Салам, суу керек, үйгө", None, None, "ru", "ky"),
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


def test_locale_is_kept_during_the_dialog() -> None:
    chat = Chat()
    chat.say("Hello")
    assert chat.state is not None and chat.state.locale == "en"
    chat.say("Бишкек, ул. Токтогула 10", locale_hint="ru")
    assert chat.state.locale == "en"


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
