"""What the message processor needs from the outside world, as small protocols (ports).

The adapters (Redis, PostgreSQL, RabbitMQ, httpx) implement them for the daemon; the in-memory
versions implement them for ``botd chat`` and for tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Protocol

from botd.dialog import OrderDraft, TimerKind

# How long botd remembers the texts it said to a customer (Redis ``said:{client_id}``, digest →
# time): an ``outbox`` echo with one of those texts is botd's own even when Chat2Desk's id for it
# was never learnt (a timed-out send, a kill after the send). It covers Chat2Desk's webhook
# retries (about 10 s, 5 min, 2 h) of an echo botd could not take at first.
OWN_ECHO_WINDOW_SECONDS = 6 * 3600


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A dialog timer the commit keeps with the state it is set for (:meth:`StateStore.commit`):
    ``kind`` fires at ``due`` (seconds since the epoch), valid only at state ``version``."""

    kind: TimerKind
    version: int
    due: float

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.version}"

    @staticmethod
    def parse(spec: str) -> tuple[TimerKind, int]:
        kind, version = spec.split(":")
        return TimerKind(kind), int(version)


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
    # when botd last committed or sent a reply with the echo's text to this customer (None: never,
    # or longer ago than the store keeps it); asked for with ``load(..., echo_digest=…)``
    echo_sent_at: float | None = None


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


@dataclass(frozen=True, slots=True)
class SendLease:
    """Who may call Chat2Desk for a customer right now: one process at a time, so a process whose
    delivery was handed to another (a failover) finishes its in-flight call before the other one
    looks up what went out and sends the rest."""

    client_id: str
    holder: str  # unique per process


class StateStore(Protocol):
    """Dialog state and dedupe markers (Redis: :class:`botd.state_store.StateStore`)."""

    async def load(
        self, client_id: str, message_id: str, *, echo_digest: str | None = None
    ) -> Loaded:
        """The dialog's version and state, and the marker if ``message_id`` was processed;
        with ``echo_digest`` (:func:`botd.inbound.text_digest`), also when botd last said that
        text to the customer (``Loaded.echo_sent_at``)."""
        ...

    async def record_sending(self, client_id: str, texts: tuple[str, ...], now: float) -> None:
        """Remember that botd is about to send ``texts`` to the customer (at ``now``), so their
        ``outbox`` echoes are known as botd's own whatever happens to the send's answer."""
        ...

    async def commit(
        self,
        client_id: str,
        message_id: str,
        *,
        expected_version: int,
        state: dict[str, Any] | None,
        replies: tuple[str, ...],
        now: float | None = None,
        lease: SendLease | None = None,
        lease_seconds: float = 0.0,
        timer: DueTimer | None = None,
    ) -> CommitResult:
        """Store state, bump the version and write the marker with its replies — all or nothing,
        and only if the version is still ``expected_version`` and the message is not marked.
        With ``now``, also :meth:`record_sending` the replies (in the same round trip). With
        ``lease``, a committed step also takes the customer's send lease for ``lease_seconds``
        if nobody else holds it (the first :meth:`take_send_lease` after it is then free). With
        ``timer``, the committed state's timer is kept with it (see :class:`Timers`)."""
        ...

    async def mark_sent(
        self, message_id: str, own_ids: tuple[str, ...] = (), *, lease: SendLease | None = None
    ) -> None:
        """The replies of ``message_id`` went out; ``own_ids`` are the ids Chat2Desk gave them;
        ``lease`` is given back."""
        ...

    async def take_send_lease(self, lease: SendLease, ttl_seconds: float) -> tuple[float, str]:
        """Take or renew the customer's send lease: ``(0.0, holder)`` when taken, else the
        seconds another holder's lease still has, and that holder."""
        ...

    async def release_send_lease(self, lease: SendLease) -> None:
        """Give the lease back if ``lease.holder`` holds it (also another, dead process's)."""
        ...


class OrderStore(Protocol):
    """Orders, each created exactly once (PostgreSQL: :class:`botd.order_store.OrderStore`)."""

    async def place(self, draft: OrderDraft, *, timeout: float = 10.0) -> int:
        """Create the order once; the same id for every retry of the same idempotency key."""
        ...

    async def cancel(self, key: str, *, timeout: float = 10.0) -> CancelResult:
        """Cancel the order placed under ``key`` if it is still 'placed'; safe to repeat."""
        ...


@dataclass(frozen=True, slots=True)
class Route:
    """Where a reply goes out: the transport and channel the customer wrote from (None: let
    Chat2Desk use the customer's last ones)."""

    transport: str | None = None
    channel_id: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply to send: its text and its stable ``external_id`` (``botd-{message}-{index}``,
    the same on every redelivery and retry, so a send whose answer was lost can be looked up)."""

    text: str
    external_id: str | None = None


def reply_ids(message_id: str, texts: tuple[str, ...], start: int = 0) -> tuple[Reply, ...]:
    """The replies of message ``message_id`` with their stable external ids."""
    return tuple(Reply(text, f"botd-{message_id}-{start + i}") for i, text in enumerate(texts))


OWN_EXTERNAL_ID_PREFIX = "botd-"


class Sender(Protocol):
    """Sends one reply to a customer (Chat2Desk: :class:`botd.chat_api.Sender`)."""

    async def send(
        self,
        client_id: str,
        text: str,
        *,
        external_id: str | None = None,
        route: Route | None = None,
        unsure: bool = False,
        guard: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """Send ``text``; return the message id Chat2Desk gave it ('' if none). ``unsure``: an
        earlier attempt may have reached Chat2Desk — look ``external_id`` up before sending.
        ``guard`` runs right before each call to Chat2Desk (it may wait, or raise DeliveryLost).

        Raises TransientError (worth retrying later; DeliveryUnknown when it may have gone out)
        or PermanentError.
        """
        ...

    async def find_sent(
        self,
        client_id: str,
        external_ids: tuple[str, ...],
        *,
        guard: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, str]:
        """Which of ``external_ids`` Chat2Desk already holds for the customer (id → message id)."""
        ...


class Outbox(Protocol):
    """Where replies that could not be sent go (RabbitMQ: :class:`botd.outbox.Outbox`)."""

    async def park(
        self,
        client_id: str,
        message_id: str,
        replies: tuple[Reply, ...],
        *,
        reason: str,
        route: Route | None = None,
        unsure: bool = False,
    ) -> None:
        """Keep ``replies`` to send later, behind any earlier parked replies to the customer;
        ``unsure``: the first of them may have reached Chat2Desk already."""
        ...

    async def dead_letter(
        self, client_id: str, message_id: str, text: str, *, reason: str, attempts: int
    ) -> None:
        """Give up on ``text`` and record it with the reason in the dead-letter queue."""
        ...


class Timers(Protocol):
    """Durable dialog timers. The daemon's (:class:`botd.timers.Timers`) are kept in Redis by the
    commit of the state they are set for; :class:`botd.memory.MemoryTimers` records them at once."""

    async def schedule(self, client_id: str, kind: TimerKind, version: int) -> DueTimer | None:
        """Fire a ``kind`` timer for the customer later, valid only at state ``version``. A
        :class:`DueTimer` returned is for the commit of that state to keep (nothing fires if it
        is dropped); None: it is kept already."""
        ...
