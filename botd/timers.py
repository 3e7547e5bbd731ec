"""Durable dialog timers: one reminder to a silent customer, then a polite close.

A timer is a message in RabbitMQ, never a sleeping task: :meth:`Timers.schedule` publishes
(confirmed) a ``reminder``/``expire`` event to the wait queue of its delay (``<prefix>.timer.wait.
<N>s``, a queue-level TTL that dead-letters into ``<prefix>.timers``). The :class:`TimerRouter`
(single active consumer) moves each fired timer into its customer's shard queue, so it is handled
in order with that customer's messages. The event carries the dialog's state version at
scheduling time: the consumer acts only if nothing happened since (a reply in the meantime makes
it stale), and the dedupe marker of its id keeps it from firing twice. Timers survive restarts
and ``kill -9`` like any queued message.
"""

from __future__ import annotations

import logging
import time

from botd.broker import Broker, Delivery, QueueWorker, Subscription
from botd.inbound import MessageKind, QueuedMessage, decode_queued, encode_queued, shard_of

log = logging.getLogger("botd.timers")


def timer_message_id(kind: str, client_id: str, version: int) -> str:
    """Deterministic id: the same timer scheduled twice is one event for the dedupe marker."""
    return f"{kind}-{client_id}-{version}"


class Timers:
    def __init__(self, broker: Broker, *, reminder_after: int, expire_after: int) -> None:
        self._broker = broker
        self.reminder_after = reminder_after
        self.expire_after = expire_after
        self.scheduled = 0

    @staticmethod
    def delays(reminder_after: int, state_ttl: int) -> tuple[int, int]:
        """(reminder delay, expiry delay after the reminder)."""
        return reminder_after, max(1, state_ttl - reminder_after)

    async def schedule(self, client_id: str, kind: str, version: int) -> None:
        delay = self.reminder_after if kind == "reminder" else self.expire_after
        event = QueuedMessage(
            message_id=timer_message_id(kind, client_id, version),
            client_id=client_id,
            text=None,
            received_at=time.time(),
            kind=MessageKind(kind),
            version=version,
        )
        await self._broker.publish(
            self._broker.topology.timer_wait(delay),
            encode_queued(event),
            timeout=self._broker.publish_timeout,
        )
        self.scheduled += 1


class TimerRouter:
    """Moves fired timers from ``<prefix>.timers`` into their customers' shard queues."""

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
