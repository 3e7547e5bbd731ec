"""The order dialog, sans-IO: ``step(state, turn, now, settings) -> Transition``.

The consumer loads the state (:func:`load_state`), calls :func:`step`, creates the order it
asks for, stores the new state (:func:`dump_state`) and sends the replies rendered with
:func:`render`. :func:`validate_messages` checks the message table at start-up.
"""

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
from .state_codec import STATE_SCHEMA_VERSION, dump_state, load_state
from .step import WAITING_STEPS, handle, operator_step, status_step, step, timer_step
from .texts import render, validate_messages

__all__ = [
    "STATE_SCHEMA_VERSION",
    "WAITING_STEPS",
    "DialogSettings",
    "DialogState",
    "Event",
    "Field",
    "OperatorMessage",
    "OrderCancel",
    "OrderDraft",
    "OrderStatusChanged",
    "Pending",
    "Reply",
    "Step",
    "TimerFired",
    "TimerKind",
    "Transition",
    "Turn",
    "dump_state",
    "handle",
    "load_state",
    "operator_step",
    "render",
    "status_step",
    "step",
    "timer_step",
    "validate_messages",
]
