"""The dialog state as JSON-able data, versioned so a renamed step never bricks a live dialog.

``dump_state`` writes the current schema; ``load_state`` reads it and every older schema it
can still make sense of, and returns None for anything else (unknown or future schema, unknown
step, wrong types, impossible values). The caller then starts a fresh dialog; a customer
never gets stuck on a state botd cannot read. ``load_state`` never raises.

Schema history:

1. the first layout: no ``editing`` flag; the steps of docs/design.md §1 could be stored as
   ``"initial"`` and ``"completed"`` (both mean: no dialog in progress).
2. adds ``editing`` (changing one value from the summary) and the ``"handoff"`` step.
3. adds ``pending`` (a doubtful value asked back), ``address_part`` (an address given in
   pieces), ``asked_what_to_change``, ``locale_sure`` and the last order (``last_order_key``,
   ``last_order_at``) for a cancel right after ordering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .model import DialogState, Field, Pending, Step
from .parse import MAX_ADDRESS_CHARS, MAX_QUANTITY, MIN_QUANTITY
from .phrases import LOCALES
from .step import is_consistent

__all__ = ["STATE_SCHEMA_VERSION", "dump_state", "load_state"]

STATE_SCHEMA_VERSION = 3

_MAX_ID_CHARS = 512
_MAX_PHONE_CHARS = 16  # "+" and at most 15 digits (E.164)
_V1_STEPS = {
    "initial": Step.IDLE,
    "completed": Step.IDLE,
    "idle": Step.IDLE,
    "waiting_address": Step.WAITING_ADDRESS,
    "waiting_phone": Step.WAITING_PHONE,
    "waiting_quantity": Step.WAITING_QUANTITY,
    "waiting_confirmation": Step.WAITING_CONFIRMATION,
}
_V2_STEPS = {member.value: member for member in Step}


def dump_state(state: DialogState) -> dict[str, object]:
    """The state as a JSON-able dict carrying ``"schema": STATE_SCHEMA_VERSION``."""
    return {
        "schema": STATE_SCHEMA_VERSION,
        "step": state.step.value,
        "dialog_id": state.dialog_id,
        "locale": state.locale,
        "started_at": state.started_at,
        "updated_at": state.updated_at,
        "address": state.address,
        "phone": state.phone,
        "quantity": state.quantity,
        "editing": state.editing,
        "pending": (
            None
            if state.pending is None
            else {"field": state.pending.field.value, "value": state.pending.value}
        ),
        "address_part": state.address_part,
        "asked_what_to_change": state.asked_what_to_change,
        "locale_sure": state.locale_sure,
        "last_order_key": state.last_order_key,
        "last_order_at": state.last_order_at,
    }


def load_state(data: object) -> DialogState | None:
    """The state stored as ``data``, or None when it cannot be trusted (never raises)."""
    if not isinstance(data, Mapping):
        return None
    schema = data.get("schema")
    if type(schema) is not int:
        return None
    if schema == 1:
        return _decode(data, _V1_STEPS, editing=False)
    if schema in (2, STATE_SCHEMA_VERSION):
        editing = data.get("editing", False)
        if type(editing) is not bool:
            return None
        return _decode(data, _V2_STEPS, editing=editing)
    return None


class _Invalid(Exception):
    pass


def _decode(
    data: Mapping[object, object], steps: dict[str, Step], *, editing: bool
) -> DialogState | None:
    try:
        step_name = data.get("step")
        if not isinstance(step_name, str) or step_name not in steps:
            return None
        locale = data.get("locale")
        if locale not in LOCALES:
            return None
        assert isinstance(locale, str)
        state = DialogState(
            step=steps[step_name],
            dialog_id=_text(data.get("dialog_id"), _MAX_ID_CHARS, optional=False) or "",
            locale=locale,
            started_at=_time(data.get("started_at")),
            updated_at=_time(data.get("updated_at")),
            address=_text(data.get("address"), MAX_ADDRESS_CHARS, optional=True),
            phone=_phone(data.get("phone")),
            quantity=_quantity(data.get("quantity")),
            editing=editing,
            pending=_pending(data.get("pending")),
            address_part=_text(data.get("address_part"), MAX_ADDRESS_CHARS, optional=True),
            asked_what_to_change=_flag(data.get("asked_what_to_change")),
            locale_sure=_flag(data.get("locale_sure")),
            last_order_key=_text(data.get("last_order_key"), _MAX_ID_CHARS, optional=True),
            last_order_at=(
                None if data.get("last_order_at") is None else _time(data.get("last_order_at"))
            ),
        )
    except _Invalid:
        return None
    return state if is_consistent(state) else None


def _text(value: object, max_chars: int, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise _Invalid
    return value


def _flag(value: object) -> bool:
    if value is None:
        return False
    if type(value) is not bool:
        raise _Invalid
    return value


def _pending(value: object) -> Pending | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Invalid
    field, text = value.get("field"), value.get("value")
    if field not in ("address", "quantity") or not isinstance(text, str):
        raise _Invalid
    if len(text) > MAX_ADDRESS_CHARS or (field == "quantity" and not text.isdigit()):
        raise _Invalid
    return Pending(Field(field), text)


def _time(value: object) -> float:
    if type(value) not in (int, float):
        raise _Invalid
    assert isinstance(value, int | float)
    try:
        seconds = float(value)
    except OverflowError:
        raise _Invalid from None
    if not math.isfinite(seconds):
        raise _Invalid
    return seconds


def _phone(value: object) -> str | None:
    phone = _text(value, _MAX_PHONE_CHARS, optional=True)
    if phone is not None and not (phone.startswith("+") and phone[1:].isdigit()):
        raise _Invalid
    return phone


def _quantity(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not MIN_QUANTITY <= value <= MAX_QUANTITY:
        raise _Invalid
    return value
