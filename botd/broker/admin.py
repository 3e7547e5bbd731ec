"""Administering the deployment's queues: counts, browse, purge, delete.

:class:`Broker` is the :class:`~botd.broker.connection.Connection` plus these operations, each on a
short-lived channel of its own. Users: the DLQ CLI (browse, ack, purge), ``botd chat --live`` and
the tests (delete the queues), the health monitor (depths of the outbox and the DLQ).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiormq
import aiormq.abc
import trio

from botd.bridge import AsyncioBridge
from botd.broker.connection import Connection, close_channel, translate

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Browsed:
    """A message fetched (not yet acked) from a queue by :meth:`Broker.browse`."""

    id: str
    body: bytes
    headers: dict[str, Any]
    delivery_tag: int
    timestamp: float | None


class Broker(Connection):
    """The process's RabbitMQ connection, with the administration of its queues."""

    def queue_names(self) -> list[str]:
        return self.topology.queue_names()

    async def _on_temp_channel(self, fn: Callable[[aiormq.abc.AbstractChannel], Awaitable[T]]) -> T:
        try:
            channel = await self._aio_channel()
            try:
                return await fn(channel)
            finally:
                if not channel.is_closed:
                    await channel.close()
        except Exception as exc:
            raise translate(exc) from exc

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (a passive declare: exact at once, even for quorum)."""

        async def depth(channel: aiormq.abc.AbstractChannel) -> int:
            ok = await channel.queue_declare(queue, passive=True)
            return int(ok.message_count or 0)

        return await self._bridge.run(self._on_temp_channel, depth)

    async def delete_queues(self) -> None:
        """Delete every queue of this deployment (tests and teardown only)."""

        async def delete(channel: aiormq.abc.AbstractChannel) -> None:
            for name in self.queue_names():
                await channel.queue_delete(name)

        await self._bridge.run(self._on_temp_channel, delete)

    async def purge(self, queue: str) -> int:
        async def purge(channel: aiormq.abc.AbstractChannel) -> int:
            ok = await channel.queue_purge(queue)
            return int(ok.message_count or 0)

        return await self._bridge.run(self._on_temp_channel, purge)

    @asynccontextmanager
    async def browse(self, queue: str, *, limit: int) -> AsyncIterator[Browser]:
        """Fetch up to ``limit`` messages without acking them; unacked ones return on exit."""

        async def fetch() -> tuple[aiormq.abc.AbstractChannel, list[Browsed]]:
            try:
                channel = await self._aio_channel()
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
                raise translate(exc) from exc
            return channel, found

        channel, found = await self._bridge.run(fetch)
        try:
            yield Browser(self._bridge, channel, found)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._bridge.run(close_channel, channel)


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
                raise translate(exc) from exc

        await self._bridge.run(ack)
