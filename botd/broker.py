"""RabbitMQ adapter (aiormq, on the bridged asyncio loop).

One connection per process, kept up by :meth:`Broker.serve` (reconnects with capped backoff and
re-declares the topology). Publishing goes through one confirm-mode channel shared by every caller;
each caller waits only for its own confirmation (pipelined confirms, docs/design.md §9). Each
subscriber gets its own channel with a bounded prefetch; deliveries cross to Trio through a memory
channel.

The only module besides :mod:`botd.bridge` that sees aiormq; every aiormq error is translated into
:class:`~botd.errors.TransientError` or :class:`~botd.errors.PermanentError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiormq
import aiormq.abc
import trio
from pamqp.commands import Basic

from botd.bridge import AsyncioBridge
from botd.config import Config, RabbitmqConfig
from botd.errors import PermanentError, TransientError

log = logging.getLogger("botd.broker")

QUEUE_TTL_MS = 24 * 3600 * 1000  # customer messages (docs/design.md §3.1)
OUTBOX_TTL_MS = 7 * 24 * 3600 * 1000  # parked replies; expired ones are dead-lettered


@dataclass(frozen=True, slots=True)
class Topology:
    """Queue names for one deployment, derived from ``rabbitmq.queue_prefix``."""

    prefix: str
    shards: int

    def shard(self, index: int) -> str:
        return f"{self.prefix}.shard.{index}"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}.outbox"

    def outbox_wait(self, seconds: int) -> str:
        return f"{self.prefix}.outbox.wait.{seconds}s"

    @property
    def timers(self) -> str:
        return f"{self.prefix}.timers"

    def timer_wait(self, seconds: int) -> str:
        return f"{self.prefix}.timer.wait.{seconds}s"


def wait_tiers(max_backoff_seconds: int) -> tuple[int, ...]:
    """The outbox's backoff delays: 1, 2, 4, … capped at ``max_backoff_seconds``."""
    tiers = {
        min(2**k, max_backoff_seconds) for k in range(32) if 2 ** (k - 1) < max_backoff_seconds
    }
    return tuple(sorted(tiers | {max_backoff_seconds}))


