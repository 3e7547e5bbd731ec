"""Operations: systemd notify + watchdog, graceful drain, Prometheus metrics, JSON logs, dashboard.

Every test runs the real daemon, either ``botd run`` as a subprocess (``start_botd`` gives it a
real AF_UNIX datagram socket as ``NOTIFY_SOCKET``) or the whole daemon in-process (``running``),
against the real RabbitMQ, Redis and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from botd import __version__, daemon, systemd
from botd.bridge import open_bridge
from botd.broker import Delivery, layout, open_broker
from botd.chat_api import RateLimited, Sender
from botd.config import Chat2DeskConfig, Config
from botd.consumer import ConsumerStatistics, Outcome, ShardConsumers
from botd.errors import TransientError
from botd.health import HealthMonitor
from botd.inbound import QueuedMessage, encode_queued, shard_of
from botd.order_store import open_order_store
from botd.ratelimit import TokenBucket
from botd.state_store import open_state_store
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.process import BotdProcess, start_botd
from tests.conftest import delete_queues
from tests.helpers import HAPPY_PATH, inbox_payload, post_webhook

DASHBOARD = Path(__file__).resolve().parent.parent / "ops" / "grafana-dashboard.json"
# The phone in each form the customer or botd writes it, and the street of the address.
RAW_PERSONAL_DATA = ("+996555123456", "0555 123 456", "555123456", "Токтогула")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---- helpers ---------------------------------------------------------------------------------


def parse_metrics(text: str) -> Samples:
    """``{(sample name, labels): value}`` of a Prometheus text page (parsed, not grepped)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not scraped; have {sorted({k[0] for k in samples})}"
    return samples[key]


async def scrape(client: httpx.AsyncClient, url: str) -> tuple[str, Samples]:
    response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, parse_metrics(response.text)


async def wait_delivered(fake: FakeChat2Desk, ok: Callable[[], bool], timeout: float = 20) -> None:
    """Wait (bounded) until ``ok()`` holds, re-checking at each delivery to the fake."""
    with trio.fail_after(timeout):
        while not ok():
            await fake.wait_for_deliveries(len(fake.delivered()) + 1)


async def converse(
    client: httpx.AsyncClient, url: str, fake: FakeChat2Desk, client_id: int, texts: Iterable[str]
) -> list[str]:
    """Post each text, waiting for a reply before the next; return the message ids."""
    ids = []
    for text in texts:
        before = len(fake.texts_for(client_id))
        body = inbox_payload(client_id, text)
        response = await post_webhook(client, url, body)
        assert response.status_code == 200 and response.json() == {"status": "queued"}
        ids.append(str(body["message_id"]))
        await wait_delivered(fake, partial(lambda n: len(fake.texts_for(client_id)) > n, before))
    return ids


async def wait_notifications(
    proc: BotdProcess, predicate: Callable[[str], bool], n: int = 1, timeout: float = 15
) -> list[str]:
    """Bounded polling of the subprocess's sd_notify datagrams until ``n`` match."""
    with trio.fail_after(timeout):
        while len(found := [m for m in proc.notifications if predicate(m)]) < n:
            assert proc.process.returncode is None, "\n".join(proc.lines[-30:])
            await trio.sleep(0.01)
    return found


def fields(message: str) -> dict[str, str]:
    """An sd_notify datagram as its KEY=VALUE lines."""
    return dict(line.split("=", 1) for line in message.split("\n") if "=" in line)


@contextmanager
def notify_socket(address: str) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket (``@name`` = abstract) standing in for systemd."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + address[1:] if address.startswith("@") else address)
        sock.settimeout(5)
        yield sock
    finally:
        sock.close()


