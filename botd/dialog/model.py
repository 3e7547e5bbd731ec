"""Frozen values of the dialog core: what comes in, what the dialog remembers, what it decides.

Nothing here does I/O. The consumer turns a queued message into an :data:`Event` (a customer's
:class:`Turn`, an operator's :class:`OperatorMessage`, a :class:`TimerFired` or the shop's
:class:`OrderStatusChanged`), calls :func:`botd.dialog.handle`, and executes the
:class:`Transition` it gets back: store the state, place or cancel the order it names, schedule
the timer it asks for, send its replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Step(StrEnum):
    """Where a customer is in the order dialog."""

    IDLE = "idle"  # no dialog in progress
    WAITING_ADDRESS = "waiting_address"
    WAITING_PHONE = "waiting_phone"
    WAITING_QUANTITY = "waiting_quantity"
    WAITING_CONFIRMATION = "waiting_confirmation"
    HANDOFF = "handoff"  # a human operator answers; the bot stays silent until "/bot" or the TTL


class Field(StrEnum):
    """A value of the order."""

    ADDRESS = "address"
    PHONE = "phone"
    QUANTITY = "quantity"


class TimerKind(StrEnum):
    """The durable timers of a dialog: one reminder to a silent customer, then a polite close."""

    REMINDER = "reminder"
    EXPIRE = "expire"


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
class OperatorMessage:
    """A human operator wrote to the customer in Chat2Desk (not one of the bot's own replies)."""

    message_id: str
    client_id: str
    text: str | None
    at: float


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A durable timer came due, and nothing happened in the dialog since it was set."""

    message_id: str
    client_id: str
    kind: TimerKind
    at: float


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    """The shop moved the customer's order (``botd orders set-status``): tell the customer.

    It comes from the shop, not the customer, so it must not count as the customer's activity
    (the dialog's age keeps counting from their last message). ``locale`` is the language the
    customer ordered in, for when no dialog state remembers one (None: unknown).
    """

    message_id: str
    client_id: str
    order_id: int
    status: str  # "delivering" or "cancelled" are told; any other status needs no message
    locale: str | None
    at: float


Event = Turn | OperatorMessage | TimerFired | OrderStatusChanged


@dataclass(frozen=True, slots=True)
class Pending:
    """A doubtful value the bot asked the customer to confirm before recording it."""

    field: Field
    value: str  # the address text, or the quantity as digits


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
    # A doubtful value awaiting the customer's yes ("Это адрес доставки: «…»?").
    pending: Pending | None = None
    # True once the customer's words (or Chat2Desk, or a switch) told the language; until then
    # the next message that tells one switches to it.
    locale_sure: bool = False
    # The first part of an address given in pieces ("Токмок", then "ул. Ленина 5").
    address_part: str | None = None
    # After a bare "no" at the summary the bot asked what to change (or whether to cancel).
    asked_what_to_change: bool = False
    # The order this customer placed last (its idempotency key) and when, for a late cancel.
    last_order_key: str | None = None
    last_order_at: float | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A message to send to the customer: a key of the message table and its parameters.

    When the transition places or cancels an order, the consumer renders its replies with the
    extra parameter ``order_id`` (the number PostgreSQL gave the order).
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
    # About the order, not part of it (two drafts with the same values are the same order):
    locale: str = field(default="", compare=False)  # the dialog's language (later messages)
    started_at: float = field(default=0.0, compare=False)  # when the dialog began (0: unknown)


@dataclass(frozen=True, slots=True)
class OrderCancel:
    """The customer cancels the order placed under ``idempotency_key`` (idempotent)."""

    idempotency_key: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of one event: the state to store and the effects to carry out.

    ``replies`` is empty only when the bot deliberately says nothing (a human operator has the
    conversation). With ``cancel``, ``replies`` are sent when the order is (or already was)
    cancelled and ``refused_replies`` when it cannot be (already handed to delivery, or unknown).
    ``timer``: schedule this timer for the state this transition commits (the consumer drops it
    when the state changed meanwhile).
    """

    state: DialogState
    replies: tuple[Reply, ...]
    order: OrderDraft | None = None
    cancel: OrderCancel | None = None
    refused_replies: tuple[Reply, ...] = ()
    timer: TimerKind | None = None
    handoff_started: bool = False  # a human operator took (or was asked to take) the dialog


@dataclass(frozen=True, slots=True)
class DialogSettings:
    """The parts of the configuration the dialog needs (from ``[dialog]``)."""

    default_region: str = "KG"
    allowed_regions: tuple[str, ...] = ()  # empty: any country
    default_locale: str = "ru"
    state_ttl_seconds: int = 86400
    handoff_seconds: int = 86400  # silence after a human operator's last message
    cancel_window_seconds: int = 900  # a placed order can be cancelled from the chat this long
