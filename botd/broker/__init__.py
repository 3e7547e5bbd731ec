"""RabbitMQ adapter (aiormq, on the bridged asyncio loop), in four parts:

- :mod:`~botd.broker.topology` — queue names and arguments of a deployment (pure values);
- :mod:`~botd.broker.connection` — the connection: connect and reconnect, publish with confirms,
  subscribe, ack/nack;
- :mod:`~botd.broker.admin` — :class:`Broker`, the connection plus queue administration (counts,
  browse, purge, delete);
- :mod:`~botd.broker.worker` — :class:`QueueWorker`, the one consume loop.

With :mod:`botd.bridge` the only place that sees aiormq; every aiormq error is translated into
:class:`~botd.errors.TransientError` or :class:`~botd.errors.PermanentError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from botd.bridge import AsyncioBridge
from botd.broker.admin import Broker, Browsed, Browser
from botd.broker.connection import BrokerStatistics, Connection, Delivery, Subscription
from botd.broker.topology import Topology, timer_delays, wait_tiers
from botd.broker.worker import QueueWorker
from botd.config import Config, RabbitmqConfig

__all__ = [
    "Broker",
    "BrokerStatistics",
    "Browsed",
    "Browser",
    "Connection",
    "Delivery",
    "QueueWorker",
    "Subscription",
    "Topology",
    "layout",
    "open_broker",
    "wait_tiers",
]


def layout(config: Config) -> dict[str, tuple[int, ...]]:
    """The delay queues a deployment needs, as keyword arguments of :func:`open_broker`."""
    return {
        "wait_tiers": wait_tiers(config.outbox.max_backoff_seconds),
        "timer_delays": timer_delays(
            config.dialog.reminder_after_seconds, config.dialog.state_ttl_seconds
        ),
    }


@asynccontextmanager
async def open_broker(
    bridge: AsyncioBridge,
    config: RabbitmqConfig,
    *,
    wait_tiers: tuple[int, ...] = (1,),
    timer_delays: tuple[int, ...] = (),
) -> AsyncIterator[Broker]:
    """A :class:`Broker` (not yet connected: run :meth:`~Broker.serve` or ``connect_once``),
    closed on exit."""
    broker = Broker(bridge, config, wait_tiers=wait_tiers, timer_delays=timer_delays)
    try:
        yield broker
    finally:
        await broker.aclose()
