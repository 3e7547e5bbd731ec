"""The RabbitMQ connection (aiormq, on the bridged asyncio loop).

One connection per process, kept up by :meth:`Connection.serve` (reconnects with capped backoff
and re-declares the topology). With several nodes in ``rabbitmq.url`` it connects to any live one
and, when the connection is lost, fails over to the next (:mod:`botd.broker.nodes` picks which).
Publishing goes through one confirm-mode channel shared by every caller; each caller waits only
for its own confirmation (pipelined confirms, docs/design.md §9).
Each subscriber gets its own channel with a bounded prefetch; deliveries cross to Trio through a
memory channel, and ack/nack go back on that channel.

Every aiormq error is translated (:func:`translate`) into :class:`~botd.errors.TransientError`
or :class:`~botd.errors.PermanentError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiormq
import aiormq.abc
import trio
from pamqp.commands import Basic

from botd.bridge import AsyncioBridge
from botd.broker.nodes import Nodes
from botd.broker.topology import Topology
from botd.config import RabbitmqConfig
from botd.errors import PermanentError, TransientError

log = logging.getLogger("botd.broker")

# The TCP and AMQP handshake with one node. A refused connection (node down) fails at once; this
# bounds a node that accepts but never answers (frozen, or half-partitioned), so the next node
# gets its turn.
CONNECT_TIMEOUT_SECONDS = 10.0

# A publish channel that the broker nacks is replaced by a new one, at most this often. A quorum
# queue's publisher registers with the queue's leader on its channel's first publish (queues with
# ``x-overflow: reject-publish``, which at-least-once dead-lettering needs). A channel opened just
# after a node was killed, before its queues elected new leaders, stays registered with the dead
# leader, and RabbitMQ 3.10 nacks every publish on it until that node returns; a channel opened
# after the election publishes normally (measured: tests/cluster/test_rabbitmq_failover.py).
REPLACE_NACKED_CHANNEL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message delivered to a subscriber; ack or nack it through the same subscription."""

    body: bytes
    delivery_tag: int
    redelivered: bool
    headers: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    connected: bool
    connections_opened: int
    published: int
    publish_failures: int


def translate(exc: BaseException) -> BaseException:
    """botd's own error for an aiormq (or socket) error; anything else unchanged."""
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


async def close_channel(channel: aiormq.abc.AbstractChannel) -> None:
    """Close ``channel`` if it is open (asyncio side); a gone connection is not an error."""
    if not channel.is_closed:
        try:
            await channel.close()
        except Exception as exc:  # closing a channel whose connection is gone
            log.debug("closing channel: %s", exc)


