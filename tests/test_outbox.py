"""Replies that cannot be sent (docs/design.md §3.5–3.6), end to end: the whole daemon, real
services.

The outbox backs off through the wait-tier queues (waiting for their TTLs is inherent, so these
tests use ``outbox.max_backoff_seconds`` = 2: tiers of 1 s and 2 s); everything else is waited
for on observable state (the fake's recordings, queue depths, counters) in bounded polls.
Unless a test says otherwise, ``chat2desk.attempts`` is 1, so a failed send is parked at once.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import msgspec
import pytest
import redis
import trio

import botd.outbox
from botd import dialog
from botd.bridge import open_bridge
from botd.broker import Broker, layout, open_broker
from botd.config import Config, load_config
from botd.daemon import Running, settings_of
from botd.inbound import shard_of
from botd.outbox import (
    PROBE_INTERVAL_SECONDS,
    DeadReply,
    backoff_for,
    wait_tiers,
)
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.process import BotdProcess, start_botd
from tests.conftest import REDIS_URL
from tests.helpers import inbox_payload, post_webhook, subprocess_env

GREETING = "Привет"
ADDRESS = "ул. Токтогула 125, кв. 4"
PHONE = "0555 123 456"


@pytest.fixture
def config(request: pytest.FixtureRequest, make_config: Callable[..., Config]) -> Config:
    """The conftest config with one inline attempt; a test adds overrides by indirect param."""
    return make_config(**{"chat2desk_attempts": "1", **getattr(request, "param", {})})


def with_overrides(**overrides: str) -> pytest.MarkDecorator:
    """Parametrize this module's ``config`` fixture with ``make_config`` overrides."""
    label = ",".join(f"{k}={v}" for k, v in overrides.items())
    return pytest.mark.parametrize("config", [overrides], indirect=True, ids=[label])


def replies_to(*texts: str) -> list[list[str]]:
    """The replies the dialog gives to these customer messages in turn (no I/O)."""
    settings = settings_of(load_config(None, env={}))
    state: dialog.DialogState | None = None
    out = []
    for i, text in enumerate(texts):
        turn = dialog.Turn(
            message_id=str(i),
            client_id="1",
            text=text,
            at=time.time(),
            media=(),
            location=None,
            contact_phone=None,
        )
        transition = dialog.step(state, turn, time.time(), settings)
        out.append([dialog.render(r, transition.state.locale) for r in transition.replies])
        state = transition.state
    return out


GREETING_REPLIES = replies_to(GREETING)[0]


async def say(running: Running, client: int, text: str) -> None:
    """Post one customer message and wait until the daemon has finished handling it."""
    handled = running.consumers.handled
    async with httpx.AsyncClient() as http:
        response = await post_webhook(http, running.url, inbox_payload(client, text))
    assert response.json() == {"status": "queued"}
    with trio.fail_after(15):
        await running.consumers.wait_handled(handled + 1)


async def eventually(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool], *, timeout: float = 15
) -> None:
    """Poll ``condition`` every 50 ms until it holds (fails after ``timeout`` seconds)."""
    with trio.fail_after(timeout):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.05)


async def depths(broker: Broker, config: Config) -> dict[str, int]:
    t = broker.topology
    names = {"outbox": t.outbox, "dlq": t.dlq}
    for seconds in wait_tiers(config.outbox.max_backoff_seconds):
        names[f"wait.{seconds}s"] = t.outbox_wait(seconds)
    return {key: await broker.queue_depth(name) for key, name in names.items()}


async def dead_replies(broker: Broker) -> list[DeadReply]:
    """The DLQ's replies (browsed, not removed)."""
    async with broker.browse(broker.topology.dlq, limit=100) as browser:
        return [msgspec.json.decode(m.body, type=DeadReply) for m in browser.messages]


def statuses(fake: FakeChat2Desk, client: int) -> list[int | None]:
    return [r.status for r in fake.requests_for(client)]


