"""The health monitor: service checks, systemd STATUS= lines and the watchdog (sd_notify).

Every ``interval`` seconds it checks RabbitMQ (connected, every shard consumer subscribed),
Redis and PostgreSQL (a ping each), the asyncio loop (a bridge round trip) and the consumers
(none stuck, see :mod:`botd.liveness`); it reads the outbox and DLQ depths and sends
``STATUS=ready: 8 shards, outbox 0, dlq 0`` (or ``degraded (postgres): …``).

The watchdog is for a hung process, not for an outage elsewhere: a loop of its own sends
``WATCHDOG=1`` every ``min(interval, WATCHDOG_USEC / 2)`` while the process is responsive — the
Trio loop runs it, the asyncio loop answers a round trip, and no shard has gone ``stuck_after``
seconds without progress while not waiting on purpose — however long RabbitMQ, Redis or
PostgreSQL stay down (STATUS= and ``/ready`` say so meanwhile). It does not wait for the service
checks, so a slow or unreachable service cannot delay a ping. systemd restarts botd when pings
stop for ``WatchdogSec``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from botd import systemd
from botd.bridge import AsyncioBridge
from botd.broker import Broker
from botd.consumer import ShardConsumers
from botd.errors import TransientError
from botd.order_store import OrderStore
from botd.state_store import StateStore

log = logging.getLogger("botd.health")


async def _noop() -> None:
    return None


@dataclass(slots=True)
class HealthSnapshot:
    services: dict[str, bool] = field(default_factory=dict)
    outbox_depth: int | None = None
    dlq_depth: int | None = None
    stuck_shards: tuple[int, ...] = ()
    checked_at: float = 0.0

    @property
    def healthy(self) -> bool:
        return all(self.services.values()) and not self.stuck_shards


class HealthMonitor:
    def __init__(
        self,
        *,
        bridge: AsyncioBridge,
        broker: Broker,
        store: StateStore,
        orders: OrderStore,
        consumers: ShardConsumers,
        shards: int,
        chat2desk_refusal: Callable[[], str] = str,
        interval: float = 5.0,
        stuck_after: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bridge = bridge
        self._broker = broker
        self._store = store
        self._orders = orders
        self._consumers = consumers
        self._shards = shards
        # why Chat2Desk refuses botd's token ("" while it works): replies wait in the outbox
        self._chat2desk_refusal = chat2desk_refusal
        self._interval = interval
        self._stuck_after = stuck_after
        self._clock = clock
        self.snapshot = HealthSnapshot()  # the last check: also the metrics' connection gauges
        self.draining = False  # set by the daemon's drain: /ready and the webhook answer 503

    async def _loop_alive(self) -> bool:
        try:
            with trio.fail_after(2):
                await self._bridge.run(_noop)
            return True
        except (trio.TooSlowError, TransientError):
            return False

    async def readiness(self) -> dict[str, bool]:
        """What ``/ready`` reports: RabbitMQ connected, every shard subscribed, Redis and
        PostgreSQL answering a ping, Chat2Desk accepting the token (the first services of
        :meth:`check`)."""
        return {
            "rabbitmq": self._broker.connected,
            "consumers": len(self._consumers.subscribed) == self._shards,
            "redis": await self._store.ping(),
            "chat2desk": not self._chat2desk_refusal(),
            "postgres": await self._orders.ping(),
        }

    async def check(self) -> HealthSnapshot:
        now = self._clock()
        services = {**await self.readiness(), "asyncio_loop": await self._loop_alive()}
        snap = HealthSnapshot(services=services, checked_at=now)
        snap.stuck_shards = self._consumers.stuck_shards(self._stuck_after)
        if self._broker.connected:
            try:
                with trio.fail_after(2):
                    snap.outbox_depth = await self._broker.queue_depth(self._broker.topology.outbox)
                    snap.dlq_depth = await self._broker.queue_depth(self._broker.topology.dlq)
            except (TransientError, trio.TooSlowError):
                pass
        self.snapshot = snap
        return snap

    def status_line(self, snap: HealthSnapshot) -> str:
        def depth(value: int | None) -> str:
            return "?" if value is None else str(value)

        if self.draining:
            head = "draining"
        elif snap.healthy:
            head = "ready"
        else:
            down = [name for name, ok in snap.services.items() if not ok]
            if snap.stuck_shards:
                down.append(f"stuck shards {','.join(map(str, snap.stuck_shards))}")
            head = "degraded (" + ", ".join(down) + ")"
        outbox, dlq = depth(snap.outbox_depth), depth(snap.dlq_depth)
        return f"{head}: {self._shards} shards, outbox {outbox}, dlq {dlq}"

    async def hung(self) -> tuple[str, ...]:
        """Why this process is hung (empty: it is responsive). Services being down is no reason:
        the asyncio loop not answering a round trip is, and so is a stuck shard."""
        reasons = []
        if not await self._loop_alive():
            reasons.append("asyncio loop not answering")
        if stuck := self._consumers.stuck_shards(self._stuck_after):
            reasons.append(f"stuck shards {','.join(map(str, stuck))}")
        return tuple(reasons)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check and report STATUS= every ``interval``; ping the watchdog when systemd asks."""
        watchdog = systemd.watchdog_interval()
        async with trio.open_nursery() as nursery:
            if watchdog:
                nursery.start_soon(self._keep_watchdog, min(self._interval, watchdog))
            task_status.started()
            last_status = ""
            while True:
                snap = await self.check()
                status = self.status_line(snap)
                if status != last_status:
                    (log.info if snap.healthy else log.warning)("health: %s", status)
                    last_status = status
                systemd.notify(f"STATUS={status}")
                await trio.sleep(self._interval)

    async def _keep_watchdog(self, period: float) -> None:
        """``WATCHDOG=1`` every ``period`` while :meth:`hung` finds nothing."""
        was: tuple[str, ...] = ()
        while True:
            reasons = await self.hung()
            if not reasons:
                systemd.notify("WATCHDOG=1")
                if was:
                    log.warning("responsive again; watchdog pings resume")
            elif reasons != was:
                log.error(
                    "hung (%s): withholding the watchdog ping; systemd restarts botd",
                    ", ".join(reasons),
                )
            was = reasons
            await trio.sleep(period)
