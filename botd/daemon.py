"""The daemon's wiring: one process, one nursery (docs/design.md §2).

Resources are opened in order — the asyncio loop thread, PostgreSQL (schema checked), Redis,
RabbitMQ, the Chat2Desk client — and closed in reverse. Inside one nursery run the broker's
connection keeper, one consumer per shard, the outbox retrier and the Hypercorn server; each is
started with ``nursery.start`` and the daemon is ready only when all are.

Shutdown (``stop`` set, e.g. by SIGTERM): the webhook answers 503, consumers stop taking
messages, in-flight messages get ``daemon.shutdown_timeout_seconds`` to finish (the rest stay
unacked and are redelivered), the server stops, connections close.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

from botd import dialog, systemd
from botd.bridge import open_bridge
from botd.broker import Broker, layout, open_broker
from botd.chat_api import Sender, open_chat_api
from botd.config import Config
from botd.consumer import Processor, ShardConsumers
from botd.errors import TransientError
from botd.health import HealthMonitor
from botd.metrics import Metrics
from botd.order_store import OrderStore, open_order_store
from botd.outbox import Outbox, OutboxRetrier
from botd.ratelimit import TokenBucket
from botd.state_store import StateStore, open_state_store
from botd.timers import TimerRouter, Timers
from botd.webapp import WebDeps, create_app

log = logging.getLogger("botd.daemon")

SWITCH_INTERVAL = "0.0005"


@dataclass
class Running:
    """Handle to a started daemon (given to ``task_status.started``)."""

    url: str
    broker: Broker
    store: StateStore
    orders: OrderStore
    consumers: ShardConsumers
    outbox: Outbox
    sender: Sender
    metrics: Metrics
    stop: Callable[[], None]
    draining: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def settings_of(config: Config) -> dialog.DialogSettings:
    d = config.dialog
    return dialog.DialogSettings(
        default_region=d.default_region,
        allowed_regions=d.allowed_regions,
        default_locale=d.default_locale,
        state_ttl_seconds=d.state_ttl_seconds,
        handoff_seconds=d.handoff_seconds,
        cancel_window_seconds=d.cancel_window_seconds,
    )


async def _check_schema(orders: OrderStore) -> None:
    delay = 0.5
    while True:
        try:
            await orders.check_schema()
            return
        except TransientError as exc:
            log.warning("postgres not reachable yet (%s); retrying in %.1fs", exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _hypercorn_config(config: Config) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    host = config.webhook.host
    hc.bind = [
        f"[{host}]:{config.webhook.port}" if ":" in host else f"{host}:{config.webhook.port}"
    ]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 5.0
    # Hypercorn 0.18 applies only the keep-alive timeout to a request line that stalls half-way
    # (slow-loris), so it must not exceed the read timeout.
    hc.keep_alive_timeout = min(
        config.webhook.keep_alive_timeout_seconds, config.webhook.read_timeout_seconds
    )
    hc.h11_max_incomplete_size = config.webhook.max_header_bytes
    hc.read_timeout = int(config.webhook.read_timeout_seconds)
    return hc


def tune_runtime() -> None:
    """Process-wide tuning for two busy threads sharing the GIL (measured: bench/bench_e2e.py).

    A thread woken by I/O waits for the GIL until the other one drops it, at the latest after
    the switch interval (5 ms by default); every bridge crossing pays it under load.
    """
    sys.setswitchinterval(float(os.environ.get("BOTD_TEST_SWITCH_INTERVAL", SWITCH_INTERVAL)))


def warn_if_exposed(config: Config) -> bool:
    """Log loudly when the webhook listens beyond loopback with no authentication at all."""
    w = config.webhook
    loopback = w.host in ("127.0.0.1", "::1", "localhost") or w.host.startswith("127.")
    if loopback or w.hmac_secret or w.path_token:
        return False
    log.warning(
        "SECURITY: the webhook listens on %s without authentication; anyone who can reach it can "
        "post orders. Set BOTD_WEBHOOK_PATH_TOKEN (>= 16 random characters) and/or "
        "BOTD_WEBHOOK_HMAC_SECRET.",
        w.host,
    )
    return True


async def serve(
    config: Config,
    *,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run botd until ``stop`` is set; then drain and return."""
    dialog.validate_messages()
    warn_if_exposed(config)
    stop = trio.Event() if stop is None else stop
    metrics = Metrics()
    async with (
        open_bridge() as bridge,
        open_order_store(bridge, config.postgres) as orders,
        open_state_store(
            bridge, config.redis, state_ttl_seconds=config.dialog.state_ttl_seconds
        ) as store,
        open_broker(bridge, config.rabbitmq, **layout(config)) as broker,
        open_chat_api(config.chat2desk) as api,
    ):
        await _check_schema(orders)
        limiter = TokenBucket(config.chat2desk.requests_per_minute, config.chat2desk.burst)
        sender = Sender(api, limiter, config.chat2desk)
        outbox = Outbox(
            broker,
            store,
            max_attempts=config.outbox.max_attempts,
            max_backoff_seconds=config.outbox.max_backoff_seconds,
        )
        reminder_after, expire_after = Timers.delays(
            config.dialog.reminder_after_seconds, config.dialog.state_ttl_seconds
        )
        timers = Timers(broker, reminder_after=reminder_after, expire_after=expire_after)
        timer_router = TimerRouter(broker)
        processor = Processor(
            store=store,
            orders=orders,
            sender=sender,
            outbox=outbox,
            settings=settings_of(config),
            timers=timers,
        )
        consumers = ShardConsumers(broker, processor, prefetch=config.rabbitmq.prefetch)
        retrier = OutboxRetrier(broker, outbox, store, sender)
        shards = config.rabbitmq.shards
        draining = False
        server_stop = trio.Event()

        async def readiness() -> dict[str, bool]:
            return {
                "rabbitmq": broker.connected,
                "consumers": len(consumers.subscribed) == shards,
                "redis": await store.ping(),
                "postgres": await orders.ping(),
            }

        async def publish(shard: int, body: bytes) -> None:
            await broker.publish(
                broker.topology.shard(shard), body, timeout=config.webhook.publish_timeout_seconds
            )

        health_ref: dict[str, Any] = {}
        metrics.set_source(
            lambda: {
                "consumer": consumers.stats,
                "sender": sender.statistics(),
                "limiter": limiter.statistics(),
                "outbox": outbox.statistics(),
                "connections": {"rabbitmq": broker.connected, **health_ref.get("services", {})},
                "depths": health_ref.get("depths", {}),
            }
        )
        app = create_app(
            WebDeps(
                config=config.webhook,
                shards=shards,
                publish=publish,
                readiness=readiness,
                is_draining=lambda: draining,
                metrics=metrics,
            )
        )

        async with trio.open_nursery() as nursery:
            await nursery.start(broker.serve)
            consumers_done = trio.Event()
            consumer_scope = trio.CancelScope()

            async def run_consumers(
                *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
            ) -> None:
                try:
                    with consumer_scope:
                        async with trio.open_nursery() as cn:
                            for i in range(shards):
                                await cn.start(consumers.serve_shard, i)
                            await cn.start(retrier.serve)
                            await cn.start(timer_router.serve)
                            task_status.started()
                finally:
                    consumers_done.set()

            await nursery.start(run_consumers)
            health = HealthMonitor(
                bridge=bridge,
                broker=broker,
                store=store,
                orders=orders,
                consumers=consumers,
                shards=shards,
            )
            binds = await nursery.start(
                lambda task_status: hypercorn.trio.serve(
                    app,
                    _hypercorn_config(config),
                    shutdown_trigger=server_stop.wait,
                    task_status=task_status,
                )
            )
            url = binds[0]
            running = Running(
                url=url,
                broker=broker,
                store=store,
                orders=orders,
                consumers=consumers,
                outbox=outbox,
                sender=sender,
                metrics=metrics,
                stop=stop.set,
            )
            log.info("botd ready on %s (%d shards)", url, shards)
            health.on_check = lambda snap: health_ref.update(
                services=dict(snap.services),
                depths={"outbox": snap.outbox_depth, "dlq": snap.dlq_depth},
            )
            running.extra["health"] = health
            status = health.status_line(await health.check())
            systemd.notify(f"READY=1\nSTATUS={status}, webhook {url}")
            await nursery.start(health.serve)
            task_status.started(running)

            await stop.wait()
            log.info(
                "stopping: draining in-flight messages (up to %ss)",
                config.daemon.shutdown_timeout_seconds,
            )
            systemd.notify("STOPPING=1\nSTATUS=draining")
            draining = running.draining = health.draining = True
            consumers.stop_taking()
            retrier.stop_taking()
            timer_router.stop_taking()
            with trio.move_on_after(config.daemon.shutdown_timeout_seconds):
                await consumers_done.wait()
            if not consumers_done.is_set():
                log.warning(
                    "drain deadline passed; unfinished messages stay unacked for redelivery"
                )
            consumer_scope.cancel()
            server_stop.set()
            await consumers_done.wait()
            nursery.cancel_scope.cancel()
    log.info("stopped")


async def run(config: Config) -> None:
    """``botd run``: serve until SIGTERM or SIGINT; a second signal exits at once."""
    tune_runtime()
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if stop.is_set():
                        # Unfinished messages are unacked: the broker redelivers them.
                        log.warning("second signal (%s): exiting now", signal.Signals(signum).name)
                        logging.shutdown()
                        os._exit(1)
                    log.info("received %s", signal.Signals(signum).name)
                    stop.set()

            nursery.start_soon(watch_signals)
            await serve(config, stop=stop)
            nursery.cancel_scope.cancel()
