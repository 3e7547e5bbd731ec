"""The daemon: build the parts, then run them in one nursery (docs/design.md §2).

:func:`open_components` opens the resources in order — the asyncio loop thread, PostgreSQL,
Redis, RabbitMQ, the Chat2Desk client — without waiting for any service, closes them in reverse,
and hands them to :func:`build`, which only constructs: the sender, outbox, timers, processor,
workers, health monitor, metrics and the web app, as one frozen :class:`Components`.

:func:`serve` runs them: the Hypercorn server first (the webhook answers whatever is down: 503
until RabbitMQ is up), then in the background the broker's connection keeper and the workers
(the schema check, then one consumer per shard, the outbox retrier, the timer router), then —
once the workers run, or after ``daemon.ready_wait_seconds`` — one health check, ``READY=1`` and
the health monitor loop. The health monitor is the one source for ``/ready``, the systemd STATUS
line and the connection and queue-depth gauges; its watchdog pings stop only for a hung process.

Shutdown (``stop`` set, e.g. by SIGTERM): the webhook answers 503, the workers stop taking
messages, in-flight messages get ``daemon.shutdown_timeout_seconds`` to finish (the rest stay
unacked and are redelivered), the server stops, connections close.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import httpx
import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from botd import dialog, gc_tuning, systemd
from botd.bridge import AsyncioBridge, open_bridge
from botd.broker import Broker, layout, open_broker
from botd.chat_api import ChatApi, Sender, open_chat_api
from botd.config import Config
from botd.consumer import Processor, ShardConsumers
from botd.errors import BotdError, TransientError
from botd.health import HealthMonitor
from botd.home_shards import HomeShards, Presence, resolve_instance
from botd.metrics import Metrics
from botd.order_events import EventRelay
from botd.order_notes import OrderNotes
from botd.order_store import OrderStore, open_order_store
from botd.outbox import Outbox, OutboxRetrier
from botd.ratelimit import RateLimiter
from botd.send_guard import SendGuards
from botd.shared_limiter import open_shared_limiter
from botd.shop_webhook import ShopWebhook, open_shop_client
from botd.state_store import StateStore, open_state_store
from botd.timers import TimerMover, TimerRouter, Timers
from botd.webapp import WebDeps, create_app

log = logging.getLogger("botd.daemon")

SWITCH_INTERVAL = "0.0005"


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


# ---- the parts -------------------------------------------------------------------------------


class Background(Protocol):
    """A queue worker or loop the drain stops: ``serve`` until ``stop_taking``."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    def stop_taking(self) -> None: ...


class Workers:
    """The shard consumers, the outbox retrier, the timer router and the order events (relay,
    notes, shop webhook), in a child nursery of their own so that the drain can stop and cancel
    them apart from the rest.

    They start once ``check_schema`` has passed (it retries while PostgreSQL is unreachable and
    raises SchemaError, which ends botd, on a schema it does not know); each then waits for the
    broker and subscribes. Started (and :meth:`wait_started`) means all of them are subscribed.
    """

    def __init__(
        self,
        consumers: ShardConsumers,
        retrier: OutboxRetrier,
        timer_router: TimerRouter,
        *,
        shards: int,
        check_schema: Callable[[], Awaitable[None]],
        others: tuple[Background, ...] = (),
    ) -> None:
        self._consumers = consumers
        self._retrier = retrier
        self._timer_router = timer_router
        self._others = others
        self._shards = shards
        self._check_schema = check_schema
        self._scope = trio.CancelScope()
        self._schema_scope = trio.CancelScope()
        self._stopping = False
        self._started = trio.Event()
        self._done = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                with self._schema_scope:
                    await self._check_schema()
                if self._stopping:
                    return
                async with trio.open_nursery() as nursery:
                    for shard in range(self._shards):
                        await nursery.start(self._consumers.serve_shard, shard)
                    await nursery.start(self._retrier.serve)
                    await nursery.start(self._timer_router.serve)
                    for other in self._others:
                        await nursery.start(other.serve)
                    self._started.set()
                    task_status.started()
        finally:
            self._done.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    async def drain(self, *, timeout_seconds: float) -> None:
        """Stop taking deliveries, give those in flight ``timeout_seconds``, then cancel them."""
        self._stopping = True
        self._schema_scope.cancel()
        self._consumers.stop_taking()
        self._retrier.stop_taking()
        self._timer_router.stop_taking()
        for other in self._others:
            other.stop_taking()
        with trio.move_on_after(timeout_seconds):
            await self._done.wait()
        if not self._done.is_set():
            log.warning("drain deadline passed; unfinished messages stay unacked for redelivery")
        self._scope.cancel()

    async def wait_stopped(self) -> None:
        await self._done.wait()