# ---- inline retries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        ({"chat2desk_attempts": "3"}, "5xx"),
        ({"chat2desk_attempts": "3", "chat2desk_timeout_seconds": "0.5"}, "timeout"),
    ],
    indirect=["config"],
    ids=["5xx", "timeout"],
)
async def test_transient_failures_are_retried_inline(
    running: Running, fake: FakeChat2Desk, fault: str
) -> None:
    client = 5101
    if fault == "5xx":
        fake.fail_next(2, status=502)
    else:
        fake.hang_next(2)  # each cut at chat2desk.timeout_seconds = 0.5
    started = time.monotonic()
    await say(running, client, GREETING)
    took = time.monotonic() - started
    assert fake.texts_for(client) == GREETING_REPLIES  # each reply exactly once
    first_failure = 502 if fault == "5xx" else None
    assert statuses(fake, client) == [first_failure, first_failure, 200, 200]
    stats = running.sender.statistics()
    assert (stats.sent_ok, stats.retried, stats.failed_transient) == (2, 2, 0)
    assert running.outbox.statistics().parked == 0  # no need for the outbox
    timeouts = 0.0 if fault == "5xx" else 2 * 0.5
    print(f"\ninline retries ({fault}): handled in {took:.2f}s")
    assert 0.75 + 1.5 + timeouts <= took <= 1.25 + 2.5 + timeouts + 2


# ---- the outbox --------------------------------------------------------------------------------


async def test_outage_backs_off_in_tiers_then_delivers(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    client = 5201
    fake.set_down()
    await say(running, client, GREETING)
    assert running.outbox.statistics().parked == 1
    assert fake.texts_for(client) == []

    seen: dict[str, int] = {}

    async def tiers_used() -> bool:
        for key, n in (await depths(running.broker, config)).items():
            seen[key] = max(seen.get(key, 0), n)
        return len(fake.requests_for(client)) >= 5

    await eventually(tiers_used, timeout=20)
    assert seen["wait.1s"] == 1 and seen["wait.2s"] == 1  # the batch went through both tiers
    assert seen["dlq"] == 0
    times = [r.monotonic for r in fake.requests_for(client)]
    retry_gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    print("\noutbox retry gaps with the API down: " + ", ".join(f"{g:.2f}s" for g in retry_gaps))
    # attempt k + 1 waits backoff_for(k) in its tier: 1 s, 2 s, 2 s (capped)
    for k, gap in enumerate(retry_gaps, start=1):
        expected = backoff_for(k, config.outbox.max_backoff_seconds)
        assert expected - 0.05 <= gap <= expected + 1.0, (k, gap)

    fake.set_up()
    await eventually(lambda: len(fake.texts_for(client)) >= 2, timeout=10)
    await eventually(lambda: running.outbox.statistics().delivered == 2)
    assert fake.texts_for(client) == GREETING_REPLIES  # in order, once each
    stats = running.outbox.statistics()
    assert stats.parked == 1 and stats.dead_lettered == 0 and stats.retried >= 3
    assert await depths(running.broker, config) == dict.fromkeys(seen, 0)
    assert await running.store.outbox_pending(str(client)) == 0
    # a new reply to the same customer goes straight out again
    await say(running, client, ADDRESS)
    assert fake.texts_for(client)[2:] == replies_to(GREETING, ADDRESS)[1]
    assert running.outbox.statistics().parked == 1


async def botd_cli(config: Config, *args: str) -> tuple[int, str, str]:
    """Run ``python -m botd --config /dev/null ARGS`` with ``config`` in its environment."""
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "botd", "--config", os.devnull, *args],
            env=subprocess_env(config),
            stdin=None,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@with_overrides(outbox_max_attempts="3")
