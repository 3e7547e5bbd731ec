"""The order dialog as one pure function: ``step(state, turn, now, settings) -> Transition``.

No I/O, no clock, no randomness: the same arguments always give the same transition, so a
redelivered message reproduces exactly the state, replies and order of its first delivery.

Order of checks for a turn:

1. no state, an idle state or an expired one (older than ``state_ttl_seconds``) → a new dialog
   (a bare "cancel" just says there is nothing to cancel; "operator" hands off at once);
2. ``HANDOFF`` → silence (no replies) until "/bot" starts a new dialog or the TTL runs out;
3. commands (cancel, restart, help, operator, language) at any step;
4. the current step's own question.

Every reply tuple ends with the question the customer should answer next, unless the dialog
ended (order placed, cancelled, handed off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from . import parse
from .model import (
    DialogSettings,
    DialogState,
    Event,
    Field,
    OperatorMessage,
    OrderDraft,
    Reply,
    Step,
    TimerFired,
    TimerKind,
    Transition,
    Turn,
)
from .phrases import (
    LOCALES,
    Answer,
    Command,
    classify_answer,
    command_locale,
    detect_locale,
    match_command,
    match_edit,
    normalize_locale,
)

__all__ = ["ask", "handle", "is_consistent", "is_expired", "step"]


def handle(
    state: DialogState | None, event: Event, now: float, settings: DialogSettings
) -> Transition | None:
    """The dialog's decision for one event: a customer turn, an operator message, a timer.

    Returns None only for a timer with nothing to do (no dialog in progress).
    """
    if isinstance(event, TimerFired):
        return timer_step(state, event.kind, now)
    if isinstance(event, OperatorMessage):
        return operator_step(state, event.text, now, settings)
    transition = step(state, event, now, settings)
    if transition.state.step in WAITING_STEPS:
        return dataclasses.replace(transition, timer=TimerKind.REMINDER)
    return transition

_NEXT = {
    Step.WAITING_ADDRESS: Step.WAITING_PHONE,
    Step.WAITING_PHONE: Step.WAITING_QUANTITY,
    Step.WAITING_QUANTITY: Step.WAITING_CONFIRMATION,
}
_EDIT_STEP = {
    Field.ADDRESS: Step.WAITING_ADDRESS,
    Field.PHONE: Step.WAITING_PHONE,
    Field.QUANTITY: Step.WAITING_QUANTITY,
}
_HELP = {
    Step.WAITING_ADDRESS: "help_address",
    Step.WAITING_PHONE: "help_phone",
    Step.WAITING_QUANTITY: "help_quantity",
    Step.WAITING_CONFIRMATION: "help_confirmation",
}


def step(state: DialogState | None, turn: Turn, now: float, settings: DialogSettings) -> Transition:
    """Advance the dialog of one customer by one message."""
    if state is None or state.step is Step.IDLE or not is_consistent(state):
        return _start(state, turn, now, settings, opening="greeting")
    if state.step is Step.HANDOFF and now - state.updated_at > settings.handoff_seconds:
        return _start(state, turn, now, settings, opening="dialog_expired")
    if is_expired(state, now, settings):
        return _start(state, turn, now, settings, opening="dialog_expired")
    if state.step is Step.HANDOFF:
        if match_command(turn.text) is Command.BOT:
            return _new_dialog(turn, state.locale, now, "bot_resumed")
        return Transition(state, ())
    command = match_command(turn.text)
    if command is not None:
        return _command(state, command, turn, now)
    return _HANDLERS[state.step](state, turn, now, settings)


def operator_step(
    state: DialogState | None, text: str | None, now: float, settings: DialogSettings
) -> Transition:
    """A human operator wrote to the customer in Chat2Desk: the bot steps aside, silently.

    The dialog goes to HANDOFF (no replies) for ``settings.handoff_seconds`` after the operator's
    last message; the operator's ``/bot`` gives the customer back (IDLE: the customer's next
    message starts a new dialog). The bot never answers an operator.
    """
    locale = state.locale if state is not None else settings.default_locale
    if match_command(text) is Command.BOT:
        return Transition(_idle(locale, now), ())
    started = state.started_at if state is not None and state.step is Step.HANDOFF else now
    handoff = DialogState(
        step=Step.HANDOFF, dialog_id="", locale=locale, started_at=started, updated_at=now
    )
    return Transition(handoff, ())


WAITING_STEPS = (
    Step.WAITING_ADDRESS,
    Step.WAITING_PHONE,
    Step.WAITING_QUANTITY,
    Step.WAITING_CONFIRMATION,
)


def timer_step(state: DialogState | None, kind: str, now: float) -> Transition | None:
    """A durable timer fired for a customer who went silent mid-dialog.

    The caller has already checked that nothing happened since the timer was set (same state
    version). ``kind`` "reminder": one nudge and the current question again, state unchanged
    (the dialog's age still counts from the customer's last message); "expire": a polite
    closing message and the dialog ends (IDLE).
    Returns None when there is nothing to do (no dialog in progress).
    """
    if state is None or state.step not in WAITING_STEPS:
        return None
    if kind == "reminder":
        return Transition(state, (Reply("reminder"), ask(state)), timer=TimerKind.EXPIRE)
    return Transition(_idle(state.locale, now), (Reply("dialog_closed"),))


def is_expired(state: DialogState, now: float, settings: DialogSettings) -> bool:
    """True when the state is older than the dialog TTL and must not be continued."""
    return now - state.updated_at > settings.state_ttl_seconds


def ask(state: DialogState) -> Reply:
    """The question the customer should answer at ``state``'s step."""
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
    return Reply("ask_address")


