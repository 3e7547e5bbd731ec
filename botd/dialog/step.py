"""The order dialog's decisions: ``handle(state, event, now, settings) -> Transition``.

No I/O, no clock, no randomness: the same arguments always give the same transition, so a
redelivered message reproduces exactly the state, replies and effects of its first delivery.

A customer's message is read whole (:func:`.understand.read`) whatever was asked, the way a
careful operator reads it:

1. no dialog (none yet, finished, expired) → a cancel within the cancel window cancels the order
   just placed; thanks are answered; anything else starts a dialog, keeping every value the
   first message already holds;
2. a human operator has the conversation → silence, until "/bot" (or "бот") or the TTL;
3. anywhere: a language switch, a person, cancel, restart, help;
4. a doubtful value waiting for a yes ("Это адрес доставки: «…»?") is settled;
5. every value in the message is taken: phones, a count, an address (a doubtful one is asked
   back, never recorded), a correction of an earlier one; at the summary a yes places the
   order, a value or "no + value" changes it and shows the summary again, a bare "no" asks what
   to change;
6. a question is answered, a greeting or thanks acknowledged, and the bot asks for what is still
   missing — address, phone, quantity, then the summary.
"""

from __future__ import annotations

import dataclasses
import re

from . import parse
from .address_details import (
    _last_detail_wins,
    _merge_detail,
    _replace_words,
    _swap_number,
)
from .model import (
    DialogSettings,
    DialogState,
    Event,
    Field,
    OperatorMessage,
    OrderCancel,
    OrderDraft,
    OrderStatusChanged,
    Pending,
    Reply,
    Step,
    TimerFired,
    TimerKind,
    Transition,
    Turn,
)
from .phrases import LOCALES, Command, command_locale, match_slash, normalize_locale
from .understand import AddressQuality, Reading, detect_locale, locale_strength, read

__all__ = [
    "WAITING_STEPS",
    "ask",
    "handle",
    "is_consistent",
    "is_expired",
    "operator_step",
    "status_step",
    "step",
    "timer_step",
]

WAITING_STEPS = (
    Step.WAITING_ADDRESS,
    Step.WAITING_PHONE,
    Step.WAITING_QUANTITY,
    Step.WAITING_CONFIRMATION,
)
_FIELD_STEP = {
    Field.ADDRESS: Step.WAITING_ADDRESS,
    Field.PHONE: Step.WAITING_PHONE,
    Field.QUANTITY: Step.WAITING_QUANTITY,
}
_STEP_FIELD = {step: field for field, step in _FIELD_STEP.items()}
_HELP = {
    Step.WAITING_ADDRESS: "help_address",
    Step.WAITING_PHONE: "help_phone",
    Step.WAITING_QUANTITY: "help_quantity",
    Step.WAITING_CONFIRMATION: "help_confirmation",
}


def handle(
    state: DialogState | None, event: Event, now: float, settings: DialogSettings
) -> Transition | None:
    """The dialog's decision for one event: a customer turn, an operator message, a timer.

    Returns None only for a timer or an order status with nothing to do. A transition that
    leaves the customer in the middle of a dialog asks for a reminder timer.
    """
    if isinstance(event, TimerFired):
        return timer_step(state, event.kind, now)
    if isinstance(event, OrderStatusChanged):
        return status_step(state, event, now, settings)
    if isinstance(event, OperatorMessage):
        return operator_step(state, event.text, now, settings)
    transition = step(state, event, now, settings)
    if transition.state.step in WAITING_STEPS:
        return dataclasses.replace(transition, timer=TimerKind.REMINDER)
    return transition


def step(state: DialogState | None, turn: Turn, now: float, settings: DialogSettings) -> Transition:
    """Advance the dialog of one customer by one message."""
    if state is not None and not is_consistent(state):
        state = None
    slash = match_slash(turn.text)
    if state is not None and state.step is Step.HANDOFF:
        if now - state.updated_at > settings.handoff_seconds:
            return _idle_turn(_forget_dialog(state, now), turn, now, settings, "dialog_expired")
        if slash is Command.BOT or _bot_only(turn.text):
            return _new_dialog(turn, state, state.locale, now, "bot_resumed", None, settings)
        return Transition(state, ())
    if state is None or state.step is Step.IDLE:
        return _idle_turn(state, turn, now, settings, "greeting")
    if is_expired(state, now, settings):
        return _idle_turn(_forget_dialog(state, now), turn, now, settings, "dialog_expired")
    return _in_dialog(state, turn, now, settings, slash)


