"""In-memory adapters of the processor's ports (:mod:`botd.ports`), for ``botd chat`` and tests.

They keep the semantics of the real adapters — the state version's compare-and-set, dedupe
markers with their replies and a sent flag, idempotent orders, the cancel rules — without any
service, in one process. Time comes from a clock function, so a virtual clock drives the state
TTLs and the timers (:class:`MemoryTimers` only records what is due when; whoever owns the clock
fires them, through the same processor, like the daemon's timer router).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from botd.dialog import OrderDraft, TimerKind
from botd.inbound import MessageKind, QueuedMessage, text_digest
from botd.ports import (
    CancelOutcome,
    CancelResult,
    CommitResult,
    DueTimer,
    Loaded,
    Marker,
    Reply,
    Route,
    SendLease,
)

__all__ = [
    "FIRST_SENT_ID",
    "DeadLetter",
    "MemoryOrderStore",
    "MemoryOutbox",
    "MemorySender",
    "MemoryStateStore",
    "MemoryTimers",
    "OrderRow",
    "Parked",
    "ScheduledTimer",
    "timer_message_id",
    "version_ttl_seconds",
]

Clock = Callable[[], float]


@dataclass(slots=True)
class _Dialog:
    version: int
    state_json: str  # "" when idle, as in Redis
    expires_at: float | None


@dataclass(slots=True)
class _Marker:
    replies: tuple[str, ...]
    sent: bool
    expires_at: float | None


class MemoryStateStore:
    """Dialog state and dedupe markers in dicts, with the Redis store's semantics.

    ``state_ttl_seconds``/``dedupe_ttl_seconds`` (None: forever) expire a dialog and markers,
    measured on ``clock``. A customer's last version outlives the dialog for
    :func:`version_ttl_seconds` (Redis ``version:``), so a returning customer's versions go on
    from it and never repeat a timer id.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        state_ttl_seconds: float | None = None,
        dedupe_ttl_seconds: float | None = None,
    ) -> None:
        self._clock = clock
        self._state_ttl = state_ttl_seconds
        self._dedupe_ttl = dedupe_ttl_seconds
        self._dialogs: dict[str, _Dialog] = {}
        self._versions: dict[str, tuple[int, float | None]] = {}  # client → (last, expires at)
        self._markers: dict[str, _Marker] = {}
        self._own: dict[str, float | None] = {}
        self._said: dict[tuple[str, str], float] = {}  # (client, text digest) → when
        self._outbox: dict[str, list[str]] = {}
        self.commits: list[CommitResult] = []  # every commit's result, in order

    def _until(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    def _alive(self, expires_at: float | None) -> bool:
        return expires_at is None or self._clock() < expires_at

    def _dialog(self, client_id: str) -> _Dialog | None:
        dialog = self._dialogs.get(client_id)
        if dialog is not None and not self._alive(dialog.expires_at):
            del self._dialogs[client_id]
            return None
        return dialog

    def _marker(self, message_id: str) -> _Marker | None:
        marker = self._markers.get(message_id)
        if marker is not None and not self._alive(marker.expires_at):
            del self._markers[message_id]
            return None
        return marker

    def state_of(self, client_id: str) -> dict[str, Any] | None:
        """The stored state of a customer (decoded JSON), None when idle or absent."""
        dialog = self._dialog(client_id)
        if dialog is None or not dialog.state_json:
            return None
        decoded = json.loads(dialog.state_json)
        return decoded if isinstance(decoded, dict) else None

    def version_of(self, client_id: str) -> int:
        """The dialog's version, or the last one before it expired (0: none within its TTL)."""
        dialog = self._dialog(client_id)
        last, expires_at = self._versions.get(client_id, (0, None))
        if not self._alive(expires_at):
            del self._versions[client_id]
            last = 0
        return max(last, 0 if dialog is None else dialog.version)

    async def load(
        self, client_id: str, message_id: str, *, echo_digest: str | None = None
    ) -> Loaded:
        marker = self._marker(message_id)
        own = message_id in self._own and self._alive(self._own[message_id])
        # when botd said it; the processor judges the window (Redis also expires the hash)
        said = None if echo_digest is None else self._said.get((client_id, echo_digest))
        return Loaded(
            version=self.version_of(client_id),
            state=self.state_of(client_id),
            marker=None if marker is None else Marker(marker.replies, marker.sent),
            outbox_pending=len(self._outbox.get(client_id, ())),
            own_echo=own,
            echo_sent_at=said,
        )

    async def record_sending(self, client_id: str, texts: tuple[str, ...], now: float) -> None:
        for text in texts:
            self._said[(client_id, text_digest(text))] = now

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
        if timer is not None:  # MemoryTimers records its timers when scheduled
            raise ValueError("the in-memory store keeps no timers: use MemoryTimers")
        if now is not None:
            await self.record_sending(client_id, replies, now)
        if self._marker(message_id) is not None:
            result = CommitResult.DUPLICATE
        elif self.version_of(client_id) != expected_version:
            result = CommitResult.CONFLICT
        else:
            state_json = json.dumps(state, ensure_ascii=False) if state else ""
            self._dialogs[client_id] = _Dialog(
                expected_version + 1, state_json, self._until(self._state_ttl)
            )
            version_ttl = None
            if self._state_ttl is not None and self._dedupe_ttl is not None:
                version_ttl = version_ttl_seconds(self._state_ttl, self._dedupe_ttl)
            self._versions[client_id] = (expected_version + 1, self._until(version_ttl))
            self._markers[message_id] = _Marker(
                tuple(replies), False, self._until(self._dedupe_ttl)
            )
            result = CommitResult.COMMITTED
        self.commits.append(result)
        return result

    async def take_send_lease(self, lease: SendLease, ttl_seconds: float) -> tuple[float, str]:
        return 0.0, lease.holder  # one process: nobody else sends

    async def release_send_lease(self, lease: SendLease) -> None:
        return None

    async def mark_sent(
        self, message_id: str, own_ids: tuple[str, ...] = (), *, lease: SendLease | None = None
    ) -> None:
        marker = self._marker(message_id)
        if marker is not None:
            marker.sent = True
        for own in own_ids:
            if own:
                self._own[own] = self._until(self._dedupe_ttl)

    def outbox_push(self, client_id: str, batch_id: str) -> None:
        self._outbox.setdefault(client_id, []).append(batch_id)

    def outbox_done(self, client_id: str, batch_id: str) -> None:
        pending = self._outbox.get(client_id, [])
        if batch_id in pending:
            pending.remove(batch_id)


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An order as the memory store keeps it (the columns of the orders table that matter)."""

    id: int
    key: str
    client_id: str
    phone: str
    address: str
    quantity: int
    status: str = "placed"  # placed, confirmed, delivering, delivered, cancelled

    def public(self) -> dict[str, Any]:
        """The order as ``botd chat`` prints it."""
        return {
            "id": self.id,
            "phone": self.phone,
            "address": self.address,
            "quantity": self.quantity,
            "status": self.status,
        }


class MemoryOrderStore:
    """Orders in a dict: ids from 1, one order per idempotency key, the cancel rules of the
    PostgreSQL store (placed → cancelled; cancelled → already; moved on → too late)."""

    def __init__(self) -> None:
        self._by_key: dict[str, OrderRow] = {}
        self._ids = itertools.count(1)

    @property
    def rows(self) -> tuple[OrderRow, ...]:
        """Every order, oldest first."""
        return tuple(sorted(self._by_key.values(), key=lambda row: row.id))

    def by_id(self, order_id: int) -> OrderRow | None:
        return next((row for row in self._by_key.values() if row.id == order_id), None)

    async def place(self, draft: OrderDraft, *, timeout: float = 10.0) -> int:
        row = self._by_key.get(draft.idempotency_key)
        if row is None:
            row = OrderRow(
                id=next(self._ids),
                key=draft.idempotency_key,
                client_id=draft.client_id,
                phone=draft.phone,
                address=draft.address,
                quantity=draft.quantity,
            )
            self._by_key[draft.idempotency_key] = row
        return row.id

    async def cancel(self, key: str, *, timeout: float = 10.0) -> CancelResult:
        row = self._by_key.get(key)
        if row is None:
            return CancelResult(CancelOutcome.NOT_FOUND, None)
        if row.status == "placed":
            self._by_key[key] = dataclasses.replace(row, status="cancelled")
            return CancelResult(CancelOutcome.CANCELLED, row.id)
        if row.status == "cancelled":
            return CancelResult(CancelOutcome.ALREADY_CANCELLED, row.id)
        return CancelResult(CancelOutcome.TOO_LATE, row.id)

    def set_status(self, order_id: int, status: str) -> None:
        """The shop moves an order on (confirmed, delivering, delivered)."""
        row = self.by_id(order_id)
        if row is None:
            raise KeyError(order_id)
        self._by_key[row.key] = dataclasses.replace(row, status=status)


FIRST_SENT_ID = 9_000_000_001


class MemorySender:
    """Records every reply (and prints it to ``out`` as ``bot> …``); returns numeric message
    ids (from :data:`FIRST_SENT_ID`), as Chat2Desk does, so an ``outbox`` echo can name one.

    Exceptions put in ``failures`` are raised by the next sends, one each (to test the outbox).
    """

    def __init__(self, out: TextIO | None = None, *, prefix: str = "bot> ") -> None:
        self._out = out
        self._prefix = prefix
        self._ids = itertools.count(FIRST_SENT_ID)
        self.sent: list[tuple[str, str]] = []  # (client_id, text)
        self.failures: list[Exception] = []
        self._by_external: dict[tuple[str, str], str] = {}  # (client, external id) → message id

    def texts_for(self, client_id: str) -> list[str]:
        return [text for cid, text in self.sent if cid == client_id]

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
        if guard is not None:
            await guard()
        if unsure and external_id is not None:
            found = await self.find_sent(client_id, (external_id,))
            if external_id in found:
                return found[external_id]
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((client_id, text))
        if self._out is not None:
            print(f"{self._prefix}{text}", file=self._out, flush=True)
        message_id = str(next(self._ids))
        if external_id is not None:
            self._by_external[(client_id, external_id)] = message_id
        return message_id

    async def find_sent(
        self,
        client_id: str,
        external_ids: tuple[str, ...],
        *,
        guard: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, str]:
        return {
            e: self._by_external[(client_id, e)]
            for e in external_ids
            if (client_id, e) in self._by_external
        }


@dataclass(frozen=True, slots=True)
class Parked:
    client_id: str
    message_id: str
    texts: tuple[str, ...]
    reason: str
    external_ids: tuple[str | None, ...] = ()
    unsure: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    client_id: str
    message_id: str
    text: str
    reason: str
    attempts: int


class MemoryOutbox:
    """Records parked batches and dead letters; a parked batch counts as pending for its
    customer in ``store`` (so later replies queue behind it) until :meth:`done`."""

    def __init__(self, store: MemoryStateStore | None = None) -> None:
        self._store = store
        self._batches = itertools.count(1)
        self.parked: list[tuple[str, Parked]] = []  # (batch id, batch)
        self.dead: list[DeadLetter] = []

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
        batch_id = f"{message_id}.{next(self._batches)}"
        if self._store is not None:
            self._store.outbox_push(client_id, batch_id)
        texts = tuple(r.text for r in replies)
        ids = tuple(r.external_id for r in replies)
        self.parked.append((batch_id, Parked(client_id, message_id, texts, reason, ids, unsure)))

    def done(self, batch_id: str) -> None:
        """The batch went out (what the outbox retrier does after sending it)."""
        for known, batch in self.parked:
            if known == batch_id and self._store is not None:
                self._store.outbox_done(batch.client_id, batch_id)

    async def dead_letter(
        self, client_id: str, message_id: str, text: str, *, reason: str, attempts: int
    ) -> None:
        self.dead.append(DeadLetter(client_id, message_id, text, reason, attempts))


def version_ttl_seconds(state_ttl_seconds: float, dedupe_ttl_seconds: float) -> float:
    """:func:`botd.state_store.version_ttl_seconds` (a test keeps the two equal)."""
    return state_ttl_seconds + 24 * 3600 + dedupe_ttl_seconds


def timer_message_id(kind: str, client_id: str, version: int) -> str:
    """The id :mod:`botd.timers` gives a timer (a test keeps the two equal)."""
    return f"{kind}-{client_id}-{version}"


@dataclass(frozen=True, slots=True)
class ScheduledTimer:
    due: float
    event: QueuedMessage


class MemoryTimers:
    """Records each scheduled timer with the time it comes due on ``clock``.

    The delays are those of :meth:`botd.timers.Timers.delays`: the reminder ``reminder_after``
    seconds after the state was committed, the close ``expire_after`` seconds after the reminder.
    """

    def __init__(self, clock: Clock, *, reminder_after: float, expire_after: float) -> None:
        self._clock = clock
        self.reminder_after = reminder_after
        self.expire_after = expire_after
        self._order = itertools.count()
        self._pending: list[tuple[float, int, QueuedMessage]] = []
        self.scheduled: list[ScheduledTimer] = []  # everything ever scheduled, in order

    async def schedule(self, client_id: str, kind: TimerKind, version: int) -> DueTimer | None:
        now = self._clock()
        delay = self.reminder_after if kind == TimerKind.REMINDER else self.expire_after
        due = now + delay
        event = QueuedMessage(
            message_id=timer_message_id(str(kind), client_id, version),
            client_id=client_id,
            text=None,
            received_at=due,  # when it reaches the customer's shard queue
            kind=MessageKind(str(kind)),
            version=version,
        )
        self._pending.append((due, next(self._order), event))
        self.scheduled.append(ScheduledTimer(due, event))
        return None

    def next_due(self) -> float | None:
        """When the earliest pending timer comes due, or None."""
        return min((due for due, _, _ in self._pending), default=None)

    def pop_due(self, until: float) -> ScheduledTimer | None:
        """Take the earliest timer due at or before ``until`` (in scheduling order on ties)."""
        due_now = [entry for entry in self._pending if entry[0] <= until]
        if not due_now:
            return None
        entry = min(due_now, key=lambda e: (e[0], e[1]))
        self._pending.remove(entry)
        return ScheduledTimer(entry[0], entry[2])

    @property
    def pending(self) -> tuple[ScheduledTimer, ...]:
        return tuple(ScheduledTimer(d, e) for d, _, e in sorted(self._pending, key=lambda e: e[:2]))