async def test_max_attempts_dead_letter_then_replay(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    client = 5301
    fake.set_down(503)
    await say(running, client, GREETING)
    broker = running.broker
    await eventually(lambda: running.outbox.statistics().dead_lettered == 2, timeout=20)
    # one inline attempt, then max_attempts = 3 outbox attempts; nothing more
    assert statuses(fake, client) == [503] * 4
    dead = await dead_replies(broker)
    assert [d.text for d in dead] == GREETING_REPLIES
    for d in dead:
        assert d.client_id == str(client) and d.attempts == 3
        assert d.reason == "gave up after 3 attempts: chat2desk answered 503"
        assert d.first_failed_at <= d.dead_at
    assert await depths(broker, config) == {"outbox": 0, "dlq": 2, "wait.1s": 0, "wait.2s": 0}
    assert await running.store.outbox_pending(str(client)) == 0  # newer replies not blocked
    stats = running.outbox.statistics()
    assert (stats.parked, stats.retried, stats.delivered) == (1, 2, 0)

    fake.set_up()
    code, out, err = await botd_cli(config, "dlq", "replay", "--all")
    assert code == 0, err
    assert "2 message(s) replayed" in out
    await eventually(lambda: len(fake.texts_for(client)) >= 2)
    assert fake.texts_for(client) == GREETING_REPLIES
    await eventually(lambda: running.outbox.statistics().delivered == 2)
    assert (await depths(broker, config))["dlq"] == 0
    # the counters are exported
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{running.url}/metrics")).text
    assert 'botd_outbox_events_total{event="parked"} 1.0' in metrics
    assert 'botd_outbox_events_total{event="dead_lettered"} 2.0' in metrics
    assert 'botd_outbox_events_total{event="delivered"} 2.0' in metrics
    assert 'botd_sends_total{result="failed_transient"} 1.0' in metrics


@with_overrides(chat2desk_attempts="3")
async def test_permanent_errors_go_to_the_dlq_without_retries(
    running: Running, fake: FakeChat2Desk
) -> None:
    # (a refused token, 401/403, is not permanent: see test_a_refused_token_keeps_the_replies)
    for status, client in ((400, 5401), (404, 5403)):
        fake.reject_next(1, status=status)
        await say(running, client, GREETING)
        # exactly one request for the rejected reply; the next reply still goes out
        assert statuses(fake, client) == [status, 200]
        assert fake.texts_for(client) == GREETING_REPLIES[1:]
    dead = {d.client_id: d for d in await dead_replies(running.broker)}
    assert dead.keys() == {"5401", "5403"}
    assert dead["5401"].reason == "chat2desk answered 400: Validation failed"
    assert dead["5403"].reason == "chat2desk answered 404: Page not found"
    assert all(d.attempts == 1 and d.text == GREETING_REPLIES[0] for d in dead.values())
    stats = running.sender.statistics()
    assert (stats.failed_permanent, stats.retried, stats.sent_ok) == (2, 0, 2)
    assert running.outbox.statistics().dead_lettered == 2
    assert running.outbox.statistics().parked == 0


async def test_permanent_error_in_the_outbox_dead_letters_that_reply_only(
    running: Running, fake: FakeChat2Desk
) -> None:
    client = 5501
    fake.set_down()
    await say(running, client, GREETING)
    await eventually(lambda: len(fake.requests_for(client)) >= 2)  # an outbox attempt failed
    fake.set_up()
    fake.reject_next(1, status=400)
    await eventually(lambda: running.outbox.statistics().dead_lettered == 1)
    await eventually(lambda: fake.texts_for(client) == GREETING_REPLIES[1:])
    (dead,) = await dead_replies(running.broker)
    assert dead.text == GREETING_REPLIES[0]
    assert dead.reason == "chat2desk answered 400: Validation failed"
    assert dead.attempts >= 2
    assert statuses(fake, client).count(400) == 1
    await eventually(lambda: running.outbox.statistics().delivered == 1)


# ---- rate limit --------------------------------------------------------------------------------


@with_overrides(chat2desk_attempts="3")
async def test_rate_limit_pauses_every_sender(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    # two customers on different shards, i.e. two consumer tasks
    clients = [
        5601,
        next(c for c in range(5602, 5700) if shard_of(str(c), 2) != shard_of("5601", 2)),
    ]
    fake.rate_limit_next(1, retry_after=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(say, running, clients[0], GREETING)
        await eventually(lambda: statuses(fake, clients[0]) == [429])
        # the other consumer starts after the 429 was answered: it has to wait too
        nursery.start_soon(say, running, clients[1], GREETING)
    # each say() returns once *a* message was handled: wait for both
    with trio.fail_after(15):
        await running.consumers.wait_handled(2)
    for client in clients:
        assert fake.texts_for(client) == GREETING_REPLIES
    requests = fake.requests
    (limited,) = [r for r in requests if r.status == 429]
    later = [r for r in requests if r.seq > limited.seq]
    held = min(r.monotonic for r in later) - limited.monotonic
    print(f"\ndaemon: first send after a 429 with Retry-After 2 came {held:.2f}s later")
    assert held >= 2.0
    assert {r.client_id for r in later} == {str(c) for c in clients}
    assert running.sender.statistics().rate_limited == 1
    limiter = running.sender.limiter.statistics()
    assert limiter.pauses == 1 and limiter.total_wait_seconds >= 2.0
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{running.url}/metrics")).text
    assert "botd_chat2desk_rate_limited_total 1.0" in metrics
    assert "botd_limiter_wait_seconds_total" in metrics


# ---- per-customer order ------------------------------------------------------------------------


async def test_newer_replies_queue_behind_parked_ones(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    client = 5701
    expected = replies_to(GREETING, ADDRESS, PHONE)
    fake.set_down()
    await say(running, client, GREETING)

    async def in_long_tier() -> bool:
        return await running.broker.queue_depth(running.broker.topology.outbox_wait(2)) == 1

    await eventually(in_long_tier)  # the first batch waits ~2 s before its next attempt
    fake.set_up()
    await say(running, client, ADDRESS)
    await say(running, client, PHONE)
    # the API is up, yet the newer replies did not overtake: they were parked behind
    assert fake.texts_for(client) == []
    assert running.outbox.statistics().parked == 3
    assert await running.store.outbox_pending(str(client)) == 3
    await eventually(lambda: len(fake.texts_for(client)) >= 4, timeout=15)
    assert fake.texts_for(client) == [text for turn in expected for text in turn]
    await eventually(lambda: running.outbox.statistics().delivered == 4)
    assert await running.store.outbox_pending(str(client)) == 0


# ---- kill -9 -----------------------------------------------------------------------------------


@asynccontextmanager
async def botd_process(config: Config) -> AsyncIterator[BotdProcess]:
    async with trio.open_nursery() as nursery:
        proc = await start_botd(nursery, config)
        try:
            yield proc
        finally:
            if proc.process.returncode is None:
                proc.kill9()
            with trio.CancelScope(shield=True):
                await proc.wait_exit()


async def test_kill_9_with_replies_in_the_outbox_loses_none(
    fake: FakeChat2Desk, config: Config, broker: Broker
) -> None:
    """Kill a real ``botd run`` while batches sit in both wait tiers and one is being sent."""
    early, late = list(range(5801, 5805)), list(range(5805, 5809))
    clients = early + late
    outage = 10_000
    fake.fail_next(outage)  # the API is down (as one-shot faults, so a hang can be slipped in)

    async def post(url: str, group: list[int]) -> None:
        async with httpx.AsyncClient() as http:
            for client in group:
                response = await post_webhook(http, url, inbox_payload(client, GREETING))
                assert response.json() == {"status": "queued"}

    def attempted(group: list[int], n: int) -> Callable[[], bool]:
        return lambda: all(len(fake.requests_for(c)) >= n for c in group)

    async with botd_process(config) as first:
        await post(first.url, early)
        await eventually(attempted(early, 3), timeout=20)  # parked, retried twice: 2 s tier
        await post(first.url, late)
        await eventually(attempted(late, 2), timeout=20)  # parked, retried once: 1 s tier
        # the next attempt hangs: the retrier holds that batch (unacked) when botd dies
        fake.clear_faults()
        fake.hang_next(1)
        fake.fail_next(outage)
        await eventually(lambda: any(r.status is None for r in fake.requests), timeout=20)
        first.kill9()
        assert await first.wait_exit() == -signal.SIGKILL
    at_kill = await depths(broker, config)
    print(f"\nqueues right after kill -9: {at_kill}")
    assert at_kill["dlq"] == 0 and fake.delivered() == []
    assert at_kill["wait.1s"] + at_kill["wait.2s"] + at_kill["outbox"] >= 1

    fake.clear_faults()  # the API is back
    async with botd_process(config) as second:
        await eventually(lambda: all(len(fake.texts_for(c)) >= 2 for c in clients), timeout=20)

        async def drained() -> bool:
            return all(n == 0 for n in (await depths(broker, config)).values())

        await eventually(drained, timeout=10)  # duplicates, if any, have been sent too
        second.signal(signal.SIGTERM)
        assert await second.wait_exit() == 0
    want = len(clients) * len(GREETING_REPLIES)
    for client in clients:
        texts = fake.texts_for(client)
        # none lost, in order; a duplicate may only repeat the whole batch
        assert texts[:2] == GREETING_REPLIES, (client, texts)
        assert texts[2:] in ([], GREETING_REPLIES), (client, texts)
    duplicates = len(fake.delivered()) - want
    print(f"kill -9: {want} replies delivered after the restart, {duplicates} duplicate(s)")
    assert await broker.queue_depth(broker.topology.outbox) == 0


# ---- broker trouble while parking --------------------------------------------------------------


async def test_failed_park_does_not_block_the_customer(
    running: Running, fake: FakeChat2Desk, config: Config, amqp_vhost_url: str
) -> None:
    """A park whose publish fails leaves no entry in the customer's pending list behind.

    Such an entry names a batch that is in no queue: every later reply to that customer would
    queue behind it for the outbox's 7 days.
    """
    client = 5901
    broker = running.broker
    vhost = amqp_vhost_url.rsplit("/", 1)[1].replace("%2F", "/")
    fake.set_down()
    # the outbox queue disappears: parking cannot publish (unroutable), the consumer retries
    with trio.fail_after(60):
        await trio.run_process(
            ["rabbitmqctl", "-q", "delete_queue", "--vhost", vhost, broker.topology.outbox],
            capture_stdout=True,
        )
    async with httpx.AsyncClient() as http:
        response = await post_webhook(http, running.url, inbox_payload(client, GREETING))
    assert response.json() == {"status": "queued"}
    await eventually(lambda: running.consumers.stats.transient_retries >= 2)
    assert running.outbox.statistics().parked == 0
    # the queue is back (as any botd start declares it): the park goes through
    async with (
        open_bridge() as bridge,
        open_broker(bridge, config.rabbitmq, **layout(config)) as other,
    ):
        await other.connect_once()
    await eventually(lambda: running.outbox.statistics().parked == 1)
    assert await running.store.outbox_pending(str(client)) == 1  # only the published batch
    fake.set_up()
    await eventually(lambda: fake.texts_for(client) == GREETING_REPLIES, timeout=20)
    await eventually(lambda: running.outbox.statistics().delivered == 2)
    assert await running.store.outbox_pending(str(client)) == 0


# ---- orphans in the pending list (a park cut short between its two halves) ---------------------


def pending_list_ttl(running: Running, client: int) -> int:
    sync = redis.Redis.from_url(REDIS_URL)
    try:
        return int(sync.ttl(running.store.outbox_key(str(client))))
    finally:
        sync.close()


def expire_pending_list(running: Running, client: int, seconds: int) -> None:
    sync = redis.Redis.from_url(REDIS_URL)
    try:
        sync.expire(running.store.outbox_key(str(client)), seconds)
    finally:
        sync.close()


async def push_orphan(running: Running, client: int, *, died_ago: float = 0.0) -> str:
    """What a park killed between its push and its publish leaves: an entry in the customer's
    pending list whose batch is in no queue (the same call park makes first)."""
    batch_id = f"9999.{time.time_ns()}"
    at = time.time() - died_ago
    await running.store.outbox_push(
        str(client), batch_id, parked_at=at, due=at + running.broker.publish_timeout
    )
    return batch_id


@pytest.fixture
def quick_outbox_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retrier looks at the oldest waiting reply every 1 s (not 10 s) and trusts the FIFO
    proof after a 3 s margin (not 10 s): the same rules, sooner (set before the daemon starts)."""
    monkeypatch.setattr(botd.outbox, "PROBE_INTERVAL_SECONDS", 1.0)
    monkeypatch.setattr(botd.outbox, "ORPHAN_MARGIN_SECONDS", 3.0)


@with_overrides(rabbitmq_publish_timeout_seconds="2")
async def test_an_orphan_in_the_pending_list_does_not_block_the_customer(
    quick_outbox_look: None, running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    client = 6001
    orphan = await push_orphan(running, client)
    orphaned_at = time.monotonic()
    expire_pending_list(running, client, 1000)  # the list's TTL, some time after the kill
    await say(running, client, GREETING)
    # the API is up, but the replies were parked behind the orphan ...
    assert fake.texts_for(client) == []
    assert running.outbox.statistics().parked == 1
    assert await running.store.outbox_pending(str(client)) == 2
    # ... and that park, which made no progress, did not keep the list alive any longer
    assert 0 < pending_list_ttl(running, client) <= 1000
    # the bound: the orphan was due in the outbox queue within the publish timeout; the parked
    # batch, cycling in the 1 s wait queue, shows it up once it entered the queue later than
    # that + ORPHAN_MARGIN_SECONDS
    bound = config.rabbitmq.publish_timeout_seconds + botd.outbox.ORPHAN_MARGIN_SECONDS + 1
    await eventually(lambda: fake.texts_for(client) == GREETING_REPLIES, timeout=bound + 10)
    took = time.monotonic() - orphaned_at
    print(f"\norphan in the pending list: the customer's replies went out {took:.1f}s later")
    assert took <= bound + 3
    await eventually(lambda: running.outbox.statistics().delivered == 2)
    stats = running.outbox.statistics()
    assert (stats.orphans_dropped, stats.dead_lettered) == (1, 0)
    assert await running.store.outbox_pending(str(client)) == 0
    assert await running.store.outbox_head(str(client)) != orphan
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{running.url}/metrics")).text
    assert 'botd_outbox_events_total{event="orphan_dropped"} 1.0' in metrics
    # a new reply goes straight out again
    await say(running, client, ADDRESS)
    assert fake.texts_for(client)[2:] == replies_to(GREETING, ADDRESS)[1]


async def test_a_lone_orphan_is_shown_up_by_a_probe(
    quick_outbox_look: None, running: Running, fake: FakeChat2Desk
) -> None:
    """Nothing of its customer comes after it: the retrier's periodic look at the oldest waiting
    reply sends a probe through the outbox queue, which shows the orphan up."""
    client = 6101
    await push_orphan(running, client, died_ago=100)

    def oldest() -> float:
        return running.outbox.statistics().oldest_pending_seconds

    await eventually(lambda: oldest() >= 100, timeout=PROBE_INTERVAL_SECONDS + 5)
    await eventually(
        lambda: running.outbox.statistics().orphans_dropped == 1,
        timeout=PROBE_INTERVAL_SECONDS + 5,
    )
    assert await running.store.outbox_pending(str(client)) == 0
    assert await running.store.outbox_oldest() is None
    await eventually(lambda: oldest() == 0, timeout=PROBE_INTERVAL_SECONDS + 5)
    assert fake.requests_for(client) == []


async def test_the_oldest_pending_reply_age_is_a_gauge(
    quick_outbox_look: None, running: Running, fake: FakeChat2Desk
) -> None:
    client = 6201
    fake.set_down()
    parked_at = time.time()
    await say(running, client, GREETING)
    assert running.outbox.statistics().parked == 1

    async def gauge() -> float:
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{running.url}/metrics")).text
        (line,) = [
            line
            for line in metrics.splitlines()
            if line.startswith("botd_outbox_oldest_pending_seconds ")
        ]
        return float(line.split()[1])

    async def reports_the_age() -> bool:
        return await gauge() > 0

    await eventually(reports_the_age, timeout=PROBE_INTERVAL_SECONDS + 5)
    assert 0 < await gauge() <= time.time() - parked_at + 1
    first = await gauge()
    await trio.sleep(0.5)  # an age: it grows with the clock between two looks
    assert await gauge() >= first + 0.4
    fake.set_up()
    await eventually(lambda: fake.texts_for(client) == GREETING_REPLIES, timeout=20)

    async def reports_none() -> bool:
        return await gauge() == 0

    await eventually(reports_none, timeout=PROBE_INTERVAL_SECONDS + 5)
    assert running.outbox.statistics().orphans_dropped == 0