def layout(config: Config) -> dict[str, tuple[int, ...]]:
    """The delay queues a deployment needs, as keyword arguments of :func:`open_broker`."""
    reminder = config.dialog.reminder_after_seconds
    return {
        "wait_tiers": wait_tiers(config.outbox.max_backoff_seconds),
        "timer_delays": tuple(
            sorted({reminder, max(1, config.dialog.state_ttl_seconds - reminder)})
        ),
    }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message delivered to a subscriber; ack or nack it through the same subscription."""

    body: bytes
    delivery_tag: int
    redelivered: bool
    headers: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Browsed:
    """A message fetched (not yet acked) from a queue by :meth:`Broker.browse`."""

    id: str
    body: bytes
    headers: dict[str, Any]
    delivery_tag: int
    timestamp: float | None


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    connected: bool
    connections_opened: int
    published: int
    publish_failures: int


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity | aiormq.exceptions.PublishError):
        return TransientError(f"broker could not route the message: {exc}")
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return PermanentError(f"queue exists with other arguments: {exc}")
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return TransientError(f"broker refused the message: {exc}")
    if isinstance(
        exc,
        aiormq.exceptions.AMQPError
        | aiormq.exceptions.ChannelInvalidStateError
        | ConnectionError
        | OSError
        | asyncio.TimeoutError
        | RuntimeError,
    ):
        return TransientError(f"broker unavailable: {type(exc).__name__}: {exc}")
    return exc


async def _wait_closed(fut: asyncio.Future[Any]) -> None:
    # asyncio.wait never cancels the future it waits for (plain ``await fut`` would).
    await asyncio.wait([fut])


class Broker:
    """The process's single RabbitMQ connection, its publish channel and its subscriptions."""

    def __init__(
        self,
        bridge: AsyncioBridge,
        config: RabbitmqConfig,
        *,
        wait_tiers: tuple[int, ...] = (1,),
        timer_delays: tuple[int, ...] = (),
    ) -> None:
        self._bridge = bridge
        self._config = config
        self._wait_tiers = wait_tiers
        self._timer_delays = timer_delays
        self.topology = Topology(config.queue_prefix, config.shards)
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        self._connected = trio.Event()
        self._opened = 0
        self._published = 0
        self._publish_failures = 0
        self.last_error: str | None = None

    # ---- connection lifecycle -------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def statistics(self) -> BrokerStatistics:
        return BrokerStatistics(
            self.connected, self._opened, self._published, self._publish_failures
        )

    async def _aio_connect(self) -> None:
        connection = await aiormq.connect(
            self._config.url, client_properties={"connection_name": "botd"}
        )
        try:
            channel = await connection.channel(publisher_confirms=True)
            await self._aio_declare(channel)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self._publish_channel = channel

    async def _aio_declare(self, channel: aiormq.abc.AbstractChannel) -> None:
        t = self.topology
        quorum: dict[str, Any] = {"x-queue-type": "quorum"}
        await channel.queue_declare(t.dlq, durable=True, arguments=quorum)
        dead_letter: dict[str, Any] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": t.dlq,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        for i in range(t.shards):
            await channel.queue_declare(
                t.shard(i),
                durable=True,
                arguments={
                    **quorum,
                    **dead_letter,
                    "x-single-active-consumer": True,
                    "x-delivery-limit": self._config.delivery_limit,
                    "x-message-ttl": QUEUE_TTL_MS,
                },
            )
        await channel.queue_declare(
            t.outbox,
            durable=True,
            arguments={
                **quorum,
                **dead_letter,
                "x-single-active-consumer": True,
                "x-message-ttl": OUTBOX_TTL_MS,
            },
        )
        for seconds in self._wait_tiers:
            await channel.queue_declare(
                t.outbox_wait(seconds),
                durable=True,
                arguments={
                    **quorum,
                    **dead_letter,
                    "x-dead-letter-routing-key": t.outbox,
                    "x-message-ttl": seconds * 1000,
                },
            )
        await channel.queue_declare(
            t.timers,
            durable=True,
            arguments={**quorum, **dead_letter, "x-single-active-consumer": True},
        )
        for seconds in self._timer_delays:
            await channel.queue_declare(
                t.timer_wait(seconds),
                durable=True,
                arguments={
                    **quorum,
                    **dead_letter,
                    "x-dead-letter-routing-key": t.timers,
                    "x-message-ttl": seconds * 1000,
                },
            )

    async def _aio_close(self) -> None:
        connection, self._connection, self._publish_channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            await connection.close()

    async def connect_once(self) -> None:
        """Connect and declare once, without the reconnecting keeper (CLI tools, tests)."""
        try:
            await self._bridge.run(self._aio_connect)
        except Exception as exc:
            raise _translate(exc) from exc
        self._opened += 1
        self._connected.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection up until cancelled; report started once first connected."""
        delay = 0.2
        started = False
        try:
            while True:
                try:
                    await self._bridge.run(self._aio_connect)
                except Exception as exc:
                    err = _translate(exc)
                    if isinstance(err, PermanentError):
                        raise err from exc
                    self.last_error = str(err)
                    log.warning("rabbitmq connect failed, retrying in %.1fs: %s", delay, err)
                    await trio.sleep(delay)
                    delay = min(delay * 2, self._config.reconnect_max_seconds)
                    continue
                self._opened += 1
                delay = 0.2
                self._connected.set()
                log.info("rabbitmq connected (%d shard queues declared)", self.topology.shards)
                if not started:
                    started = True
                    task_status.started()
                connection = self._connection
                assert connection is not None
                await self._bridge.run(_wait_closed, connection.closing)
                self._connected = trio.Event()
                self.last_error = "connection lost"
                log.warning("rabbitmq connection lost; reconnecting")
                await self._bridge.run(self._aio_close)
        finally:
            self._connected = trio.Event()
            with trio.CancelScope(shield=True):
                await self._bridge.run(self._aio_close)

    # ---- publishing -----------------------------------------------------------------------
    async def _aio_publish(self, queue: str, body: bytes, headers: dict[str, Any] | None) -> None:
        channel = self._publish_channel
        if channel is None:
            raise TransientError("broker not connected")
        try:
            confirmation = await channel.basic_publish(
                body,
                routing_key=queue,
                properties=aiormq.spec.Basic.Properties(
                    delivery_mode=2,
                    content_type="application/json",
                    headers=headers,
                    timestamp=datetime.now(UTC),
                ),
                mandatory=True,
            )
        except Exception as exc:
            raise _translate(exc) from exc
        if not isinstance(confirmation, Basic.Ack):
            raise TransientError(
                f"broker did not confirm the publish ({type(confirmation).__name__})"
            )

    async def publish(
        self, queue: str, body: bytes, *, timeout: float, headers: dict[str, Any] | None = None
    ) -> None:
        """Publish a persistent message and return once the broker confirmed it.

        Raises TransientError when not connected, refused, or not confirmed within ``timeout``.
        """
        if not self.connected:
            self._publish_failures += 1
            raise TransientError("broker not connected")
        try:
            with trio.fail_after(timeout):
                await self._bridge.run(self._aio_publish, queue, body, headers)
        except trio.TooSlowError:
            self._publish_failures += 1
            raise TransientError(f"broker did not confirm within {timeout}s") from None
        except TransientError:
            self._publish_failures += 1
            raise
        self._published += 1

    # ---- administration -------------------------------------------------------------------
    def queue_names(self) -> list[str]:
        t = self.topology
        return [
            *(t.shard(i) for i in range(t.shards)),
            t.outbox,
            *(t.outbox_wait(s) for s in self._wait_tiers),
            t.timers,
            *(t.timer_wait(s) for s in self._timer_delays),
            t.dlq,
        ]

    async def _on_temp_channel(self, fn: Any) -> Any:
        connection = self._connection
        if connection is None or connection.is_closed:
            raise TransientError("broker not connected")
        try:
            channel = await connection.channel(publisher_confirms=False)
            try:
                return await fn(channel)
            finally:
                if not channel.is_closed:
                    await channel.close()
        except Exception as exc:
            raise _translate(exc) from exc

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (a passive declare: exact at once, even for quorum)."""

        async def depth(channel: aiormq.abc.AbstractChannel) -> int:
            ok = await channel.queue_declare(queue, passive=True)
            return int(ok.message_count or 0)

        return int(await self._bridge.run(self._on_temp_channel, depth))

    async def delete_queues(self) -> None:
        """Delete every queue of this deployment (tests and teardown only)."""

        async def delete(channel: aiormq.abc.AbstractChannel) -> None:
            for name in self.queue_names():
                await channel.queue_delete(name)

        await self._bridge.run(self._on_temp_channel, delete)

    @asynccontextmanager
    async def browse(self, queue: str, *, limit: int) -> AsyncIterator[Browser]:
        """Fetch up to ``limit`` messages without acking them; unacked ones return on exit."""

        async def fetch() -> tuple[aiormq.abc.AbstractChannel, list[Browsed]]:
            connection = self._connection
            if connection is None or connection.is_closed:
                raise TransientError("broker not connected")
            try:
                channel = await connection.channel(publisher_confirms=False)
                found: list[Browsed] = []
                while len(found) < limit:
                    msg = await channel.basic_get(queue, no_ack=False)
                    if not isinstance(msg.delivery, aiormq.spec.Basic.GetOk):
                        break
                    props = msg.header.properties
                    stamp = props.timestamp.timestamp() if props.timestamp else None
                    found.append(
                        Browsed(
                            str(props.message_id or ""),
                            msg.body,
                            dict(props.headers or {}),
                            msg.delivery.delivery_tag or 0,
                            stamp,
                        )
                    )
            except Exception as exc:
                raise _translate(exc) from exc
            return channel, found

        channel, found = await self._bridge.run(fetch)
        try:
            yield Browser(self._bridge, channel, found)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._bridge.run(_close_channel, channel)

    async def purge(self, queue: str) -> int:
        async def purge(channel: aiormq.abc.AbstractChannel) -> int:
            ok = await channel.queue_purge(queue)
            return int(ok.message_count or 0)

        return int(await self._bridge.run(self._on_temp_channel, purge))

    # ---- consuming ------------------------------------------------------------------------
    @asynccontextmanager
    async def subscribe(self, queue: str, *, prefetch: int) -> AsyncIterator[Subscription]:
        """Open a channel consuming ``queue``; deliveries arrive on ``Subscription.receive``."""
        send, receive = trio.open_memory_channel[Delivery](math.inf)
        token = trio.lowlevel.current_trio_token()

        def deliver(item: Delivery) -> None:
            # Once the subscription is closed the broker redelivers whatever was not acked.
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                send.send_nowait(item)

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            d = message.delivery
            assert isinstance(d, aiormq.spec.Basic.Deliver)
            props = message.header.properties
            item = Delivery(
                message.body, d.delivery_tag or 0, bool(d.redelivered), dict(props.headers or {})
            )
            token.run_sync_soon(deliver, item)

        async def open_channel() -> aiormq.abc.AbstractChannel:
            connection = self._connection
            if connection is None or connection.is_closed:
                raise TransientError("broker not connected")
            try:
                channel = await connection.channel(publisher_confirms=False)
                await channel.basic_qos(prefetch_count=prefetch)
                await channel.basic_consume(queue, on_message, no_ack=False)
            except Exception as exc:
                raise _translate(exc) from exc
            channel.closing.add_done_callback(lambda _: token.run_sync_soon(send.close))
            # The broker cancels a consumer when its queue is deleted: end the subscription
            # so the consumer resubscribes instead of waiting forever.
            channel.on_consumer_cancel_callbacks.add(lambda _: token.run_sync_soon(send.close))
            return channel

        channel = await self._bridge.run(open_channel)
        subscription = Subscription(self._bridge, channel, receive)
        try:
            yield subscription
        finally:
            send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._bridge.run(_close_channel, channel)