def operator_step(
    state: DialogState | None, text: str | None, now: float, settings: DialogSettings
) -> Transition:
    """A human operator wrote to the customer in Chat2Desk: the bot steps aside, silently.

    The dialog goes to HANDOFF (no replies) for ``settings.handoff_seconds`` after the operator's
    last message; the operator's ``/bot`` gives the customer back (IDLE: the customer's next
    message starts a new dialog). The bot never answers an operator.
    """
    locale = state.locale if state is not None else settings.default_locale
    if match_slash(text) is Command.BOT:
        return Transition(_idle(locale, now, state), ())
    already = state is not None and state.step is Step.HANDOFF
    started = state.started_at if state is not None and already else now
    handoff = DialogState(
        step=Step.HANDOFF,
        dialog_id="",
        locale=locale,
        started_at=started,
        updated_at=now,
        last_order_key=state.last_order_key if state is not None else None,
        last_order_at=state.last_order_at if state is not None else None,
        locale_sure=state.locale_sure if state is not None else False,
    )
    return Transition(handoff, (), handoff_started=not already)


def timer_step(state: DialogState | None, kind: str, now: float) -> Transition | None:
    """A durable timer fired for a customer who went silent mid-dialog.

    The caller has already checked that nothing happened since the timer was set (same state
    version). ``kind`` "reminder": one nudge and the current question again, state unchanged
    (the dialog's age still counts from the customer's last message), then the closing timer;
    "expire": a polite closing message and the dialog ends (IDLE).
    Returns None when there is nothing to do (no dialog in progress).
    """
    if state is None or state.step not in WAITING_STEPS:
        return None
    if kind == TimerKind.REMINDER:
        return Transition(state, (Reply("reminder"), ask(state)), timer=TimerKind.EXPIRE)
    return Transition(_idle(state.locale, now, state), (Reply("dialog_closed"),))


# The order statuses the customer is told about, and the reply that tells each.
_STATUS_REPLY = {
    "delivering": "order_delivering",
    "cancelled": "order_cancelled_by_shop",
}


def status_step(
    state: DialogState | None, event: OrderStatusChanged, now: float, settings: DialogSettings
) -> Transition | None:
    """The shop moved the customer's order: tell them, without disturbing their dialog.

    Only "delivering" and "cancelled" are worth a message (None for any other status: nothing
    to do). While a human operator has the conversation the bot stays silent (the operator
    speaks for the shop). In the middle of a dialog the state is kept as it is — the dialog's age
    still counts from the customer's last message — and the current question is asked again so
    the customer knows where they were; the commit changes the state's version, which makes the
    pending reminder stale, so a new one is asked for. Without a state the customer gets an IDLE
    one in the language they ordered in, so the reply and their next message agree.
    """
    key = _STATUS_REPLY.get(event.status)
    if key is None:
        return None
    reply = Reply(key, (("order_id", str(event.order_id)),))
    if state is None:
        locale = normalize_locale(event.locale) or settings.default_locale
        return Transition(_idle(locale, now), (reply,))
    if state.step is Step.HANDOFF and now - state.updated_at <= settings.handoff_seconds:
        return Transition(state, ())
    live = is_consistent(state) and not is_expired(state, now, settings)
    if state.step in WAITING_STEPS and live:
        return Transition(state, (reply, ask(state)), timer=TimerKind.REMINDER)
    # IDLE; or a hand-off or dialog that ran out (the customer's next message ends it, as usual)
    return Transition(state, (reply,))


def is_expired(state: DialogState, now: float, settings: DialogSettings) -> bool:
    """True when the state is older than the dialog TTL and must not be continued."""
    return now - state.updated_at > settings.state_ttl_seconds


def ask(state: DialogState) -> Reply:
    """The question the customer should answer at ``state``'s step."""
    if state.pending is not None:
        if state.pending.field is Field.QUANTITY:
            return Reply("confirm_quantity", (("quantity", state.pending.value),))
        return Reply("confirm_address", (("address", state.pending.value),))
    if state.step is Step.WAITING_PHONE:
        return Reply("ask_phone")
    if state.step is Step.WAITING_QUANTITY:
        return Reply("ask_quantity", parse.quantity_params())
    if state.step is Step.WAITING_CONFIRMATION:
        return Reply(
            "ask_confirmation",
            (
                ("address", state.address or ""),
                ("phone", state.phone or ""),
                ("quantity", str(state.quantity)),
            ),
        )
    if state.address_part:
        return Reply("ask_address_detail", (("part", state.address_part),))
    return Reply("ask_address")