def drain_socket(sock: socket.socket) -> list[str]:
    """Every datagram waiting in ``sock`` (non-blocking)."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(5)


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short directory: AF_UNIX paths are limited to 107 bytes."""
    path = tempfile.mkdtemp(prefix="botd-ops-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither this process nor its children inherit a notify socket or watchdog from outside."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


# ---- 1. systemd: sd_notify and the watchdog ------------------------------------------------


def test_notify_reaches_path_and_abstract_sockets(
    monkeypatch: pytest.MonkeyPatch, short_tmp: str, no_systemd: None
) -> None:
    assert systemd.notify("READY=1") is False  # not under systemd: a no-op
    for address in (os.path.join(short_tmp, "notify.sock"), f"@botd-test-{secrets.token_hex(6)}"):
        with notify_socket(address) as sock:
            monkeypatch.setenv("NOTIFY_SOCKET", address)
            assert systemd.notify("READY=1\nSTATUS=ready: 2 shards, outbox 0, dlq 0") is True
            assert sock.recv(4096) == b"READY=1\nSTATUS=ready: 2 shards, outbox 0, dlq 0"
            assert systemd.notify("WATCHDOG=1") is True
            assert sock.recv(4096) == b"WATCHDOG=1"
    # The socket is gone (systemd restarted?): a warning and False, never an exception.
    assert systemd.notify("WATCHDOG=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid(
    monkeypatch: pytest.MonkeyPatch, no_systemd: None
) -> None:
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    assert systemd.watchdog_interval() == 1.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 1.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert systemd.watchdog_interval() is None


async def test_daemon_notifies_ready_status_watchdog_and_stopping(
    config: Config, no_systemd: None
) -> None:
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        launched = trio.current_time()  # no ping can be older than the process
        proc = await start_botd(nursery, config, extra_env={"WATCHDOG_USEC": "2000000"})
        # With every service up, READY=1 arrives only when everything is: /ready already says so.
        ready_answer = await client.get(f"{proc.url}/ready")
        assert ready_answer.status_code == 200, ready_answer.text
        assert ready_answer.json()["status"] == "ready"
        # First the webhook listens (and says where), then READY=1.
        assert fields(proc.notifications[0]) == {"STATUS": f"starting: webhook {proc.url}"}
        ready = fields(proc.notifications[1])
        assert ready["READY"] == "1", proc.notifications
        assert ready["STATUS"] == f"ready: 2 shards, outbox 0, dlq 0, webhook {proc.url}"
        assert sum("READY=1" in m for m in proc.notifications) == 1

        # WATCHDOG_USEC=2 s → a ping (with a fresh STATUS line) about every second.
        start = trio.current_time()
        arrivals: list[float] = []
        with trio.fail_after(10):
            while len(arrivals) < 4:
                seen = sum("WATCHDOG=1" in m for m in proc.notifications)
                if seen > len(arrivals):
                    arrivals += [trio.current_time()] * (seen - len(arrivals))
                await trio.sleep(0.01)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        # In units of the interval systemd asks for (half of WATCHDOG_USEC): botd sleeps a whole
        # interval after each ping, so however slow the machine, n pings take (n - 1) intervals
        # since launch; and a typical gap must stay under WATCHDOG_USEC, when systemd kills.
        interval = 2_000_000 / 1e6 / 2
        assert arrivals[-1] - launched >= (len(arrivals) - 1) * interval, (launched, arrivals)
        assert statistics.median(gaps) < 2 * interval, gaps
        assert arrivals[-1] - start < 5.0
        pings = [fields(m) for m in proc.notifications if "WATCHDOG=1" in m]
        assert all(p == {"WATCHDOG": "1"} for p in pings), pings
        statuses = [fields(m)["STATUS"] for m in proc.notifications[2:] if "STATUS=" in m]
        assert statuses and set(statuses) == {"ready: 2 shards, outbox 0, dlq 0"}, statuses

        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    stopping = [m for m in proc.notifications if "STOPPING=1" in m]
    assert len(stopping) == 1 and fields(stopping[0])["STATUS"] == "draining", proc.notifications
    await delete_queues(config)


class _StubBroker:
    def __init__(self) -> None:
        self.connected = True
        self.topology = SimpleNamespace(outbox="outbox", dlq="dlq")

    async def queue_depth(self, queue: str) -> int:
        return 0


class _StubPing:
    def __init__(self) -> None:
        self.up = True

    async def ping(self) -> bool:
        return self.up


class _StubConsumers:
    subscribed = frozenset({0, 1})

    def __init__(self) -> None:
        self.stuck: tuple[int, ...] = ()

    def stuck_shards(self, seconds: float) -> tuple[int, ...]:
        return self.stuck


class _StubBridge:
    """Runs the call at once, or never answers while ``hung`` (an asyncio loop that hangs)."""

    def __init__(self) -> None:
        self.hung = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.hung:
            await trio.sleep_forever()
        return await fn(*args)


async def test_watchdog_pings_go_on_through_an_hours_long_outage_and_stop_only_when_hung(
    monkeypatch: pytest.MonkeyPatch,
    short_tmp: str,
    autojump_clock: trio.testing.MockClock,
    no_systemd: None,
) -> None:
    """HealthMonitor.serve on a virtual clock: RabbitMQ, Redis and PostgreSQL down for three
    hours do not stop the pings (STATUS= says what is down); an asyncio loop that does not answer
    or a stuck shard stops them, and they resume once it answers again."""
    broker, redis, postgres = _StubBroker(), _StubPing(), _StubPing()
    bridge, consumers = _StubBridge(), _StubConsumers()
    monitor = HealthMonitor(
        bridge=cast(Any, bridge),
        broker=cast(Any, broker),
        store=cast(Any, redis),
        orders=cast(Any, postgres),
        consumers=cast(Any, consumers),
        shards=2,
        interval=5.0,
        clock=trio.current_time,
    )
    address = os.path.join(short_tmp, "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")  # a ping every 5 s (half of it)
    received: list[tuple[float, dict[str, str]]] = []

    def pings(since: float, until: float = math.inf) -> list[float]:
        return [t for t, f in received if "WATCHDOG" in f and since <= t < until]

    def statuses(since: float) -> list[str]:
        return [f["STATUS"] for t, f in received if "STATUS" in f and t >= since]

    async def listen(sock: trio.socket.SocketType) -> None:
        while True:
            datagram = await sock.recv(4096)
            received.append((trio.current_time(), fields(datagram.decode())))

    with notify_socket(address) as raw:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen, trio.socket.from_stdlib_socket(raw))
            await nursery.start(monitor.serve)
            await trio.sleep(12.5)
            assert pings(0) == [0.0, 5.0, 10.0]
            assert statuses(0) == ["ready: 2 shards, outbox 0, dlq 0"] * 3

            outage = trio.current_time()
            broker.connected = redis.up = postgres.up = False
            await trio.sleep(3 * 3600)
            during = pings(outage)
            assert len(during) >= 3 * 3600 / 5 - 1, len(during)
            assert max(b - a for a, b in itertools.pairwise(during)) <= 5.0 + 1e-6
            assert set(statuses(outage)) == {
                "degraded (rabbitmq, redis, postgres): 2 shards, outbox ?, dlq ?"
            }
            assert await monitor.hung() == ()

            bridge.hung = True  # the asyncio loop stops answering: a hung process
            hung_at = trio.current_time()
            await trio.sleep(60)
            assert pings(hung_at + 5.0) == [], pings(hung_at)
            assert await monitor.hung() == ("asyncio loop not answering",)
            bridge.hung = False
            back = trio.current_time()
            await trio.sleep(12.5)
            assert len(pings(back)) >= 2

            consumers.stuck = (1,)  # a shard without progress, not waiting on purpose
            stuck_at = trio.current_time()
            await trio.sleep(60)
            assert pings(stuck_at + 5.0) == [], pings(stuck_at)
            assert await monitor.hung() == ("stuck shards 1",)
            consumers.stuck = ()
            back = trio.current_time()
            await trio.sleep(12.5)
            assert len(pings(back)) >= 2
            nursery.cancel_scope.cancel()


