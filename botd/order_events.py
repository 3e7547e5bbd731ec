"""Order events on their way out: the wire format, and the relay from PostgreSQL to RabbitMQ
(docs/design.md §3.10, docs/orders.md).

Every change of an order writes an ``order_events`` row in the same transaction as the change
(:mod:`botd.order_lifecycle`), so the database is the one place that says what happened. The
:class:`EventRelay` hands each unpublished row on — a publish confirmed by the broker per
destination — and only then marks it published:

- ``<prefix>.order_notes``: an internal note in the customer's Chat2Desk dialog (placed and
  cancelled orders, ``dialog.order_notes``; :mod:`botd.order_notes`);
- ``<prefix>.shop_events``: the signed webhook to the shop's system (``shop_webhook.url``;
  :mod:`botd.shop_webhook`);
- the customer's shard queue: a message to the customer when the shop sets the order to
  ``delivering`` or cancels it (``dialog.notify_status_changes``), handled in order with the
  customer's own messages and deduplicated by its id like any other.

A crash between the publishes and the mark publishes the batch again: every destination drops
an event it has already handled (a Redis marker per event id; the shard's dedupe marker), so a
change gives one note, one webhook delivery and one customer message. The relay runs after an
order change of this process at once and every ``POLL_SECONDS`` otherwise (changes made by
``botd orders set-status`` in another process).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from botd.broker import Broker, Delivery, QueueWorker, Subscription
from botd.config import Config
from botd.errors import DeliveryUnknown, TransientError
from botd.faults import crash_point
from botd.inbound import MessageKind, QueuedMessage, encode_queued, shard_of
from botd.order_lifecycle import CANCELLED, CUSTOMER, PLACED, iso_time, order_object
from botd.order_store import OrderStore
from botd.state_store import StateStore

log = logging.getLogger("botd.order_events")

KIND_HEADER = "x-botd-kind"
SHOP_EVENT_KIND = "shop_event"
NOTE_KIND = "order_note"
REASON_HEADER = "x-botd-reason"
ATTEMPTS_HEADER = "x-botd-attempts"

POLL_SECONDS = 1.0
BATCH = 100
BACKOFF_MAX_SECONDS = 10.0
# The shop's moves the customer hears about (the others are the shop's own business).
TOLD_TO_CUSTOMER = frozenset({"delivering", "cancelled"})


class OrderPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The order as the shop sees it (botd.order_lifecycle.order_object)."""

    id: int
    status: str
    phone: str
    address: str
    quantity: int
    client_id: str
    created_at: str