class WebServer:
    """Hypercorn serving the web app until :meth:`stop`; started reports the bound URLs."""

    def __init__(self, app: QuartTrio, config: hypercorn.config.Config) -> None:
        self._app = app
        self._config = config
        self._stop = trio.Event()

    async def serve(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await hypercorn.trio.serve(
            self._app, self._config, shutdown_trigger=self._stop.wait, task_status=task_status
        )

    def stop(self) -> None:
        self._stop.set()


@dataclass(frozen=True, slots=True)
class Components:
    """The built daemon, not yet running; :func:`serve` starts the parts that have ``serve``."""

    config: Config
    bridge: AsyncioBridge
    broker: Broker
    store: StateStore
    orders: OrderStore
    limiter: RateLimiter
    sender: Sender
    outbox: Outbox
    timers: Timers
    mover: TimerMover
    processor: Processor
    consumers: ShardConsumers
    workers: Workers
    health: HealthMonitor
    metrics: Metrics
    server: WebServer
    relay: EventRelay
    notes: OrderNotes
    shop: ShopWebhook | None

    def statistics(self) -> dict[str, Any]:
        """What the metrics read at scrape time (connections and depths: the last health check)."""
        snap = self.health.snapshot
        return {
            "consumer": self.consumers.stats,
            "sender": self.sender.statistics(),
            "limiter": self.limiter.statistics(),
            "outbox": self.outbox.statistics(),
            "orders": self.orders.statistics(),
            "connections": snap.services,
            "depths": {"outbox": snap.outbox_depth, "dlq": snap.dlq_depth},
            "relay": self.relay.stats,
            "gc": gc_tuning.statistics(),
            "bridge_crossings": self.bridge.calls,
            "timers": {"scheduled": self.timers.scheduled, "moved": self.mover.moved},
            "destinations": {"note": self.notes.stats}
            | ({} if self.shop is None else {"shop": self.shop.stats}),
        }


def _web_app(
    config: Config, broker: Broker, store: StateStore, health: HealthMonitor, metrics: Metrics
) -> QuartTrio:
    """The web app: the webhook publishes to the shard queues and remembers signatures in
    Redis (replays, §6.1), ``/ready`` asks the monitor."""

    async def publish(shard: int, body: bytes) -> None:
        await broker.publish(
            broker.topology.shard(shard), body, timeout=config.webhook.publish_timeout_seconds
        )

    return create_app(
        WebDeps(
            config=config.webhook,
            shards=config.rabbitmq.shards,
            publish=publish,
            readiness=health.readiness,
            is_draining=lambda: health.draining,
            metrics=metrics,
            signatures=store,
        )
    )


def build(
    config: Config,
    *,
    bridge: AsyncioBridge,
    orders: OrderStore,
    store: StateStore,
    broker: Broker,
    api: ChatApi,
    limiter: RateLimiter,
    shop_client: httpx.AsyncClient | None = None,
) -> Components:
    """Construct every part from the opened resources; nothing runs and nothing does I/O."""
    shards = config.rabbitmq.shards
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
    timers = Timers(reminder_after=reminder_after, expire_after=expire_after)
    # one send-lease holder per process; a lease outlives one call to Chat2Desk (§3.2)
    guards = SendGuards(store, lease_seconds=config.chat2desk.timeout_seconds + 2.0)
    processor = Processor(
        store=store,
        orders=orders,
        sender=sender,
        outbox=outbox,
        settings=settings_of(config),
        timers=timers,
        guards=guards,
    )
    mq = config.rabbitmq
    instance = resolve_instance(mq.instance, mq.instances)
    sharing = HomeShards(
        instance=instance,
        instances=mq.instances,
        shards=shards,
        presence=Presence(store.beat_presence, store.presences),
        release=lambda shard: consumers.release(shard),
        home_ready=_nothing_to_wait_for,
    )
    consumers = ShardConsumers(broker, processor, prefetch=mq.prefetch, home=sharing.home)
    retrier = OutboxRetrier(broker, outbox, store, sender, guards)
    relay = EventRelay(orders, broker, config)
    orders.on_change = relay.wake
    notes = OrderNotes(broker, store, sender, config)
    shop = None
    if config.shop_webhook.url and shop_client is not None:
        shop = ShopWebhook(broker, store, config.shop_webhook, shop_client)
    mover = TimerMover(broker, store)
    workers = Workers(
        consumers,
        retrier,
        TimerRouter(broker),
        shards=shards,
        check_schema=partial(_check_schema, orders),
        others=(relay, notes, mover, sharing)
        if shop is None
        else (relay, notes, shop, mover, sharing),
    )
    health = HealthMonitor(
        bridge=bridge,
        broker=broker,
        store=store,
        orders=orders,
        consumers=consumers,
        shards=shards,
        chat2desk_refusal=lambda: sender.auth_failure,
    )
    metrics = Metrics()
    app = _web_app(config, broker, store, health, metrics)
    parts = Components(
        config=config,
        bridge=bridge,
        broker=broker,
        store=store,
        orders=orders,
        limiter=limiter,
        sender=sender,
        outbox=outbox,
        timers=timers,
        mover=mover,
        processor=processor,
        consumers=consumers,
        workers=workers,
        health=health,
        metrics=metrics,
        server=WebServer(app, _hypercorn_config(config)),
        relay=relay,
        notes=notes,
        shop=shop,
    )
    metrics.set_source(parts.statistics)
    return parts


async def _nothing_to_wait_for() -> None:
    """The home shards are subscribed before the workers' other parts start (Workers.serve)."""


async def _check_schema(orders: OrderStore) -> None:
    """Return once the schema is the one botd knows; retry while PostgreSQL is unreachable."""
    delay = 0.5
    while True:
        try:
            await orders.check_schema()
            return
        except TransientError as exc:
            log.warning("postgres not reachable yet (%s); retrying in %.1fs", exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 10.0)


@asynccontextmanager
async def open_components(config: Config) -> AsyncIterator[Components]:
    """Open the resources in order (closed in reverse) and build the parts. Nothing here waits
    for a service: the pool, the Redis client and the broker connect in the background."""
    async with (
        open_bridge() as bridge,
        open_order_store(bridge, config.postgres) as orders,
        open_state_store(
            bridge, config.redis, state_ttl_seconds=config.dialog.state_ttl_seconds
        ) as store,
        open_shared_limiter(bridge, config) as limiter,
        open_broker(bridge, config.rabbitmq, **layout(config)) as broker,
        open_chat_api(config.chat2desk, bridge) as api,
        open_shop_client(config.shop_webhook) as shop_client,
    ):
        yield build(
            config,
            bridge=bridge,
            orders=orders,
            store=store,
            broker=broker,
            api=api,
            limiter=limiter,
            shop_client=shop_client,
        )


# ---- running them --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
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
    health: HealthMonitor
    stop: Callable[[], None]
    relay: EventRelay | None = None
    notes: OrderNotes | None = None
    shop: ShopWebhook | None = None

    @property
    def draining(self) -> bool:
        return self.health.draining


async def _wait_first(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns (the others are cancelled)."""
    async with trio.open_nursery() as nursery:

        async def wait_then_cancel(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(wait_then_cancel, wait)


async def _start(nursery: trio.Nursery, parts: Components, stop: trio.Event) -> str:
    """Start the parts; return the webhook URL once ``READY=1`` is sent.

    The webhook comes first and waits for no service: it answers 503 until RabbitMQ is
    connected. The broker's connection keeper and the workers (schema check, then consumers,
    retrier, router) start in the background — ``start_soon``, as the webhook must not wait for
    them. ``READY=1`` ("serving the webhook") follows once the workers run, or after
    ``daemon.ready_wait_seconds`` with STATUS= naming what is still down, or when ``stop`` is set.
    """
    binds: list[str] = await nursery.start(parts.server.serve)
    url = binds[0]
    log.info("webhook listening on %s", url)
    systemd.notify(f"STATUS=starting: webhook {url}")
    nursery.start_soon(parts.broker.serve)
    nursery.start_soon(parts.workers.serve)
    with trio.move_on_after(parts.config.daemon.ready_wait_seconds):
        await _wait_first(parts.workers.wait_started, stop.wait)
    snap = await parts.health.check()
    status = parts.health.status_line(snap)
    (log.info if snap.healthy else log.warning)("botd ready on %s: %s", url, status)
    gc_tuning.after_startup()  # start-up objects out of the collector's way (botd.gc_tuning)
    systemd.notify(f"READY=1\nSTATUS={status}, webhook {url}")
    await nursery.start(parts.health.serve)
    return url


async def _drain(parts: Components) -> None:
    """Answer 503, let in-flight messages finish within the shutdown deadline, stop the server."""
    timeout = parts.config.daemon.shutdown_timeout_seconds
    log.info("stopping: draining in-flight messages (up to %ss)", timeout)
    systemd.notify("STOPPING=1\nSTATUS=draining")
    parts.health.draining = True
    await parts.workers.drain(timeout_seconds=timeout)
    parts.server.stop()
    await parts.workers.wait_stopped()


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
    async with open_components(config) as parts, trio.open_nursery() as nursery:
        url = await _start(nursery, parts, stop)
        task_status.started(
            Running(
                url=url,
                broker=parts.broker,
                store=parts.store,
                orders=parts.orders,
                consumers=parts.consumers,
                outbox=parts.outbox,
                sender=parts.sender,
                metrics=parts.metrics,
                health=parts.health,
                stop=stop.set,
                relay=parts.relay,
                notes=parts.notes,
                shop=parts.shop,
            )
        )
        await stop.wait()
        await _drain(parts)
        nursery.cancel_scope.cancel()
    log.info("stopped")


# ---- the process -----------------------------------------------------------------------------


def tune_runtime() -> None:
    """Process-wide tuning for threads sharing the GIL (measured: bench/bench_e2e.py).

    A thread woken by I/O waits for the GIL until the running one drops it, at the latest after
    the switch interval (5 ms by default). Under ``botd run`` the other thread is Trio's I/O
    wait, which runs only while Trio is idle (guest mode, docs/design.md §5): its wake-up should
    not wait 5 ms. With the loop in its own thread (the benchmarks' baseline), every bridge
    crossing pays it under load.
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


def _sole_botd_error(group: BaseExceptionGroup[BaseException]) -> BotdError | None:
    """The error a nursery failed with, when it is one of botd's own (e.g. SchemaError) and the
    only one: the CLI then reports it as such (exit 1 naming the fix), not as a traceback."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and isinstance(leaves[0], BotdError):
        return leaves[0]
    return None


async def run(config: Config) -> None:
    """``botd run``: serve until SIGTERM or SIGINT; a second signal exits at once."""
    tune_runtime()
    try:
        await _run(config)
    except BaseExceptionGroup as group:
        if (error := _sole_botd_error(group)) is None:
            raise
        raise error from None


async def _run(config: Config) -> None:
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