class _ShardQueues:
    """Stands in for the broker under ShardConsumers: one in-memory queue per shard, always
    connected; acks are recorded."""

    def __init__(self, shards: int) -> None:
        self.topology = SimpleNamespace(shards=shards, shard=lambda i: f"shard.{i}")
        self._queues = {
            f"shard.{i}": trio.open_memory_channel[Delivery](math.inf) for i in range(shards)
        }
        self.acked: list[int] = []

    def put(self, shard: int, text: str) -> None:
        message = QueuedMessage(
            message_id=str(shard), client_id=str(700 + shard), text=text, received_at=0.0
        )
        self._queues[f"shard.{shard}"][0].send_nowait(
            Delivery(encode_queued(message), shard, False, {})
        )

    async def wait_connected(self) -> None:
        await trio.lowlevel.checkpoint()

    @asynccontextmanager
    async def subscribe(
        self, queue: str, *, prefetch: int, arguments: dict[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        receive = self._queues[queue][1]
        acked = self.acked

        class Sub:
            def is_open(self) -> bool:
                return True

            async def receive(self) -> Delivery:
                return await receive.receive()

            async def ack(self, delivery: Delivery) -> None:
                acked.append(delivery.delivery_tag)

            async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
                raise AssertionError("nothing here is nacked")

        yield Sub()


class _RateLimitedOnce:
    """Stands in for ChatApi: the first send gets a 429 with Retry-After 250 s, then all pass."""

    def __init__(self) -> None:
        self.calls = 0

    async def send_message(self, client_id: str, text: str, **options: Any) -> str:
        self.calls += 1
        if self.calls == 1:
            raise RateLimited("chat2desk rate limit (429)", retry_after=250.0)
        return f"m{self.calls}"


class _ScriptedProcessor:
    """Each message's text says what processing it does: send a reply through the real Sender
    (and so the real limiter), hang in a call that never returns, or fail transiently forever
    (a service down: the consumer backs off and retries)."""

    def __init__(self, sender: Sender) -> None:
        self.stats = ConsumerStatistics()
        self._sender = sender

    async def process(self, msg: QueuedMessage, **options: Any) -> Outcome:
        if msg.text == "reply":
            await self._sender.send(msg.client_id, "Здравствуйте!")
            return Outcome.PROCESSED
        if msg.text == "hang":
            await trio.Event().wait()  # a call without a timeout that never answers
        raise TransientError("redis unavailable: ConnectionRefusedError")


async def test_a_shard_waiting_on_a_long_retry_after_or_backing_off_is_not_stuck_a_hung_one_is(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ShardConsumers on a virtual clock, three shards: 0 sends a reply and gets a 429 with
    Retry-After 250 s (it waits in the real rate limiter), 1 hangs in a call, 2 retries a
    transient failure with backoff. Only shard 1 is stuck once 120 s pass without progress."""
    api = _RateLimitedOnce()
    sender = Sender(cast(Any, api), TokenBucket(60_000, 1_000), Chat2DeskConfig())
    queues = _ShardQueues(3)
    consumers = ShardConsumers(cast(Any, queues), cast(Any, _ScriptedProcessor(sender)), prefetch=1)
    for shard, text in enumerate(("reply", "hang", "fail")):
        queues.put(shard, text)
    async with trio.open_nursery() as nursery:
        for shard in range(3):
            await nursery.start(consumers.serve_shard, shard)
        assert consumers.stuck_shards(120) == ()
        await trio.sleep(130)
        assert api.calls == 1  # the reply waits out the Retry-After
        assert consumers.stuck_shards(120) == (1,)
        await trio.sleep(100)  # t = 230: still waiting, still not stuck
        assert api.calls == 1 and queues.acked == []
        assert consumers.stuck_shards(120) == (1,)
        await trio.sleep(30)  # the pause is over: the reply went out
        assert api.calls == 2 and queues.acked == [0]
        await trio.sleep(3600)  # an hour of backoff on shard 2 is no hang either
        assert consumers.stuck_shards(120) == (1,)
        assert consumers.stats.transient_retries > 700
        nursery.cancel_scope.cancel()


async def test_health_monitor_with_a_stopped_broker_connection(config: Config) -> None:
    """Real Redis, PostgreSQL and asyncio loop; a broker whose connection is not up."""
    async with (
        open_bridge() as bridge,
        open_order_store(bridge, config.postgres) as orders_store,
        open_state_store(bridge, config.redis, state_ttl_seconds=60) as store,
        open_broker(bridge, config.rabbitmq, **layout(config)) as broker,
    ):
        consumers = ShardConsumers(broker, cast(Any, None), prefetch=1)
        monitor = HealthMonitor(
            bridge=bridge,
            broker=broker,
            store=store,
            orders=orders_store,
            consumers=consumers,
            shards=2,
            interval=0.1,
        )
        snap = await monitor.check()
        assert snap.services == {
            "rabbitmq": False,
            "consumers": False,
            "redis": True,
            "chat2desk": True,
            "postgres": True,
            "asyncio_loop": True,
        }
        assert (
            monitor.status_line(snap) == "degraded (rabbitmq, consumers): 2 shards, outbox ?, dlq ?"
        )
        assert await monitor.hung() == ()  # an outage is no hang: the watchdog keeps pinging

        await broker.connect_once()  # the broker is back and the shards resubscribed
        consumers.subscribed.update({0, 1})
        try:
            snap = await monitor.check()
            assert snap.healthy
            assert await monitor.hung() == ()
            assert monitor.status_line(snap) == "ready: 2 shards, outbox 0, dlq 0"
        finally:
            await broker.delete_queues()


# ---- 2. graceful drain ---------------------------------------------------------------------


async def test_sigterm_under_load_answers_503_while_draining_and_exits_zero(
    config: Config, fake: FakeChat2Desk, no_systemd: None
) -> None:
    outcomes: list[tuple[bool, int, Any]] = []  # (STOPPING=1 seen before sending, code, body)
    under_way = trio.Event()
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=5) as client:
        proc = await start_botd(nursery, config)
        fake.set_delay(1.0)  # every reply takes 1 s: the drain lasts a while
        for cid in range(710_001, 710_021):
            response = await post_webhook(client, proc.url, inbox_payload(cid, "Здравствуйте"))
            assert response.json() == {"status": "queued"}
        await fake.wait_for_deliveries(1)

        async def post_continuously() -> None:
            cid = 711_000
            while proc.process.returncode is None:
                stopping = any("STOPPING=1" in m for m in proc.notifications)
                cid += 1
                try:
                    response = await post_webhook(client, proc.url, inbox_payload(cid, "Алло"))
                except httpx.TransportError:
                    if stopping:
                        return  # the server has closed after the drain
                    raise
                outcomes.append((stopping, response.status_code, response.json()))
                if len(outcomes) == 5:
                    under_way.set()

        nursery.start_soon(post_continuously)
        await under_way.wait()
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout=config.daemon.shutdown_timeout_seconds + 10) == 0
    fake.set_delay(0)
    assert any("STOPPING=1" in m for m in proc.notifications)
    before = [(code, body) for stopping, code, body in outcomes if not stopping]
    after = [(code, body) for stopping, code, body in outcomes if stopping]
    assert any(code == 200 for code, _ in before), before[:10]  # queued while under load
    assert after, "no request was answered while draining"
    assert all(code == 503 for code, _ in after), after  # no 200 once STOPPING=1 was sent
    assert all(body["status"] == "error" and body["reason"] for _, body in after), after
    assert any("stopping: draining" in line for line in proc.lines)
    assert not any("Traceback" in line for line in proc.lines), "\n".join(proc.lines)
    await delete_queues(config)


async def test_second_signal_during_long_drain_exits_at_once_and_nothing_is_lost(
    config: Config, fake: FakeChat2Desk, no_systemd: None
) -> None:
    env = {
        "BOTD_DAEMON_SHUTDOWN_TIMEOUT_SECONDS": "30",
        "BOTD_CHAT2DESK_TIMEOUT_SECONDS": "10",
        "BOTD_LOG_LEVEL": "DEBUG",
    }
    # two customers on each of the two shards
    clients = [c for c in range(720_001, 720_100) if shard_of(str(c), 2) == 0][:2]
    clients += [c for c in range(720_001, 720_100) if shard_of(str(c), 2) == 1][:2]
    message_ids: dict[str, int] = {}
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        proc = await start_botd(nursery, config, extra_env=env)
        fake.set_delay(5)  # each reply hangs for 5 s
        for cid in clients:
            body = inbox_payload(cid, "Здравствуйте")
            message_ids[str(body["message_id"])] = cid
            assert (await post_webhook(client, proc.url, body)).json() == {"status": "queued"}
        with trio.fail_after(10):  # bounded polling until both shards are mid-message
            while value((await scrape(client, proc.url))[1], "botd_messages_in_flight") < 2:
                await trio.sleep(0.05)
        proc.signal(signal.SIGTERM)
        await wait_notifications(proc, lambda m: "STOPPING=1" in m)
        proc.signal(signal.SIGINT)
        started = trio.current_time()
        code = await proc.wait_exit(timeout=10)
        took = trio.current_time() - started
        assert code != 0
        # before a hanging reply could come back (nor the 30 s drain deadline)
        assert took < fake.statistics().delay_seconds, took
        assert any("second signal (SIGINT): exiting now" in line for line in proc.lines)
        # Nothing was acked: a new process gets every message again and answers every customer.
        fake.set_delay(0)
        second = await start_botd(nursery, config, extra_env={"BOTD_LOG_LEVEL": "DEBUG"})
        pattern = re.compile(r"message (\d+) client \d+: (processed|resent)")
        with trio.fail_after(20):  # bounded polling of the new process's log
            while {m.group(1) for m in map(pattern.search, second.lines) if m} < set(message_ids):
                await trio.sleep(0.05)
        await wait_delivered(fake, lambda: all(fake.texts_for(c) for c in clients))
        second.signal(signal.SIGTERM)
        assert await second.wait_exit() == 0
    greeting = set(fake.texts_for(clients[0]))
    assert all(set(fake.texts_for(c)) == greeting for c in clients)
    await delete_queues(config)


# ---- 3. metrics ----------------------------------------------------------------------------


@pytest.fixture
async def running2(config: Config) -> AsyncIterator[daemon.Running]:
    """The daemon in-process with 2 send attempts (fast transient failures), without order
    notes (each a send of its own, which would take the faults meant for the replies)."""
    cfg = dataclasses.replace(
        config,
        chat2desk=dataclasses.replace(config.chat2desk, attempts=2),
        dialog=dataclasses.replace(config.dialog, order_notes=False),
    )
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        handle: daemon.Running = await nursery.start(partial(daemon.serve, cfg, stop=stop))
        yield handle
        stop.set()
    await delete_queues(cfg)


async def say(client: httpx.AsyncClient, running: daemon.Running, body: dict[str, Any]) -> None:
    handled = running.consumers.handled
    response = await post_webhook(client, running.url, body)
    assert response.json() == {"status": "queued"}, response.text
    with trio.fail_after(20):
        await running.consumers.wait_handled(handled + 1)


async def test_metrics_after_a_full_dialog(running2: daemon.Running, fake: FakeChat2Desk) -> None:
    running = running2
    customer, flaky, rejected = 730_001, 730_002, 730_003
    async with httpx.AsyncClient() as client:
        fake.rate_limit_next(1, retry_after=2)  # a 429, the limiter pauses; the retry waits
        first = inbox_payload(customer, HAPPY_PATH[0])
        await say(client, running, first)
        greeting = len(fake.texts_for(customer))
        for text in HAPPY_PATH[1:]:
            await say(client, running, inbox_payload(customer, text))
        await say(client, running, first)  # a Chat2Desk retry: suppressed
        fake.fail_next(2)  # both attempts fail: parked in the outbox, the retrier delivers
        await say(client, running, inbox_payload(flaky, "Здравствуйте"))
        await wait_delivered(fake, lambda: len(fake.texts_for(flaky)) == greeting)
        with trio.fail_after(5):  # bounded polling: the retrier counts after each answer
            while running.outbox.statistics().delivered < greeting:
                await trio.sleep(0.01)
        fake.reject_next(1)  # a permanent error: straight to the DLQ
        await say(client, running, inbox_payload(rejected, "Здравствуйте"))
        bad = await post_webhook(client, running.url, b"[1, 2]")
        assert bad.status_code == 400
        await running.health.check()  # fresh queue depths (the monitor runs every 5 s)
        text, samples = await scrape(client, running.url)

    names = {family.name for family in text_string_to_metric_families(text)}
    assert all(name.startswith("botd_") for name in names), names
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        else:
            assert not family.name.endswith("_total"), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
    assert value(samples, "botd_build_info", version=__version__) == 1
    assert value(samples, "botd_webhook_requests_total", code="200") == 8
    assert value(samples, "botd_webhook_requests_total", code="400") == 1
    assert value(samples, "botd_webhook_request_duration_seconds_count") == 9
    assert value(samples, "botd_webhook_request_duration_seconds_bucket", le="+Inf") == 9
    assert 0 < value(samples, "botd_webhook_request_duration_seconds_sum") < 10
    assert value(samples, "botd_messages_processed_total", outcome="processed") == 7
    assert value(samples, "botd_messages_processed_total", outcome="duplicate") == 1
    assert value(samples, "botd_duplicates_suppressed_total") == 1
    assert value(samples, "botd_orders_created_total") == 1
    transitions = {"waiting_address": 3, "waiting_phone": 1, "waiting_quantity": 1}
    transitions |= {"waiting_confirmation": 1, "idle": 1}  # idle: the order is done
    for step, n in transitions.items():
        assert value(samples, "botd_dialog_transitions_total", step=step) == n, step
    waiting = sum(n for step, n in transitions.items() if step != "idle")
    assert value(samples, "botd_timers_total", event="scheduled") == waiting  # a reminder each
    assert value(samples, "botd_timers_total", event="moved") == 0  # none due yet
    assert value(samples, "botd_bridge_crossings_total") > 0
    assert value(samples, "botd_sends_total", result="ok") == len(fake.delivered())
    assert value(samples, "botd_sends_total", result="retried") == 2  # the 429 and one failure
    assert value(samples, "botd_sends_total", result="failed_transient") == 1
    assert value(samples, "botd_sends_total", result="failed_permanent") == 1
    assert value(samples, "botd_chat2desk_rate_limited_total") == 1
    assert value(samples, "botd_limiter_wait_seconds_total") > 0.5  # held by the 429's pause
    assert value(samples, "botd_outbox_events_total", event="parked") == 1
    assert value(samples, "botd_outbox_events_total", event="delivered") == greeting
    assert value(samples, "botd_outbox_events_total", event="dead_lettered") == 1
    assert value(samples, "botd_queue_depth", queue="outbox") == 0
    assert value(samples, "botd_queue_depth", queue="dlq") == 1
    for service in ("rabbitmq", "redis", "postgres"):
        assert value(samples, "botd_connection_up", service=service) == 1, service
    assert value(samples, "botd_messages_in_flight") == 0


# ---- 4. logs -------------------------------------------------------------------------------


def _vhost_of(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path.lstrip("/"))


async def test_json_logs_carry_ids_hide_personal_data_and_survive_a_broker_hiccup(
    config: Config, fake: FakeChat2Desk, amqp_vhost_url: str, no_systemd: None
) -> None:
    customer = 740_001
    env = {"BOTD_LOG_FORMAT": "json", "BOTD_LOG_LEVEL": "DEBUG"}
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        proc = await start_botd(nursery, config, extra_env=env)
        ids = await converse(client, proc.url, fake, customer, HAPPY_PATH[:2])

        # A broker hiccup: RabbitMQ drops every connection of this test session's vhost.
        await trio.run_process(
            [
                "rabbitmqctl",
                "-q",
                "close_all_connections",
                "-p",
                _vhost_of(amqp_vhost_url),
                "hiccup",
            ],
            capture_stdout=True,
            capture_stderr=True,
        )
        await proc.wait_for_line(r"rabbitmq connection lost")
        with trio.fail_after(30):  # bounded polling: reconnect, consumers resubscribe
            while sum("rabbitmq connected" in line for line in proc.lines) < 2:
                await trio.sleep(0.05)
            while (await client.get(f"{proc.url}/ready")).status_code != 200:
                await trio.sleep(0.05)

        ids += await converse(client, proc.url, fake, customer, HAPPY_PATH[2:])
        await wait_delivered(fake, lambda: "№" in fake.texts_for(customer)[-1])
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0

    records = []
    for line in proc.lines:
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "event"} <= record.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"]), line
        assert "exc" not in record and "Traceback" not in line, line
        records.append(record)
    for raw in RAW_PERSONAL_DATA:
        assert not any(raw in line for line in proc.lines), raw

    levels = {r["level"] for r in records}
    assert {"debug", "info", "warning"} <= levels, levels
    lost = [r for r in records if "connection lost" in r["event"]]
    assert lost and all(r["level"] == "warning" for r in lost), lost
    assert all(r["level"] != "error" for r in records), [
        r for r in records if r["level"] == "error"
    ]

    consumer = [r for r in records if r["logger"] == "botd.consumer"]
    per_message = [r for r in consumer if re.match(r"shard \d+ message ", r["event"])]
    assert [r["message_id"] for r in per_message if r.get("outcome") == "processed"] == ids
    for r in per_message:
        assert r["client_id"] == str(customer) and r["shard"] in (0, 1), r
        assert r["event"].startswith(f"shard {r['shard']} message {r['message_id']} "), r
    placed = [
        r for r in records if r["logger"] == "botd.consumer" and r["event"].startswith("order ")
    ]
    assert len(placed) == 1 and placed[0]["client_id"] == str(customer), placed
    assert placed[0]["message_id"] == ids[-1]
    await delete_queues(config)


# ---- 6. the Grafana dashboard --------------------------------------------------------------


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


async def test_grafana_dashboard_uses_live_metric_names(
    running: daemon.Running, fake: FakeChat2Desk
) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 36 and dashboard["title"] and dashboard["uid"]
    variables = dashboard["templating"]["list"]
    datasource = [v for v in variables if v["type"] == "datasource"]
    assert datasource and datasource[0]["query"] == "prometheus", variables
    ds_ref = "${" + datasource[0]["name"] + "}"
    exprs = _exprs(dashboard)
    assert len(exprs) >= 10
    for panel in dashboard["panels"]:
        if panel.get("type") != "row":
            assert panel["datasource"]["uid"] == ds_ref, panel["title"]
            assert panel["gridPos"]["w"] > 0 and panel["targets"], panel["title"]
    queries = [v["definition"] for v in variables if v["type"] == "query"]
    joined = "\n".join(exprs + queries)
    for needle in (
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
        "botd_webhook_request_duration_seconds_bucket",
        "by (code)",
        "by (outcome)",
        "by (result)",
        "by (service)",
        "botd_orders_created_total",
        "botd_chat2desk_rate_limited_total",
        'queue="dlq"',
    ):
        assert needle in joined, needle

    async with httpx.AsyncClient() as client:
        await say(client, running, inbox_payload(750_001, HAPPY_PATH[0]))
        _, samples = await scrape(client, running.url)
    live = {name for name, _ in samples}
    used = set(re.findall(r"\bbotd_[a-z0-9_]+", joined))
    assert used and used <= live, sorted(used - live)


def test_ops_readme_explains_the_import() -> None:
    readme = (DASHBOARD.parent / "README.md").read_text(encoding="utf-8")
    assert "grafana-dashboard.json" in readme and "Import" in readme
    assert len(readme.strip().splitlines()) <= 20