async def _close_channel(channel: aiormq.abc.AbstractChannel) -> None:
    if not channel.is_closed:
        try:
            await channel.close()
        except Exception as exc:  # closing a channel whose connection is gone
            log.debug("closing channel: %s", exc)


class Browser:
    """Messages fetched by :meth:`Broker.browse`; ack the ones dealt with."""

    def __init__(
        self, bridge: AsyncioBridge, channel: aiormq.abc.AbstractChannel, messages: list[Browsed]
    ) -> None:
        self._bridge = bridge
        self._channel = channel
        self.messages = messages

    async def ack(self, message: Browsed) -> None:
        async def ack() -> None:
            try:
                await self._channel.basic_ack(message.delivery_tag)
            except Exception as exc:
                raise _translate(exc) from exc

        await self._bridge.run(ack)


class Subscription:
    """Deliveries from one queue on one channel; ack/nack go back on that channel."""

    def __init__(
        self,
        bridge: AsyncioBridge,
        channel: aiormq.abc.AbstractChannel,
        receive: trio.MemoryReceiveChannel[Delivery],
    ) -> None:
        self._bridge = bridge
        self._channel = channel
        self._receive = receive

    async def receive(self) -> Delivery | None:
        """The next delivery, or None once the channel has closed.

        Deliveries still buffered when the channel closed are dropped, not returned: the broker
        has already requeued them (possibly to a standby's consumer), so processing them here
        would race the new consumer for the same customer and could never be acked anyway.
        """
        if self._channel.is_closed:
            return None
        try:
            delivery = await self._receive.receive()
        except trio.EndOfChannel:
            return None
        return None if self._channel.is_closed else delivery

    async def ack(self, delivery: Delivery) -> None:
        await self._call(self._channel.basic_ack, delivery.delivery_tag)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        await self._call(self._channel.basic_nack, delivery.delivery_tag, False, requeue)

    async def _call(self, fn: Any, *args: Any) -> None:
        async def call() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                raise _translate(exc) from exc

        await self._bridge.run(call)