def is_consistent(state: DialogState) -> bool:
    """False for a state that cannot be continued (a hand-made or corrupted one)."""
    if state.step in (Step.IDLE, Step.HANDOFF):
        return True
    complete = None not in (state.address, state.phone, state.quantity)
    if not state.dialog_id or (state.editing and not complete):
        return False
    if state.step is Step.WAITING_PHONE:
        return state.address is not None
    if state.step is Step.WAITING_QUANTITY:
        return state.address is not None and state.phone is not None
    if state.step is Step.WAITING_CONFIRMATION:
        return complete
    return True


# -- starting and ending -------------------------------------------------------------------


def _start(
    previous: DialogState | None,
    turn: Turn,
    now: float,
    settings: DialogSettings,
    *,
    opening: str,
) -> Transition:
    command = match_command(turn.text)
    locale = _pick_locale(previous, turn, command, settings)
    if command is Command.CANCEL:
        return Transition(_idle(locale, now), (Reply("nothing_to_cancel"),))
    if command is Command.HANDOFF:
        return _handoff(locale, now)
    return _new_dialog(turn, locale, now, opening)


def _pick_locale(
    previous: DialogState | None, turn: Turn, command: Command | None, settings: DialogSettings
) -> str:
    """Asked-for language > Chat2Desk's hint > the customer's last language > script > default."""
    candidates = (
        command_locale(command) if command is not None else None,
        normalize_locale(turn.locale_hint),
        previous.locale if previous is not None else None,
        detect_locale(turn.text),
        settings.default_locale,
    )
    for candidate in candidates:
        if candidate in LOCALES:
            return candidate
    return "ru"


def _new_dialog(turn: Turn, locale: str, now: float, opening: str) -> Transition:
    state = DialogState(
        step=Step.WAITING_ADDRESS,
        dialog_id=f"{turn.client_id}:{turn.message_id}",  # the same turn → the same id
        locale=locale,
        started_at=now,
        updated_at=now,
    )
    return Transition(state, (Reply(opening), ask(state)))


def _idle(locale: str, now: float) -> DialogState:
    return DialogState(step=Step.IDLE, dialog_id="", locale=locale, started_at=now, updated_at=now)


def _handoff(locale: str, now: float) -> Transition:
    state = DialogState(
        step=Step.HANDOFF, dialog_id="", locale=locale, started_at=now, updated_at=now
    )
    return Transition(state, (Reply("handoff_started"),))


