"""The one consume loop: every queue botd consumes is served by a :class:`QueueWorker`.

Users: the shard queues (:class:`botd.consumer.ShardConsumers`, one worker per shard), the
outbox retrier (:class:`botd.outbox.OutboxRetrier`) and the timer router
(:class:`botd.timers.TimerRouter`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from botd.broker.connection import Connection, Delivery, Subscription
from botd.errors import TransientError

log = logging.getLogger("botd.broker")

RESUBSCRIBE_BACKOFF_MIN_SECONDS = 0.2
RESUBSCRIBE_BACKOFF_MAX_SECONDS = 5.0


class QueueWorker:
    """Consumes one queue for as long as it runs: waits for the broker, subscribes, hands each
    delivery to ``handle`` (which acks or nacks it), and subscribes again with capped backoff
    (0.2 s doubling up to ``backoff_max_seconds``) when the channel or connection is lost.
    :meth:`stop_taking` ends it between deliveries.

    ``on_subscribed(True)`` is called once subscribed, ``on_subscribed(False)`` when that
    subscription ends; warnings go to ``logger``.
    """

    def __init__(
        self,
        broker: Connection,
        queue: str,
        handle: Callable[[Subscription, Delivery], Awaitable[None]],
        *,
        prefetch: int,
        name: str,
        backoff_max_seconds: float = RESUBSCRIBE_BACKOFF_MAX_SECONDS,
        on_subscribed: Callable[[bool], None] | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handle = handle
        self._prefetch = prefetch
        self._name = name
        self._backoff_max = backoff_max_seconds
        self._on_subscribed = on_subscribed
        self._log = logger
        self._stopping = False
        self._releasing = False
        self._release_delay = 0.0
        self._wait_scope: trio.CancelScope | None = None
        self._subscribe_args: dict[str, Any] = {}
        self.releases = 0

    def subscribe_with(self, **arguments: Any) -> None:
        """Consumer arguments for the next subscriptions (e.g. ``x-priority``)."""
        self._subscribe_args = dict(arguments)

    def release(self, *, delay_seconds: float) -> None:
        """Give the queue up after the delivery being handled, for ``delay_seconds``, then
        subscribe again: a consumer waiting on a single-active-consumer queue takes it over
        meanwhile (botd.home_shards). Unacked prefetched deliveries go back to the queue when
        the channel closes, ahead of later ones, so the new consumer keeps each customer's order.
        """
        if self._stopping or self._releasing:
            return
        self._releasing = True
        self._release_delay = delay_seconds
        self.releases += 1
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def stop_taking(self) -> None:
        """Take no more deliveries; the one being handled finishes."""
        self._stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def _subscribed(self, subscribed: bool) -> None:
        if self._on_subscribed is not None:
            self._on_subscribed(subscribed)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Consume until :meth:`stop_taking`; report started once first subscribed."""
        started = False
        backoff = RESUBSCRIBE_BACKOFF_MIN_SECONDS
        while not self._stopping:
            with trio.CancelScope() as self._wait_scope:
                await self._broker.wait_connected()
            if self._stopping:
                break
            try:
                async with self._broker.subscribe(
                    self._queue, prefetch=self._prefetch, arguments=self._subscribe_args
                ) as sub:
                    self._subscribed(True)
                    try:
                        backoff = RESUBSCRIBE_BACKOFF_MIN_SECONDS
                        if not started:
                            started = True
                            task_status.started()
                        await self._take(sub)
                    finally:
                        if not self._releasing:
                            self._subscribed(False)
                if self._releasing and not self._stopping:
                    # given up on purpose: stay away while the waiting consumer takes over
                    with trio.CancelScope() as self._wait_scope:
                        await trio.sleep(self._release_delay)
                    self._releasing = False
                    continue
            except TransientError as exc:
                if self._stopping:
                    break
                self._log.warning("%s: %s; resubscribing in %.1fs", self._name, exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)
        if not started:
            task_status.started()

    async def _take(self, sub: Subscription) -> None:
        """Handle deliveries one at a time until stopped; TransientError when the channel ends."""
        while not self._stopping and not self._releasing:
            delivery: Delivery | None = None
            with trio.CancelScope() as self._wait_scope:
                delivery = await sub.receive()
            if delivery is None:
                if self._stopping or self._releasing:
                    return
                raise TransientError("channel closed")
            await self._handle(sub, delivery)