@asynccontextmanager
async def open_broker(
    bridge: AsyncioBridge,
    config: RabbitmqConfig,
    *,
    wait_tiers: tuple[int, ...] = (1,),
    timer_delays: tuple[int, ...] = (),
) -> AsyncIterator[Broker]:
    broker = Broker(bridge, config, wait_tiers=wait_tiers, timer_delays=timer_delays)
    try:
        yield broker
    finally:
        with trio.CancelScope(shield=True):
            await bridge.run(broker._aio_close)


class QueueWorker:
    """Consumes one queue for as long as it runs: waits for the broker, subscribes, hands each
    delivery to ``handle`` (which acks or nacks it), and subscribes again with capped backoff
    when the channel or connection is lost. :meth:`stop_taking` ends it between deliveries."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        handle: Callable[[Subscription, Delivery], Awaitable[None]],
        *,
        prefetch: int,
        name: str,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handle = handle
        self._prefetch = prefetch
        self._name = name
        self._stopping = False
        self._wait_scope: trio.CancelScope | None = None

    def stop_taking(self) -> None:
        self._stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        backoff = 0.2
        while not self._stopping:
            with trio.CancelScope() as self._wait_scope:
                await self._broker.wait_connected()
            if self._stopping:
                break
            try:
                async with self._broker.subscribe(self._queue, prefetch=self._prefetch) as sub:
                    backoff = 0.2
                    if not started:
                        started = True
                        task_status.started()
                    while not self._stopping:
                        delivery: Delivery | None = None
                        with trio.CancelScope() as self._wait_scope:
                            delivery = await sub.receive()
                        if delivery is None:
                            if self._stopping:
                                break
                            raise TransientError(f"{self._name} channel closed")
                        await self._handle(sub, delivery)
            except TransientError as exc:
                if self._stopping:
                    break
                log.warning("%s: %s; resubscribing in %.1fs", self._name, exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if not started:
            task_status.started()