def _command(state: DialogState, command: Command, turn: Turn, now: float) -> Transition:
    if command is Command.CANCEL:
        return Transition(_idle(state.locale, now), (Reply("order_cancelled"),))
    if command is Command.RESTART:
        return _new_dialog(turn, state.locale, now, "restarted")
    if command is Command.HANDOFF:
        return _handoff(state.locale, now)
    locale = command_locale(command)
    if locale is not None:
        switched = dataclasses.replace(state, locale=locale, updated_at=now)
        return Transition(switched, (Reply("locale_switched"), ask(switched)))
    touched = dataclasses.replace(state, updated_at=now)
    if command is Command.HELP:
        return Transition(touched, (Reply(_HELP[state.step]), ask(touched)))
    return Transition(touched, (ask(touched),))  # "/bot" while the bot is already answering


# -- the questions -----------------------------------------------------------------------


def _text(turn: Turn) -> str | None:
    if turn.text is None or not turn.text.strip():
        return None
    return turn.text


def _reject(state: DialogState, reason: Reply, now: float) -> Transition:
    touched = dataclasses.replace(state, updated_at=now)
    return Transition(touched, (reason, ask(touched)))


def _accept(state: DialogState, now: float) -> Transition:
    """Move on after a valid answer: to the next question, or back to the summary if editing."""
    next_step = Step.WAITING_CONFIRMATION if state.editing else _NEXT[state.step]
    moved = dataclasses.replace(state, step=next_step, editing=False, updated_at=now)
    return Transition(moved, (ask(moved),))


def _on_address(state: DialogState, turn: Turn, now: float, settings: DialogSettings) -> Transition:
    text = _text(turn)
    result: str | Reply
    if turn.location is not None and text is None:
        located = parse.format_location(turn.location)
        result = Reply("text_expected") if located is None else located
    elif text is not None:
        result = parse.parse_address(text)
    else:
        result = Reply("text_expected")
    if isinstance(result, Reply):
        return _reject(state, result, now)
    return _accept(dataclasses.replace(state, address=result), now)


def _on_phone(state: DialogState, turn: Turn, now: float, settings: DialogSettings) -> Transition:
    raw = turn.contact_phone if turn.contact_phone and turn.contact_phone.strip() else _text(turn)
    if raw is None:
        return _reject(state, Reply("text_expected"), now)
    result = parse.parse_phone(raw, settings.default_region, settings.allowed_regions)
    if isinstance(result, Reply):
        return _reject(state, result, now)
    return _accept(dataclasses.replace(state, phone=result), now)


def _on_quantity(
    state: DialogState, turn: Turn, now: float, settings: DialogSettings
) -> Transition:
    text = _text(turn)
    if text is None:
        return _reject(state, Reply("text_expected"), now)
    result = parse.parse_quantity(text)
    if isinstance(result, Reply):
        return _reject(state, result, now)
    return _accept(dataclasses.replace(state, quantity=result), now)


def _on_confirmation(
    state: DialogState, turn: Turn, now: float, settings: DialogSettings
) -> Transition:
    text = _text(turn)
    if text is None:
        return _reject(state, Reply("text_expected"), now)
    field = match_edit(text)
    if field is not None:
        editing = dataclasses.replace(state, step=_EDIT_STEP[field], editing=True, updated_at=now)
        return Transition(editing, (ask(editing),))
    answer = classify_answer(text)
    if answer is Answer.NO:
        return Transition(_idle(state.locale, now), (Reply("order_cancelled"),))
    if answer is Answer.UNCLEAR:
        return _reject(state, Reply("confirm_unclear"), now)
    assert state.address is not None and state.phone is not None  # see is_consistent()
    assert state.quantity is not None
    order = OrderDraft(
        idempotency_key=state.dialog_id,
        client_id=turn.client_id,
        phone=state.phone,
        address=state.address,
        quantity=state.quantity,
    )
    return Transition(_idle(state.locale, now), (Reply("order_created"),), order)


_Handler = Callable[[DialogState, Turn, float, DialogSettings], Transition]
_HANDLERS: dict[Step, _Handler] = {
    Step.WAITING_ADDRESS: _on_address,
    Step.WAITING_PHONE: _on_phone,
    Step.WAITING_QUANTITY: _on_quantity,
    Step.WAITING_CONFIRMATION: _on_confirmation,
}