def is_consistent(state: DialogState) -> bool:
    """False for a state that cannot be continued (a hand-made or corrupted one)."""
    if state.step in (Step.IDLE, Step.HANDOFF):
        return True
    complete = None not in (state.address, state.phone, state.quantity)
    if not state.dialog_id:
        return False
    if state.editing and (
        state.step not in _STEP_FIELD or _value(state, _STEP_FIELD[state.step]) is None
    ):
        return False  # editing re-asks a value the customer gave before
    if state.pending is not None and state.step is not _FIELD_STEP[state.pending.field]:
        return False
    if state.step is Step.WAITING_CONFIRMATION:
        return complete
    return True


# -- outside a dialog ------------------------------------------------------------------------


def _idle_turn(
    previous: DialogState | None,
    turn: Turn,
    now: float,
    settings: DialogSettings,
    opening: str,
) -> Transition:
    slash = match_slash(turn.text)
    reading = _read(turn, None, settings)
    locale, sure = _first_locale(previous, turn, reading, slash, settings)
    previous = _with_locale(previous, locale, sure)
    if previous is None and sure:
        previous = dataclasses.replace(_idle(locale, now), locale_sure=True)
    recent = previous is not None and previous.last_order_key is not None
    if slash is Command.CANCEL or (reading.cancel and not reading.has_value):
        return _cancel_placed(previous, locale, now, settings)
    if slash is Command.HANDOFF or reading.handoff:
        return _handoff(previous, locale, now)
    quiet = not reading.has_value and not reading.request and not reading.question
    polite = (reading.thanks or reading.yes or reading.empty) and not reading.other_words
    if recent and quiet and polite:
        state = _idle(locale, now, previous)
        return Transition(state, (Reply("you_are_welcome"),))
    if slash is Command.RESTART:
        return _new_dialog(turn, previous, locale, now, "restarted", None, settings)
    return _new_dialog(turn, previous, locale, now, opening, reading, settings)


def _with_locale(state: DialogState | None, locale: str, sure: bool) -> DialogState | None:
    if state is None:
        return None
    return dataclasses.replace(state, locale=locale, locale_sure=sure or state.locale_sure)


def _recent_order(state: DialogState | None, now: float, settings: DialogSettings) -> bool:
    return (
        state is not None
        and state.last_order_key is not None
        and state.last_order_at is not None
        and now - state.last_order_at <= settings.cancel_window_seconds
    )


def _cancel_placed(
    previous: DialogState | None, locale: str, now: float, settings: DialogSettings
) -> Transition:
    """Cancel the order just placed (within the window), idempotently; else say why not."""
    state = _idle(locale, now, previous)
    if previous is None or previous.last_order_key is None:
        return Transition(state, (Reply("nothing_to_cancel"),))
    if not _recent_order(previous, now, settings):
        return Transition(state, (Reply("order_cancel_too_late"),))
    client_id = previous.last_order_key.split(":", 1)[0]
    return Transition(
        state,
        (Reply("placed_order_cancelled"),),
        cancel=OrderCancel(idempotency_key=previous.last_order_key, client_id=client_id),
        refused_replies=(Reply("order_cancel_too_late"),),
    )


def _new_dialog(
    turn: Turn,
    previous: DialogState | None,
    locale: str,
    now: float,
    opening: str,
    reading: Reading | None,
    settings: DialogSettings,
) -> Transition:
    state = dataclasses.replace(
        _idle(locale, now, previous),
        step=Step.WAITING_ADDRESS,
        dialog_id=f"{turn.client_id}:{turn.message_id}",  # the same turn → the same id
    )
    if reading is None:
        return Transition(state, (Reply(opening), ask(state)))
    transition = _converse(state, turn, reading, now, settings, opening=True)
    return dataclasses.replace(transition, replies=(Reply(opening), *transition.replies))


def _idle(locale: str, now: float, previous: DialogState | None = None) -> DialogState:
    return DialogState(
        step=Step.IDLE,
        dialog_id="",
        locale=locale,
        locale_sure=previous.locale_sure if previous is not None else False,
        started_at=now,
        updated_at=now,
        last_order_key=previous.last_order_key if previous is not None else None,
        last_order_at=previous.last_order_at if previous is not None else None,
    )


def _forget_dialog(state: DialogState, now: float) -> DialogState:
    return _idle(state.locale, state.updated_at, state)


def _handoff(previous: DialogState | None, locale: str, now: float) -> Transition:
    state = dataclasses.replace(_idle(locale, now, previous), step=Step.HANDOFF)
    return Transition(state, (Reply("handoff_started"),), handoff_started=True)


# -- in a dialog -----------------------------------------------------------------------------


