"""What the message processor needs from the outside world, as small protocols (ports).

The adapters (Redis, PostgreSQL, RabbitMQ, httpx) implement them for the daemon; the in-memory
versions implement them for ``botd chat`` and for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Protocol

from botd.dialog import OrderDraft, TimerKind


class CommitResult(Enum):
    COMMITTED = 1
    DUPLICATE = 0  # the message was processed meanwhile
    CONFLICT = -1  # the dialog changed since it was loaded


@dataclass(frozen=True, slots=True)
class Marker:
    """What processing a message produced: its replies, and whether they went out."""

    replies: tuple[str, ...]
    sent: bool


@dataclass(frozen=True, slots=True)
class Loaded:
    version: int
    state: dict[str, Any] | None  # decoded state JSON; None when idle/absent/corrupt
    marker: Marker | None  # set when this message_id was processed already
    outbox_pending: int = 0  # batches of this customer's replies waiting in the outbox
    own_echo: bool = False  # message_id is one botd itself sent (an ``outbox`` webhook echo)


class CancelOutcome(StrEnum):
    """What asking to cancel an order by its idempotency key found."""

    CANCELLED = "cancelled"  # it was 'placed' and is 'cancelled' now
    ALREADY_CANCELLED = "already_cancelled"  # cancelled before (a repeated cancel)
    TOO_LATE = "too_late"  # the shop has moved it on (confirmed, delivering, delivered)
    NOT_FOUND = "not_found"  # no order under that key


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: CancelOutcome
    order_id: int | None  # the order's number, when found


class StateStore(Protocol):
    """Dialog state and dedupe markers (Redis: :class:`botd.state_store.StateStore`)."""

    async def load(self, client_id: str, message_id: str) -> Loaded:
        """The dialog's version and state, and the marker if ``message_id`` was processed."""
        ...

    async def commit(
        self,
        client_id: str,
        message_id: str,
        *,
        expected_version: int,
        state: dict[str, Any] | None,
        replies: tuple[str, ...],
    ) -> CommitResult:
        """Store state, bump the version and write the marker with its replies — all or nothing,
        and only if the version is still ``expected_version`` and the message is not marked."""
        ...

    async def mark_sent(self, message_id: str, own_ids: tuple[str, ...] = ()) -> None:
        """The replies of ``message_id`` went out; ``own_ids`` are the ids Chat2Desk gave them."""
        ...


class OrderStore(Protocol):
    """Orders, each created exactly once (PostgreSQL: :class:`botd.order_store.OrderStore`)."""

    async def place(self, draft: OrderDraft, *, timeout: float = 10.0) -> int:
        """Create the order once; the same id for every retry of the same idempotency key."""
        ...

    async def cancel(self, key: str, *, timeout: float = 10.0) -> CancelResult:
        """Cancel the order placed under ``key`` if it is still 'placed'; safe to repeat."""
        ...


class Sender(Protocol):
    """Sends one reply to a customer (Chat2Desk: :class:`botd.chat_api.Sender`)."""

    async def send(self, client_id: str, text: str) -> str:
        """Send ``text``; return the message id Chat2Desk gave it ('' if none).

        Raises TransientError (worth retrying later) or PermanentError.
        """
        ...


class Outbox(Protocol):
    """Where replies that could not be sent go (RabbitMQ: :class:`botd.outbox.Outbox`)."""

    async def park(
        self, client_id: str, message_id: str, texts: tuple[str, ...], *, reason: str
    ) -> None:
        """Keep ``texts`` to send later, behind any earlier parked replies to the customer."""
        ...

    async def dead_letter(
        self, client_id: str, message_id: str, text: str, *, reason: str, attempts: int
    ) -> None:
        """Give up on ``text`` and record it with the reason in the dead-letter queue."""
        ...


class Timers(Protocol):
    """Durable dialog timers (RabbitMQ: :class:`botd.timers.Timers`)."""

    async def schedule(self, client_id: str, kind: TimerKind, version: int) -> None:
        """Fire a ``kind`` timer for the customer later, valid only at state ``version``."""
        ...