class Connection:
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
        self.publish_timeout = config.publish_timeout_seconds  # outbox and timer publishes
        self.topology = Topology(
            config.queue_prefix,
            config.shards,
            delivery_limit=config.delivery_limit,
            wait_tiers=wait_tiers,
            timer_delays=timer_delays,
            quorum_initial_group_size=config.quorum_initial_group_size,
        )
        self.nodes = Nodes(config.urls)
        self.node: str | None = None  # the node connected to (``host:port``), None meanwhile
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        self._publish_channel_since = 0.0  # asyncio loop time it was opened
        self._replacing_publish_channel = False
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

    async def _aio_connect(self, url: str) -> None:
        opening = aiormq.connect(
            # the pid tells an operator (``rabbitmqctl list_connections client_properties``)
            # which process a connection belongs to
            url,
            client_properties={"connection_name": f"botd pid {os.getpid()}"},
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                connection = await opening
        except TimeoutError:
            with contextlib.suppress(Exception):
                await opening.connection.close()
            raise
        try:
            channel = await connection.channel(publisher_confirms=True)
            for queue in self.topology.declarations():
                await channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self._publish_channel = channel
        self._publish_channel_since = asyncio.get_running_loop().time()

    async def _aio_close(self) -> None:
        connection, self._connection, self._publish_channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            await connection.close()

    async def _aio_channel(self) -> aiormq.abc.AbstractChannel:
        """A new channel without confirms (asyncio side); TransientError when not connected."""
        connection = self._connection
        if connection is None or connection.is_closed:
            raise TransientError("broker not connected")
        return await connection.channel(publisher_confirms=False)

    async def connect_once(self) -> None:
        """Connect and declare once, without the reconnecting keeper (CLI tools, tests): each
        node in turn until one takes the connection; the last node's error otherwise."""
        for _ in self.nodes.urls:
            node = self.nodes.label
            try:
                await self._bridge.run(self._aio_connect, self.nodes.current)
            except Exception as exc:
                err = translate(exc)
                if isinstance(err, PermanentError) or self.nodes.failed():
                    raise err from exc
                log.warning("rabbitmq connect to %s failed, trying the next node: %s", node, err)
                continue
            break
        self.nodes.connected()
        self.node = self.nodes.label
        self._opened += 1
        self._connected.set()

    async def aclose(self) -> None:
        """Close the connection (shielded: also when the caller is being cancelled)."""
        with trio.CancelScope(shield=True):
            await self._bridge.run(self._aio_close)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection up until cancelled; report started once first connected.

        Each attempt goes to the next node (:class:`~botd.broker.nodes.Nodes`); the capped
        backoff applies only once every node has failed in a row, so a lost node is replaced
        by a live one at once.
        """
        delay = 0.2
        started = False
        try:
            while True:
                node = self.nodes.label
                try:
                    await self._bridge.run(self._aio_connect, self.nodes.current)
                except Exception as exc:
                    err = translate(exc)
                    if isinstance(err, PermanentError):
                        raise err from exc
                    self.last_error = f"{node}: {err}"
                    if not self.nodes.failed():
                        log.warning(
                            "rabbitmq connect to %s failed, trying %s: %s",
                            node,
                            self.nodes.label,
                            err,
                        )
                        continue
                    log.warning("rabbitmq connect failed, retrying in %.1fs: %s", delay, err)
                    await trio.sleep(delay)
                    delay = min(delay * 2, self._config.reconnect_max_seconds)
                    continue
                self.nodes.connected()
                self.node = node
                self._opened += 1
                delay = 0.2
                self._connected.set()
                log.info(
                    "rabbitmq connected to %s (%d shard queues declared)",
                    node,
                    self.topology.shards,
                )
                if not started:
                    started = True
                    task_status.started()
                connection = self._connection
                assert connection is not None
                await self._bridge.run(_wait_closed, connection.closing)
                self._connected = trio.Event()
                self.node = None
                self.last_error = f"connection to {node} lost"
                self.nodes.failed()  # the node that dropped us is tried last
                log.warning(
                    "rabbitmq connection lost (%s); reconnecting to %s", node, self.nodes.label
                )
                await self._bridge.run(self._aio_close)
        finally:
            self._connected = trio.Event()
            self.node = None
            await self.aclose()

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
            if isinstance(exc, aiormq.exceptions.DeliveryError) and not isinstance(
                exc,
                aiormq.exceptions.PublishError,  # returned unroutable: not the channel's fault
            ):
                await self._aio_replace_publish_channel(channel)
            raise translate(exc) from exc
        if not isinstance(confirmation, Basic.Ack):
            raise TransientError(
                f"broker did not confirm the publish ({type(confirmation).__name__})"
            )

    async def _aio_replace_publish_channel(self, nacked: aiormq.abc.AbstractChannel) -> None:
        """Publish on a new confirm channel from now on, when ``nacked`` is still the publish
        channel and older than REPLACE_NACKED_CHANNEL_SECONDS (see there for why)."""
        now = asyncio.get_running_loop().time()
        connection = self._connection
        if (
            self._publish_channel is not nacked
            or self._replacing_publish_channel
            or now - self._publish_channel_since < REPLACE_NACKED_CHANNEL_SECONDS
            or connection is None
            or connection.is_closed
        ):
            return
        self._replacing_publish_channel = True
        try:
            channel = await connection.channel(publisher_confirms=True)
        except Exception as exc:  # the connection is going: its keeper reconnects
            log.debug("opening a publish channel: %s", exc)
            return
        finally:
            self._replacing_publish_channel = False
        if self._publish_channel is not nacked:  # reconnected meanwhile
            await close_channel(channel)
            return
        self._publish_channel, self._publish_channel_since = channel, now
        log.warning("rabbitmq nacked a publish; publishing on a new channel")
        await close_channel(nacked)

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

    # ---- consuming ------------------------------------------------------------------------
    @asynccontextmanager
    async def subscribe(
        self, queue: str, *, prefetch: int, arguments: dict[str, Any] | None = None
    ) -> AsyncIterator[Subscription]:
        """Open a channel consuming ``queue`` (consumer ``arguments``, e.g. ``x-priority``);
        deliveries arrive on ``Subscription.receive``."""
        send, receive = trio.open_memory_channel[Delivery](math.inf)
        token = trio.lowlevel.current_trio_token()
        same_thread = self._bridge.same_thread

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
            if same_thread:
                deliver(item)
            else:
                token.run_sync_soon(deliver, item)

        async def open_channel() -> aiormq.abc.AbstractChannel:
            try:
                channel = await self._aio_channel()
                await channel.basic_qos(prefetch_count=prefetch)
                await channel.basic_consume(
                    queue, on_message, no_ack=False, arguments=arguments or None
                )
            except Exception as exc:
                raise translate(exc) from exc
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
                await self._bridge.run(close_channel, channel)


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

    def is_open(self) -> bool:
        """Whether the channel that delivered is still open: once it is gone, the broker has
        requeued its unacked messages (maybe to another process) and their work is not ours."""
        return not self._channel.is_closed

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
                raise translate(exc) from exc

        await self._bridge.run(call)