def _in_dialog(
    state: DialogState, turn: Turn, now: float, settings: DialogSettings, slash: Command | None
) -> Transition:
    if slash is not None:
        return _slash(state, slash, turn, now, settings)
    reading = _read(turn, _expecting(state), settings)
    state = _keep_locale(state, turn, reading)
    if reading.locale_switch is not None and not reading.has_value:
        switched = dataclasses.replace(state, locale=reading.locale_switch, updated_at=now)
        return Transition(switched, (Reply("locale_switched"), ask(switched)))
    if reading.handoff:  # a person asked for is a person given, whatever else was said
        return _handoff(state, state.locale, now)
    if reading.cancel and not reading.has_value:
        if _untouched(state) and _recent_order(state, now, settings):
            return _cancel_placed(state, state.locale, now, settings)
        return Transition(_idle(state.locale, now, state), (Reply("order_cancelled"),))
    if reading.restart and not reading.has_value:
        return _new_dialog(turn, state, state.locale, now, "restarted", None, settings)
    if reading.help and not reading.has_value and reading.question is None:
        touched = dataclasses.replace(state, updated_at=now)
        return Transition(touched, (Reply(_HELP[state.step]), ask(touched)))
    return _converse(state, turn, reading, now, settings)


def _slash(
    state: DialogState, command: Command, turn: Turn, now: float, settings: DialogSettings
) -> Transition:
    if command is Command.CANCEL:
        if _untouched(state) and _recent_order(state, now, settings):
            return _cancel_placed(state, state.locale, now, settings)
        return Transition(_idle(state.locale, now, state), (Reply("order_cancelled"),))
    if command is Command.RESTART:
        return _new_dialog(turn, state, state.locale, now, "restarted", None, settings)
    if command is Command.HANDOFF:
        return _handoff(state, state.locale, now)
    locale = command_locale(command)
    if locale is not None:
        switched = dataclasses.replace(state, locale=locale, updated_at=now)
        return Transition(switched, (Reply("locale_switched"), ask(switched)))
    touched = dataclasses.replace(state, updated_at=now)
    if command is Command.HELP:
        return Transition(touched, (Reply(_HELP[state.step]), ask(touched)))
    return Transition(touched, (ask(touched),))  # "/bot" while the bot is already answering


def _value(state: DialogState, field: Field) -> object:
    if field is Field.ADDRESS:
        return state.address
    if field is Field.PHONE:
        return state.phone
    return state.quantity


def _untouched(state: DialogState) -> bool:
    return state.address is None and state.phone is None and state.quantity is None


def _expecting(state: DialogState) -> Field | None:
    if state.pending is not None:
        return state.pending.field
    if state.step is Step.WAITING_CONFIRMATION:
        return Field.QUANTITY  # "нет, 4": a bare number at the summary is the count
    return _STEP_FIELD.get(state.step)


def _converse(
    state: DialogState,
    turn: Turn,
    reading: Reading,
    now: float,
    settings: DialogSettings,
    *,
    opening: bool = False,
) -> Transition:
    """Take every value the message holds, settle a pending one, then ask what is missing."""
    notes: list[Reply] = []
    at_summary = state.step is Step.WAITING_CONFIRMATION and state.pending is None
    before = state
    state, problems, took = _take_values(state, turn, reading, settings)
    # A doubtful value waiting for a yes.
    if before.pending is not None and state.pending == before.pending:
        if reading.yes and not reading.no and not reading.hedge and not took:
            state = _accept_pending(state)
            took.add(before.pending.field)
        elif reading.no and not took:
            state = dataclasses.replace(state, pending=None)
            if before.pending.field is Field.ADDRESS:
                notes.append(Reply("address_asked_again"))
    # At the summary: yes, no, what to change.
    if at_summary and not took and not problems:
        return _at_summary(state, turn, reading, now, settings)
    just_asked = state.editing and not before.editing  # "адрес неправильный": asked again
    if state.editing and not just_asked and took & {_STEP_FIELD.get(state.step)}:
        state = dataclasses.replace(state, editing=False)
    if took and before.asked_what_to_change:
        state = dataclasses.replace(state, asked_what_to_change=False)
    state = _advance(state)
    state = dataclasses.replace(state, updated_at=now)
    if reading.question is not None:
        notes.append(Reply(f"answer_{reading.question}"))
    settled = before.pending is not None and state.pending is None
    if not took and not problems and reading.question is None and not opening and not settled:
        notes.extend(_small_talk(before, turn, reading))  # the opening greets already
    if (
        took
        and state.step is Step.WAITING_CONFIRMATION
        and before.step is Step.WAITING_CONFIRMATION
    ):
        notes.append(Reply("value_updated"))
    return Transition(state, (*notes, *problems, ask(state)))


