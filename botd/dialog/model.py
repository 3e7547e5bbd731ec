"""Frozen values of the dialog core: what comes in, what the dialog remembers, what it asks for.

Nothing here does I/O. The consumer turns a queued webhook into a :class:`Turn`, calls
:func:`botd.dialog.step`, and executes the :class:`Transition` it gets back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Step(StrEnum):
    """Where a customer is in the order dialog."""

    IDLE = "idle"  # no dialog in progress (DESIGN §1 INITIAL)
    WAITING_ADDRESS = "waiting_address"
    WAITING_PHONE = "waiting_phone"
    WAITING_QUANTITY = "waiting_quantity"
    WAITING_CONFIRMATION = "waiting_confirmation"
    HANDOFF = "handoff"  # a human operator answers; the bot stays silent until "/bot" or the TTL


@dataclass(frozen=True, slots=True)
class Turn:
    """One customer message, already validated and normalised at the webhook."""

    message_id: str
    client_id: str
    text: str | None  # normalised (NFC, trimmed, no control characters); None when absent/empty
    at: float  # unix seconds when the webhook accepted it
    media: tuple[str, ...] = ()  # kinds of non-text content: "photo", "audio", "pdf", ...
    location: tuple[float, float] | None = None  # (latitude, longitude) of a shared location
    contact_phone: str | None = None  # phone of a shared contact, raw
    locale_hint: str | None = None  # a locale Chat2Desk reported for the customer, if any


@dataclass(frozen=True, slots=True)
class DialogState:
    """What the dialog remembers about one customer between turns."""

    step: Step
    dialog_id: str  # "" while idle; set when a dialog starts; the order's idempotency key
    locale: str
    started_at: float
    updated_at: float
    address: str | None = None
    phone: str | None = None  # E.164
    quantity: int | None = None
    # True while one field is asked again from the summary (WAITING_ADDRESS/PHONE/QUANTITY):
    # a valid answer then returns to WAITING_CONFIRMATION instead of continuing the chain.
    editing: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """A message to send to the customer: a key of the message table and its parameters.

    When the transition carries an order, the consumer renders its replies with the extra
    parameter ``order_id`` (the number PostgreSQL gave the order).
    """

    key: str
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class OrderDraft:
    """An order the customer confirmed; created exactly once under ``idempotency_key``."""

    idempotency_key: str
    client_id: str
    phone: str  # E.164
    address: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of one turn: the state to store, the replies to send, the order to create.

    ``replies`` is never empty, except while a human operator has the conversation
    (``state.step is Step.HANDOFF``): then the bot deliberately says nothing.
    """

    state: DialogState
    replies: tuple[Reply, ...]
    order: OrderDraft | None = None


@dataclass(frozen=True, slots=True)
class DialogSettings:
    """The parts of the configuration the dialog needs (from ``[dialog]``)."""

    default_region: str = "KG"
    allowed_regions: tuple[str, ...] = ()  # empty: any country
    default_locale: str = "ru"
    state_ttl_seconds: int = 86400
    handoff_seconds: int = 86400  # silence after a human operator's last message
