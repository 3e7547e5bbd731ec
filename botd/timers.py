"""Durable dialog timers: one reminder to a silent customer, then a polite close.

A timer is data, never a sleeping task. :meth:`Timers.schedule` only says when it is due; the
commit of the state it is set for keeps it in Redis in the same script (``timers``, a sorted set
client → due time, and ``timer_specs``, client → "kind:version"), so a state and its timer are
stored together or not at all, and a customer has at most one: a newer commit replaces it (the
older one was set for an older version and could only be stale). The :class:`TimerMover` (every
process runs one) claims the due timers, publishes each (confirmed) into its customer's shard
queue, where it is handled in order with that customer's messages, and then forgets it. A mover
killed between the claim and that point loses nothing: the claim runs out and the timer is due
again. The event carries the dialog's state version at scheduling time: the consumer acts only
if nothing happened since, and the dedupe marker of its deterministic id keeps it from firing
twice (a timer published twice is one event).

Before, each turn published its timer to a RabbitMQ wait queue; the :class:`TimerRouter` still
moves what an older botd left there (``<prefix>.timers``) into the shard queues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from botd.broker import Broker, Delivery, QueueWorker, Subscription
from botd.dialog import TimerKind
from botd.errors import TransientError
from botd.inbound import MessageKind, QueuedMessage, decode_queued, encode_queued, shard_of
from botd.ports import DueTimer
from botd.state_store import StateStore

log = logging.getLogger("botd.timers")

MOVE_INTERVAL_SECONDS = 1.0  # how often the mover looks for due timers (their lateness at most)
MOVE_BATCH = 100  # timers claimed at once


def timer_message_id(kind: str, client_id: str, version: int) -> str:
    """Deterministic id: the same timer scheduled twice is one event for the dedupe marker."""
    return f"{kind}-{client_id}-{version}"


class Timers:
    """When each kind of timer is due; the commit keeps it (see module doc)."""

    def __init__(
        self,
        *,
        reminder_after: int,
        expire_after: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reminder_after = reminder_after
        self.expire_after = expire_after
        self._clock = clock
        self.scheduled = 0

    @staticmethod
    def delays(reminder_after: int, state_ttl: int) -> tuple[int, int]:
        """(reminder delay, expiry delay after the reminder)."""
        return reminder_after, max(1, state_ttl - reminder_after)

    async def schedule(self, client_id: str, kind: TimerKind, version: int) -> DueTimer:
        delay = self.reminder_after if kind == TimerKind.REMINDER else self.expire_after
        self.scheduled += 1
        return DueTimer(TimerKind(kind), version, self._clock() + delay)


class TimerMover:
    """Moves due timers from Redis into their customers' shard queues (see module doc)."""

    def __init__(
        self,
        broker: Broker,
        store: StateStore,
        *,
        interval_seconds: float = MOVE_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = broker
        self._store = store
        self._interval = interval_seconds
        self._clock = clock
        # a claimed timer not reported moved by then is due again: longer than a publish can take
        self.claim_seconds = 2 * broker.publish_timeout + 10.0
        self._stopping = False
        self._scope = trio.CancelScope()
        self.moved = 0

    def stop_taking(self) -> None:
        """Claim no more timers; the one being published finishes or is cancelled (its claim
        runs out and it comes due again)."""
        self._stopping = True
        self._scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with self._scope:
            while not self._stopping:
                await self._broker.wait_connected()
                try:
                    moved = await self.move_due()
                except TransientError as exc:
                    log.warning("timers not moved (%s); retrying", exc)
                    moved = 0
                if moved < MOVE_BATCH:
                    await trio.sleep(self._interval)

    async def move_due(self) -> int:
        """Claim the due timers and publish each into its shard queue; how many were claimed."""
        due = await self._store.claim_due_timers(
            self._clock(), claim_seconds=self.claim_seconds, limit=MOVE_BATCH
        )
        for client_id, spec in due:
            kind, version = DueTimer.parse(spec)
            event = QueuedMessage(
                message_id=timer_message_id(str(kind), client_id, version),
                client_id=client_id,
                text=None,
                received_at=self._clock(),
                kind=MessageKind(str(kind)),
                version=version,
            )
            shard = shard_of(client_id, self._broker.topology.shards)
            await self._broker.publish(
                self._broker.topology.shard(shard),
                encode_queued(event),
                timeout=self._broker.publish_timeout,
            )
            await self._store.timer_moved(client_id, spec)
            self.moved += 1
        return len(due)


class TimerRouter:
    """Moves the timers an older botd left in the wait queues (fired into ``<prefix>.timers``)
    into their customers' shard queues."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.routed = 0
        self._worker = QueueWorker(
            broker, broker.topology.timers, self._route, prefetch=50, name="timer router"
        )
        self.stop_taking = self._worker.stop_taking
        self.serve = self._worker.serve

    async def _route(self, sub: Subscription, delivery: Delivery) -> None:
        try:
            event = decode_queued(delivery.body)
        except Exception as exc:
            log.error("timer router: malformed timer to the DLQ: %s", exc)
            await sub.nack(delivery, requeue=False)
            return
        shard = shard_of(event.client_id, self._broker.topology.shards)
        await self._broker.publish(
            self._broker.topology.shard(shard), delivery.body, timeout=self._broker.publish_timeout
        )
        await sub.ack(delivery)
        self.routed += 1