def _small_talk(state: DialogState, turn: Turn, reading: Reading) -> list[Reply]:
    """What to say when the message held no value: why it was not taken, or a polite word."""
    if turn.text is None or reading.empty:
        if turn.location is not None or turn.contact_phone:
            return []
        if turn.text is None:
            return [Reply("text_expected")]
    if reading.later:
        return [Reply("ok_later")]
    if reading.greeting and not reading.other_words:
        return [Reply("greeting_again")]
    if reading.thanks and not reading.other_words:
        return [Reply("you_are_welcome_short")]
    if reading.request and not reading.other_words:
        return []
    if state.pending is not None:
        return [Reply("pending_unclear")]
    expecting = _STEP_FIELD.get(state.step)
    if expecting is Field.ADDRESS:
        if reading.address_detail_only:
            return []
        if reading.yes or reading.no:
            return [Reply("address_expected")]
        return [Reply("address_not_understood")]
    if expecting is Field.PHONE:
        return [Reply("phone_invalid" if reading.phone_rejected else "phone_expected")]
    if expecting is Field.QUANTITY:
        return [Reply("quantity_not_a_number")]
    return []


def _take_values(
    state: DialogState, turn: Turn, reading: Reading, settings: DialogSettings
) -> tuple[DialogState, list[Reply], set[Field]]:
    """Every value in the message, applied to the state; the problems found; fields taken."""
    took: set[Field] = set()
    problems: list[Reply] = []
    expecting = _expecting(state)
    state = _take_phone(state, turn, reading, settings, expecting, took, problems)
    state, reading = _take_swap(state, reading, took)
    state, reading = _take_word_fixes(state, reading, took)
    state = _take_quantity(state, reading, expecting, took, problems)
    # Address.
    state, address_took, address_problem = _take_address(state, turn, reading, expecting)
    if address_took:
        took.add(Field.ADDRESS)
    if address_problem is not None:
        problems.append(address_problem)
    state = _edit_named_field(state, reading, took, problems)
    return state, problems, took


def _take_phone(
    state: DialogState,
    turn: Turn,
    reading: Reading,
    settings: DialogSettings,
    expecting: Field | None,
    took: set[Field],
    problems: list[Reply],
) -> DialogState:
    """Phone: a shared contact, or numbers in the text."""
    phones = reading.phones
    if turn.contact_phone and turn.contact_phone.strip():
        contact = parse.parse_phone(
            turn.contact_phone, settings.default_region, settings.allowed_regions
        )
        if isinstance(contact, str):
            phones = (contact,)
        elif not phones:
            problems.append(contact)  # the reason the shared contact's number is not usable
    if len(phones) == 1:
        state = dataclasses.replace(state, phone=phones[0])
        took.add(Field.PHONE)
    elif len(phones) > 1:
        problems.append(Reply("phone_which"))
    elif reading.phone_region_blocked:
        countries = parse.describe_regions(settings.allowed_regions)
        problems.append(Reply("phone_region_not_allowed", (("countries", countries),)))
    elif reading.phone_rejected and expecting is Field.PHONE:
        problems.append(Reply("phone_invalid"))
    return state


def _take_swap(
    state: DialogState, reading: Reading, took: set[Field]
) -> tuple[DialogState, Reading]:
    """ "не 12, а 21", "вместо 4 давайте 6", "экини эмес бешти": change what had the old number."""
    swapped = _swap_target(state, reading)
    if swapped is Field.ADDRESS and reading.swap is not None and state.address is not None:
        old, new = reading.swap
        state = dataclasses.replace(state, address=_swap_number(state.address, old, new))
        took.add(Field.ADDRESS)
        reading = dataclasses.replace(
            reading,
            quantity=None if reading.quantity == new else reading.quantity,
            address=None, address_detail_only=False, address_quality=AddressQuality.NONE,
        )  # fmt: skip
    elif swapped is Field.PHONE and reading.swap is not None and state.phone is not None:
        old, new = reading.swap
        state = dataclasses.replace(state, phone=state.phone[: -len(str(old))] + str(new))
        took.add(Field.PHONE)
        reading = dataclasses.replace(reading, quantity=None, quantity_conflict=False)
    elif swapped is Field.QUANTITY and reading.swap is not None:
        reading = dataclasses.replace(reading, quantity=reading.swap[1], quantity_conflict=False)
    return state, reading


