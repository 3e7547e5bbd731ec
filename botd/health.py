"""The health monitor: service checks, systemd STATUS= lines and the watchdog (sd_notify).

Every ``interval`` seconds it checks RabbitMQ (connected, every shard consumer subscribed),
Redis and PostgreSQL (a ping each), the asyncio loop (a bridge round trip) and the consumers
(none stuck on one message longer than ``stuck_after``); it reads the outbox and DLQ depths and
sends ``STATUS=ready: 8 shards, outbox 0, dlq 0``. It sends ``WATCHDOG=1`` only while the process
is healthy or has been unhealthy for less than ``grace`` seconds — a broker that cannot come back
or a hung consumer stops the pings, and systemd restarts botd.
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
    unhealthy_since: float | None = None
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
        interval: float = 5.0,
        grace: float = 120.0,
        stuck_after: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bridge = bridge
        self._broker = broker
        self._store = store
        self._orders = orders
        self._consumers = consumers
        self._shards = shards
        self._interval = interval
        self._grace = grace
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
        PostgreSQL answering a ping (the first services of :meth:`check`)."""
        return {
            "rabbitmq": self._broker.connected,
            "consumers": len(self._consumers.subscribed) == self._shards,
            "redis": await self._store.ping(),
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
        previous = self.snapshot
        if not snap.healthy:
            snap.unhealthy_since = (
                previous.unhealthy_since if previous.unhealthy_since is not None else now
            )
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

    def watchdog_ok(self, snap: HealthSnapshot) -> bool:
        if snap.healthy or snap.unhealthy_since is None:
            return True
        return self._clock() - snap.unhealthy_since < self._grace

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        watchdog = systemd.watchdog_interval()
        period = min(self._interval, watchdog) if watchdog else self._interval
        task_status.started()
        last_status = ""
        while True:
            snap = await self.check()
            status = self.status_line(snap)
            message = f"STATUS={status}"
            if watchdog and self.watchdog_ok(snap):
                message += "\nWATCHDOG=1"
            elif watchdog:
                log.error("unhealthy for too long (%s); withholding the watchdog ping", status)
            if status != last_status:
                (log.info if snap.healthy else log.warning)("health: %s", status)
                last_status = status
            systemd.notify(message)
            await trio.sleep(period)