class Change(msgspec.Struct, frozen=True, kw_only=True, rename={"from_status": "from"}):
    """What moved: from which status (None for a new order), to which, by whom, and why."""

    from_status: str | None
    to: str
    by: str
    note: str | None = None


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One order event: the body of the shop webhook and of the note queue's messages.

    ``id`` is stable (the row's UUID) across every copy and retry: the receiver dedupes on it.
    """

    id: str
    type: str
    created: str
    order: OrderPayload
    change: Change


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(OrderEvent)


def encode_event(event: OrderEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(raw: bytes) -> OrderEvent:
    """Raises msgspec.ValidationError / DecodeError on a body that is not an order event."""
    return _decoder.decode(raw)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An ``order_events`` row waiting to be handed on, as the relay reads it."""

    row_id: int
    event: OrderEvent
    locale: str | None


def pending_event(row: tuple[Any, ...]) -> PendingEvent:
    """A row of :meth:`OrderStore.unpublished_events`."""
    row_id, event_id, type_, from_status, to_status, actor, note, created, locale = row[:9]
    order = order_object(row[9:], status=str(to_status))
    event = OrderEvent(
        id=str(event_id),
        type=str(type_),
        created=iso_time(created),
        order=OrderPayload(**order),
        change=Change(from_status=from_status, to=str(to_status), by=str(actor), note=note),
    )
    return PendingEvent(int(row_id), event, locale)


def customer_message(pending: PendingEvent, now: float) -> QueuedMessage:
    """The message that tells the customer about the shop's move (one id per event)."""
    event = pending.event
    return QueuedMessage(
        message_id=f"order-{event.id}",
        client_id=event.order.client_id,
        text=None,
        received_at=now,
        kind=MessageKind.ORDER_STATUS,
        order_id=event.order.id,
        order_status=event.change.to,
        locale=pending.locale,
    )


@dataclass(slots=True)
class RelayStatistics:
    published: dict[str, int]  # events handed on, by type
    failures: int = 0  # relay rounds that failed (PostgreSQL or RabbitMQ unreachable)
    oldest_unpublished_seconds: float = 0.0  # age of the oldest event not handed on (0: none)


class EventRelay:
    """Hands order events from PostgreSQL to their RabbitMQ queues, at least once."""

    def __init__(self, orders: OrderStore, broker: Broker, config: Config) -> None:
        self._orders = orders
        self._broker = broker
        self._notes = config.dialog.order_notes
        self._shop = bool(config.shop_webhook.url)
        self._tell_customer = config.dialog.notify_status_changes
        self._shards = config.rabbitmq.shards
        self._wake = trio.Event()
        self._stopping = False
        self._scope = trio.CancelScope()
        self.stats = RelayStatistics(published={PLACED: 0, CANCELLED: 0, "order.status_changed": 0})

    def wake(self) -> None:
        """Relay now (an order of this process changed); safe from any Trio task."""
        self._wake.set()

    def stop_taking(self) -> None:
        """Stop after the batch being handed on (an unmarked batch is sent again later)."""
        self._stopping = True
        self._wake.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = 0.5
        while not self._stopping:
            try:
                handed = await self.relay_once()
            except TransientError as exc:
                self.stats.failures += 1
                log.warning("order events wait: %s; retrying in %.1fs", exc, backoff)
                with trio.move_on_after(backoff):
                    await self._wait_stop()
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                continue
            backoff = 0.5
            if handed == BATCH:
                continue  # more are waiting
            with trio.move_on_after(POLL_SECONDS):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _wait_stop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake = trio.Event()

    async def relay_once(self) -> int:
        """Hand on one batch of unpublished events; return how many."""
        rows = await self._orders.unpublished_events(BATCH)
        now = time.time()
        self.stats.oldest_unpublished_seconds = (
            max(0.0, now - rows[0][7].timestamp()) if rows else 0.0
        )
        if not rows:
            return 0
        done: list[int] = []
        try:
            for row in rows:
                pending = pending_event(row)
                await self._hand_on(pending, now)
                done.append(pending.row_id)
                self.stats.published[pending.event.type] = (
                    self.stats.published.get(pending.event.type, 0) + 1
                )
            crash_point("after_events_handed_on")
            self.stats.oldest_unpublished_seconds = 0.0
        finally:
            if done:
                with trio.CancelScope(shield=True):
                    await self._orders.mark_published(done)
        return len(rows)

    async def _hand_on(self, pending: PendingEvent, now: float) -> None:
        event = pending.event
        topology = self._broker.topology
        timeout = self._broker.publish_timeout
        body = encode_event(event)
        if self._notes and event.type in (PLACED, CANCELLED):
            await self._broker.publish(
                topology.order_notes, body, timeout=timeout, headers={KIND_HEADER: NOTE_KIND}
            )
        if self._shop:
            await self._broker.publish(
                topology.shop_events, body, timeout=timeout, headers={KIND_HEADER: SHOP_EVENT_KIND}
            )
        if (
            self._tell_customer
            and event.change.to in TOLD_TO_CUSTOMER
            and event.change.by != CUSTOMER
        ):
            msg = customer_message(pending, now)
            shard = shard_of(msg.client_id, self._shards)
            await self._broker.publish(topology.shard(shard), encode_queued(msg), timeout=timeout)
        log.info(
            "order %s: %s (%s → %s by %s) handed on",
            event.order.id,
            event.type,
            event.change.from_status,
            event.change.to,
            event.change.by,
            extra={"order_id": str(event.order.id), "event_id": event.id},
        )


# ---- the consuming side: one worker per destination ----------------------------------------


class Refused(TransientError):
    """The destination did not take the event this time (worth another attempt)."""


class Rejected(Exception):
    """The destination will never take this event (e.g. the API refuses the request)."""


@dataclass(slots=True)
class DestinationStatistics:
    delivered: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    last_error: str = ""


class EventDestination:
    """Consumes one event queue: each event is handed to :meth:`deliver` until it succeeds,
    ``max_attempts`` attempts fail (then it goes to the DLQ, where ``botd dlq replay`` can send
    it again), or :class:`Rejected` says it never will.

    One event at a time, in order, holding the delivery while it backs off (1 s, doubling up to
    ``max_backoff_seconds``, ±25 % jitter): the shop receives ``order.placed`` before the
    ``order.cancelled`` of the same order. A Redis marker per event id, written after success,
    drops the copies the relay may publish again; an attempt interrupted by a crash or a lost
    channel is redelivered with ``unsure`` set, so :meth:`deliver` can look before sending.
    """

    destination = ""  # the marker's name: "note", "shop"
    kind = ""  # the DLQ's kind header

    def __init__(
        self,
        broker: Broker,
        store: StateStore,
        queue: str,
        *,
        max_attempts: int,
        max_backoff_seconds: float,
    ) -> None:
        self._broker = broker
        self._store = store
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff_seconds
        self.stats = DestinationStatistics()
        self._worker = QueueWorker(
            broker, queue, self._handle, prefetch=1, name=f"order events → {self.destination}"
        )
        self.serve = self._worker.serve
        self.stop_taking = self._worker.stop_taking

    async def deliver(self, event: OrderEvent, *, unsure: bool) -> bool:
        """Hand ``event`` to the destination; False when there is nothing to do for it.
        Raises :class:`Refused`/TransientError to try again, :class:`Rejected` to give up."""
        raise NotImplementedError

    def retry_delay(self, exc: Exception, attempts: int) -> float | None:
        """Seconds before the next attempt, or None to count ``attempts`` against the limit
        and back off as usual (a subclass waits out e.g. a paused sender without counting)."""
        return None

    async def _handle(self, sub: Subscription, delivery: Delivery) -> None:
        try:
            event = decode_event(delivery.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            await self._dead_letter(delivery.body, f"not an order event: {exc}", 0)
            await sub.ack(delivery)
            return
        if await self._already_done(event):
            self.stats.duplicates += 1
            await sub.ack(delivery)
            return
        unsure = bool(delivery.redelivered)
        attempts = 0
        while True:
            if not sub.is_open():
                return  # the broker redelivers it (unsure: this attempt may have gone out)
            attempts += 1
            try:
                await self.deliver(event, unsure=unsure)
                break
            except Rejected as exc:
                await self._dead_letter(delivery.body, str(exc), attempts)
                await sub.ack(delivery)
                return
            except TransientError as exc:
                self.stats.last_error = str(exc)
                wait = self.retry_delay(exc, attempts)
                if wait is None:
                    if attempts >= self._max_attempts:
                        await self._dead_letter(delivery.body, str(exc), attempts)
                        await sub.ack(delivery)
                        return
                    wait = min(2.0 ** (attempts - 1), self._max_backoff) * random.uniform(
                        0.75, 1.25
                    )
                else:
                    attempts -= 1
                unsure = unsure or isinstance(exc, DeliveryUnknown)
                self.stats.retried += 1
                log.warning(
                    "order %s event %s → %s: %s; attempt %d in %.1fs",
                    event.order.id,
                    event.id,
                    self.destination,
                    exc,
                    attempts + 1,
                    wait,
                    extra={"order_id": str(event.order.id), "event_id": event.id},
                )
                await trio.sleep(wait)
        self.stats.delivered += 1
        try:
            await self._store.mark_event_done(self.destination, event.id)
        except TransientError as exc:  # a second copy would be handed on again: at least once
            log.warning("order event %s: could not record it as done (%s)", event.id, exc)
        await sub.ack(delivery)

    async def _already_done(self, event: OrderEvent) -> bool:
        try:
            return bool(await self._store.event_done(self.destination, event.id))
        except TransientError as exc:
            log.warning("order event %s: cannot tell whether it was handed on (%s)", event.id, exc)
            return False  # at least once

    async def _dead_letter(self, body: bytes, reason: str, attempts: int) -> None:
        await self._broker.publish(
            self._broker.topology.dlq,
            body,
            timeout=self._broker.publish_timeout,
            headers={
                KIND_HEADER: self.kind,
                REASON_HEADER: reason[:500],
                ATTEMPTS_HEADER: attempts,
            },
        )
        self.stats.dead_lettered += 1
        log.error(
            "order event to %s moved to the DLQ after %d attempt(s): %s",
            self.destination,
            attempts,
            reason,
        )