def _take_word_fixes(
    state: DialogState, reading: Reading, took: set[Field]
) -> tuple[DialogState, Reading]:
    """A word of the address swapped ("не Ахунбаева, а Абдрахманова") or a detail fixed."""
    if (
        reading.word_swap is not None
        and state.address is not None
        and reading.address_quality < AddressQuality.STRONG
    ):
        replaced = _replace_words(state.address, *reading.word_swap)
        if replaced is not None:  # "не Ахунбаева, а Абдрахманова"
            state = dataclasses.replace(state, address=replaced)
            took.add(Field.ADDRESS)
            reading = dataclasses.replace(
                reading, address=None, address_quality=AddressQuality.NONE
            )
    if reading.detail_fix is not None and state.address is not None and not took:
        kind, value = reading.detail_fix
        state = dataclasses.replace(
            state, address=_merge_detail(state.address, f"{kind} {value}", correcting=True)
        )
        took.add(Field.ADDRESS)
    return state, reading


def _take_quantity(
    state: DialogState,
    reading: Reading,
    expecting: Field | None,
    took: set[Field],
    problems: list[Reply],
) -> DialogState:
    """The count: a clear one, relative to the one before, doubtful (asked back) or a problem."""
    # "one more", "на одну меньше": relative to the count given before.
    if reading.quantity_delta is not None:
        base = state.quantity or 0
        reading = dataclasses.replace(reading, quantity=base + reading.quantity_delta)
    if reading.quantity is not None:
        if parse.MIN_QUANTITY <= reading.quantity <= parse.MAX_QUANTITY:
            state = dataclasses.replace(state, quantity=reading.quantity)
            if state.pending is not None and state.pending.field is Field.QUANTITY:
                state = dataclasses.replace(state, pending=None)
            took.add(Field.QUANTITY)
        else:
            problems.append(Reply("quantity_out_of_range", parse.quantity_params()))
    elif reading.quantity_conflict:
        problems.append(Reply("quantity_which"))
    elif reading.quantity_fraction and expecting is Field.QUANTITY:
        problems.append(Reply("quantity_not_whole"))
    elif reading.quantity_doubtful is not None:
        if reading.quantity_doubtful > 0:
            state = dataclasses.replace(
                state,
                pending=Pending(Field.QUANTITY, str(reading.quantity_doubtful)),
                step=Step.WAITING_QUANTITY,
            )
            took.add(Field.QUANTITY)
        else:
            problems.append(Reply("quantity_not_a_number"))
    return state


def _edit_named_field(
    state: DialogState, reading: Reading, took: set[Field], problems: list[Reply]
) -> DialogState:
    """A field named for a change, without its value: ask it again (from the summary too)."""
    named = reading.fields - took
    wants_change = reading.correction or reading.no or reading.apology or state.asked_what_to_change
    if named and wants_change and len(named) == 1 and not took:
        field = next(iter(named))
        if _value(state, field) is not None:
            state = dataclasses.replace(
                state, step=_FIELD_STEP[field], editing=True, pending=None,
                asked_what_to_change=False,
            )  # fmt: skip
            took.add(field)  # the question itself is the answer to the turn
            problems.append(Reply("edit_field"))
    return state


def _swap_target(state: DialogState, reading: Reading) -> Field | None:
    if reading.swap is None:
        return None
    old = reading.swap[0]
    if (
        Field.PHONE in reading.fields
        and state.phone is not None
        and state.phone.endswith(str(old))
        and len(str(old)) == len(str(reading.swap[1]))
    ):
        return Field.PHONE  # "номер неправильно, в конце 68, а не 63"
    in_address = (
        state.address is not None and re.search(rf"(?<!\d){old}(?!\d)", state.address) is not None
    )
    detail = reading.address_detail_only or Field.ADDRESS in reading.fields
    if in_address and (detail or state.quantity != old):
        return Field.ADDRESS
    if state.quantity == old or Field.QUANTITY in reading.fields:
        return Field.QUANTITY
    if in_address:
        return Field.ADDRESS
    if _expecting(state) is Field.QUANTITY:
        return Field.QUANTITY
    return None


def _take_address(
    state: DialogState, turn: Turn, reading: Reading, expecting: Field | None
) -> tuple[DialogState, bool, Reply | None]:
    """The address of the message (or of a shared location): (state, taken, problem)."""
    text_address = reading.address
    quality = reading.address_quality
    if turn.location is not None:
        return _take_location(state, turn, reading, expecting)
    if text_address is None:
        return state, False, None
    if len(text_address) > parse.MAX_ADDRESS_CHARS:
        return (
            state,
            False,
            Reply("address_too_long", (("max_chars", str(parse.MAX_ADDRESS_CHARS)),)),
        )
    asked = expecting is Field.ADDRESS or Field.ADDRESS in reading.fields
    if reading.address_detail_only:
        return _take_detail(state, reading, text_address)
    if quality is AddressQuality.STRONG:
        replacing = state.address is not None and not (
            asked
            or reading.correction
            or reading.apology
            or reading.no
            or state.step is Step.WAITING_CONFIRMATION
            or state.editing
        )
        if replacing:  # a new address in passing: asked back, never swapped in silently
            return (
                dataclasses.replace(
                    state, pending=Pending(Field.ADDRESS, text_address), step=Step.WAITING_ADDRESS
                ),
                True,
                None,
            )
        return _combine_part(state, text_address, quality), True, None
    if not asked:
        return state, False, None
    if quality is AddressQuality.CITY_ONLY or quality is AddressQuality.NEEDS_HOUSE:
        part = text_address
        if state.address_part and state.address_part.casefold() not in part.casefold():
            part = f"{state.address_part}, {part}"
        return dataclasses.replace(state, address_part=part, pending=None), True, None
    # Doubtful: quote it back, record nothing yet.
    value = text_address
    if state.address_part and state.address_part.casefold() not in value.casefold():
        value = f"{state.address_part}, {value}"
    return (
        dataclasses.replace(
            state, pending=Pending(Field.ADDRESS, value), step=Step.WAITING_ADDRESS
        ),
        True,
        None,
    )


def _take_location(
    state: DialogState, turn: Turn, reading: Reading, expecting: Field | None
) -> tuple[DialogState, bool, Reply | None]:
    """A shared location: its coordinates, with the text address written alongside."""
    assert turn.location is not None
    text_address = reading.address
    located = parse.format_location(turn.location)
    if located is None:
        return state, False, Reply("text_expected")  # coordinates that cannot be
    if text_address and reading.address_quality >= AddressQuality.DOUBTFUL:
        located = f"{text_address} ({located})"
    if state.address is not None and expecting is not Field.ADDRESS and not state.editing:
        # a location sent later does not silently replace the address typed before
        pending = Pending(Field.ADDRESS, located)
        return (
            dataclasses.replace(state, pending=pending, step=Step.WAITING_ADDRESS),
            True,
            None,
        )
    return _set_address(state, located), True, None


def _take_detail(
    state: DialogState, reading: Reading, detail: str
) -> tuple[DialogState, bool, Reply | None]:
    """ "кв 12", "подъезд 2": merged into the address (or the one waiting for a yes)."""
    base = state.pending.value if state.pending is not None and _pending_address(state) else None
    base = base or state.address
    if base is not None:
        merged = _merge_detail(base, detail, correcting=reading.correction or reading.no)
        if _pending_address(state):
            return (
                dataclasses.replace(state, pending=Pending(Field.ADDRESS, merged)),
                True,
                None,
            )
        return _set_address(state, merged), True, None
    if state.address_part is not None:
        return _combine_part(state, detail, AddressQuality.STRONG), True, None
    return state, False, None


def _pending_address(state: DialogState) -> bool:
    return state.pending is not None and state.pending.field is Field.ADDRESS


def _combine_part(state: DialogState, text: str, quality: AddressQuality) -> DialogState:
    part = state.address_part
    if part and part.casefold() not in text.casefold():
        text = f"{part}, {text}"
    return _set_address(state, text)


def _set_address(state: DialogState, address: str) -> DialogState:
    pending = None if _pending_address(state) else state.pending
    address = _last_detail_wins(address)
    return dataclasses.replace(state, address=address, address_part=None, pending=pending)


def _accept_pending(state: DialogState) -> DialogState:
    pending = state.pending
    assert pending is not None
    if pending.field is Field.QUANTITY:
        return dataclasses.replace(state, quantity=int(pending.value), pending=None)
    return _set_address(dataclasses.replace(state, pending=None), pending.value)


def _advance(state: DialogState) -> DialogState:
    """The step that asks for what is still missing (or the summary)."""
    if state.pending is not None:
        return dataclasses.replace(state, step=_FIELD_STEP[state.pending.field])
    if state.editing and state.step in _STEP_FIELD:
        return state
    if state.address is None:
        return dataclasses.replace(state, step=Step.WAITING_ADDRESS, editing=False)
    if state.phone is None:
        return dataclasses.replace(state, step=Step.WAITING_PHONE, editing=False)
    if state.quantity is None:
        return dataclasses.replace(state, step=Step.WAITING_QUANTITY, editing=False)
    return dataclasses.replace(state, step=Step.WAITING_CONFIRMATION, editing=False)


def _order_created(settings: DialogSettings) -> Reply:
    if settings.cancel_window_seconds <= 0:
        return Reply("order_created_final")
    minutes = max(1, round(settings.cancel_window_seconds / 60))
    return Reply("order_created", (("minutes", str(minutes)),))


def _at_summary(
    state: DialogState, turn: Turn, reading: Reading, now: float, settings: DialogSettings
) -> Transition:
    touched = dataclasses.replace(state, updated_at=now)
    clear_yes = reading.yes and not reading.no and not reading.hedge and not reading.correction
    answer: tuple[Reply, ...] = ()
    if reading.question is not None:
        answer = (Reply(f"answer_{reading.question}"),)
        if not (clear_yes and reading.starts_yes and not state.asked_what_to_change):
            return Transition(touched, (*answer, ask(touched)))
    if clear_yes and state.asked_what_to_change and not reading.strong_yes:
        # "what should I change?" — "ok": nothing changed; show the order once more to confirm.
        again = dataclasses.replace(touched, asked_what_to_change=False)
        return Transition(again, (ask(again),))
    if clear_yes and (not reading.other_words or reading.starts_yes or reading.strong_yes):
        assert state.address is not None and state.phone is not None  # see is_consistent()
        assert state.quantity is not None
        order = OrderDraft(
            idempotency_key=state.dialog_id,
            client_id=turn.client_id,
            phone=state.phone,
            address=state.address,
            quantity=state.quantity,
            locale=state.locale,
            started_at=state.started_at,
        )
        done = dataclasses.replace(
            _idle(state.locale, now, state),
            last_order_key=state.dialog_id,
            last_order_at=now,
        )
        return Transition(done, (*answer, _order_created(settings)), order)
    if (reading.no or reading.correction) and not reading.yes and not reading.other_words:
        asked = dataclasses.replace(touched, asked_what_to_change=True)
        return Transition(asked, (Reply("what_to_change"),))
    if reading.greeting and not reading.other_words and not reading.yes:
        return Transition(touched, (Reply("greeting_again"), ask(touched)))
    return Transition(touched, (Reply("confirm_unclear"), ask(touched)))


# -- language --------------------------------------------------------------------------------


def _read(turn: Turn, expecting: Field | None, settings: DialogSettings) -> Reading:
    return read(
        turn.text,
        expecting=expecting,
        default_region=settings.default_region,
        allowed_regions=settings.allowed_regions,
    )


def _first_locale(
    previous: DialogState | None,
    turn: Turn,
    reading: Reading,
    slash: Command | None,
    settings: DialogSettings,
) -> tuple[str, bool]:
    """(locale, told): asked-for language > the words' > Chat2Desk's hint > the last one
    (kept when it was told before and the words now say nothing clear) > script > default."""
    asked = command_locale(slash) if slash is not None else None
    told = (asked, reading.locale_switch, reading.locale, normalize_locale(turn.locale_hint))
    for candidate in told:
        if candidate in LOCALES:
            assert candidate is not None
            if (
                previous is not None
                and previous.locale_sure
                and candidate == reading.locale
                and candidate != previous.locale
                and not _clearly(turn, reading, previous.locale)
            ):
                return previous.locale, True
            told_clearly = candidate != reading.locale or reading.locale_clear
            return candidate, told_clearly
    if previous is not None:
        return previous.locale, previous.locale_sure
    for candidate in (_script_locale(turn.text), settings.default_locale):
        if candidate in LOCALES:
            assert candidate is not None
            return candidate, False
    return "ru", False


def _clearly(turn: Turn, reading: Reading, current: str) -> bool:
    """The words are clearly in another language than ``current`` (none of current's)."""
    mine, other = locale_strength(turn.text, current)
    return mine == 0 and other >= 2


def _keep_locale(state: DialogState, turn: Turn, reading: Reading) -> DialogState:
    """The customer's language sticks once told; until then the first words that tell win."""
    found = reading.locale
    if found is None:
        return state
    if found == state.locale:
        return state if state.locale_sure else dataclasses.replace(state, locale_sure=True)
    if not state.locale_sure or _clearly(turn, reading, state.locale):
        return dataclasses.replace(state, locale=found, locale_sure=True)
    return state


def _script_locale(text: str | None) -> str | None:
    """Only the words tell a language: Latin letters are also Russian and Kyrgyz here."""
    return detect_locale(text) if text else None


def _bot_only(text: str | None) -> bool:
    if not text:
        return False
    reading = read(text)
    return reading.bot and not reading.has_value and not reading.other_words
