"""Redis primary lost under load: Sentinel promotes the replica and botd follows it
(docs/operations.md, "Redis primary lost (Sentinel)").

Needs the Sentinel set of ``scripts/cluster.d/redis.sh`` (``scripts/cluster up``, or
``source scripts/cluster.d/redis.sh && redis_up``); skipped when its sentinels do not answer.
RabbitMQ and PostgreSQL are the machine's main services, as in every other test.

What may happen, and what the test therefore tolerates: replication is asynchronous (and each
node's AOF is fsynced once a second), so a write the killed primary acknowledged may be missing
on the promoted replica. A step whose commit is lost is simply done again if its message was not
acked yet (its replies may then go out twice: at-least-once). If it was acked, the dialog is one
answer behind: the customer's next message gets an unexpected reply and the customer answers the
question it is asked again. What must never happen: a reply missing for a message answered 200,
a wrong order, or two orders of one dialog (PostgreSQL holds the orders, unique by the dialog's
idempotency key, and the key lives in the dialog state).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.sentinel
import trio

from botd.bridge import AsyncioBridge
from botd.config import Config, RedisConfig, parse_host_port
from botd.dialog import DialogState, Step
from botd.dialog.state_codec import load_state
from botd.redis_client import open_redis_client
from tests.faults.support import (
    DialogModel,
    Replies,
    botds,
    dialog_texts,
    match_replies,
    orders_by_client,
    post_until_queued,
)
from tests.helpers import inbox_payload

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
REDIS_SH = ROOT / "scripts" / "cluster.d" / "redis.sh"
SENTINELS = os.environ.get(
    "BOTD_REDIS_SENTINELS", "127.0.0.1:26391,127.0.0.1:26392,127.0.0.1:26393"
)
SERVICE = os.environ.get("BOTD_REDIS_SERVICE_NAME", "botd")
NODES = {6391: "redis1", 6392: "redis2"}  # the data nodes of scripts/cluster.d/redis.sh

CUSTOMERS = 30
DIALOGS_AFTER_KILL = 2  # each customer completes this many dialogs after the kill
REPLY_TIMEOUT = 60.0  # per turn; a fail-over takes seconds
MAX_WINDOW = 30.0  # from the kill until botd's Redis writes succeed again


# ---- the Sentinel set --------------------------------------------------------------------------
def _sentinel() -> redis.sentinel.Sentinel:
    addresses = [parse_host_port(s) for s in SENTINELS.split(",") if s.strip()]
    return redis.sentinel.Sentinel(
        addresses, sentinel_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1}
    )


def primary_port() -> int:
    _host, port = _sentinel().discover_master(SERVICE)
    return int(port)


def primary_client() -> redis.Redis:
    """A plain (synchronous) client of the current primary, to look at botd's keys."""
    client: redis.Redis = _sentinel().master_for(SERVICE, socket_timeout=2)
    return client


def cluster_redis(*args: str, timeout: float = 120) -> str:
    """Run one function of scripts/cluster.d/redis.sh (``redis_kill redis1``)."""
    done = subprocess.run(
        ["bash", "-c", 'source "$0" && "$@"', str(REDIS_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture
def sentinel_set() -> Iterator[None]:
    """The Sentinel set with a primary and a replica, or a skip naming how to start it; the
    killed node is started again afterwards (as a replica) so the next test finds it whole."""
    try:
        sentinel = _sentinel()
        sentinel.discover_master(SERVICE)
        if not sentinel.discover_slaves(SERVICE):
            pytest.skip(f"Redis Sentinel service {SERVICE!r} has no replica to promote")
    except redis.RedisError as exc:
        pytest.skip(
            f"Redis Sentinel not reachable at {SENTINELS} ({type(exc).__name__}): start it with "
            "`scripts/cluster up` or `source scripts/cluster.d/redis.sh && redis_up`"
        )
    yield
    for port, node in NODES.items():
        try:
            redis.Redis(port=port, socket_connect_timeout=1).ping()
        except redis.RedisError:
            cluster_redis("redis_start", node)


def kill_primary(replica_behind: float = 0.0) -> tuple[str, float]:
    """kill -9 the current primary; (its node name, time.monotonic() just before the kill).

    With ``replica_behind``, the replica is cut off from the primary that long before the kill
    (its link dropped, and its reconnection refused by a wrong ``masterauth``, put back right
    after the kill), as after a network blip: every write of that time is lost in the
    fail-over. Without it, the replica is as current as loopback replication makes it."""
    port = primary_port()
    node = NODES[port]
    replica = redis.Redis(port=next(p for p in NODES if p != port), socket_timeout=2)
    try:
        if replica_behind:
            replica.config_set("masterauth", "not-the-primary-password")
            replica.client_kill_filter(_type="master")
            time.sleep(replica_behind)
        at = time.monotonic()
        cluster_redis("redis_kill", node)
    finally:
        if replica_behind:
            replica.config_set("masterauth", "")
            # Sentinel rewrote the promoted node's config file with the wrong masterauth in it:
            # write the file again, or that node, restarted later, cannot reach the primary
            replica.config_rewrite()
        replica.close()
    return node, at


def delete_keys(prefix: str) -> None:
    client = primary_client()
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# ---- the client alone --------------------------------------------------------------------------
async def test_client_follows_the_promoted_primary_and_reloads_its_scripts(
    sentinel_set: None, bridge: AsyncioBridge, redis_prefix: str
) -> None:
    """botd's Redis client (botd.redis_client) after a kill -9 of the primary: connection
    errors while the sentinels decide, then the promoted replica; a registered script (plain
    and in a pipeline) runs there although that server never loaded it (NOSCRIPT → load)."""
    config = RedisConfig(sentinels=tuple(SENTINELS.split(",")), service_name=SERVICE)
    key = f"{redis_prefix}n"
    box: dict[str, Any] = {}

    async def open_client() -> None:
        box["client"] = client = open_redis_client(config)
        box["incr"] = client.register_script("return redis.call('INCR', KEYS[1])")

    async def incr(pipelined: bool) -> int:
        if not pipelined:
            return int(await box["incr"](keys=[key]))
        async with box["client"].pipeline(transaction=False) as pipe:
            pipe.exists(key)
            await box["incr"](keys=[key], client=pipe)
            return int((await pipe.execute())[1])

    async def close() -> None:
        await box["client"].aclose()

    await bridge.run(open_client)
    try:
        assert await bridge.run(incr, False) == 1
        assert await bridge.run(incr, True) == 2
        old = primary_port()
        node, killed_at = await trio.to_thread.run_sync(kill_primary)
        errors: dict[str, int] = {}
        values = []
        for pipelined in (False, True):
            with trio.fail_after(MAX_WINDOW):
                while True:
                    try:
                        values.append(await bridge.run(incr, pipelined))
                        break
                    except (redis.ConnectionError, redis.TimeoutError) as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        await trio.sleep(0.05)
        window = time.monotonic() - killed_at
        new = primary_port()
        stats = redis.Redis(port=new).info("errorstats")
    finally:
        await bridge.run(close)
        await trio.to_thread.run_sync(delete_keys, redis_prefix)
    print(f"\nclient: {node} killed, writes again after {window:.2f}s; errors meanwhile {errors}")
    assert new != old
    # 3 then 4; or 2 then 3 if the last INCR before the kill had not reached the replica yet
    # (asynchronous replication: a lost write)
    assert values[1] == values[0] + 1 and values[0] in (2, 3), values
    assert stats.get("errorstat_NOSCRIPT", {}).get("count", 0) >= 1, stats


# ---- botd under load ---------------------------------------------------------------------------
@dataclass
class Turn:
    cid: int
    message_id: int
    text: str
    posted_at: float  # time.monotonic() when botd answered 200
    first_reply_at: float = math.inf


@dataclass
class Deviation:
    """A turn whose replies were not the model's: botd worked on an older state."""

    cid: int
    text: str
    expected: tuple[str, ...]
    got: list[str]
    state: str


@dataclass
class Customer:
    """Does dialogs like a person: answers the question it is asked with its own values.

    ``dialog_texts(n, cid)`` are the values of its dialog n. Normally botd's replies are exactly
    the :class:`DialogModel`'s; when they are not (only allowed after the kill), the customer
    takes botd's real state from Redis and goes on from there, answering again what it is
    asked. At the summary it checks that botd has its values, so a lost write can never make
    it confirm a wrong order."""

    cid: int
    model: DialogModel
    n: int = 0  # the dialog in progress
    dialog_of: dict[str, int] = field(default_factory=dict)  # dialog_id → n
    ordered: dict[str, int] = field(default_factory=dict)  # idempotency key → n
    drafts_seen: int = 0  # of model.orders (a re-confirmed order repeats its key there)
    blocks: list[tuple[str, ...]] = field(default_factory=list)
    base: int = 0  # replies before this index were checked already (before a resync)
    turns: list[Turn] = field(default_factory=list)
    completed_after_kill: int = 0

    def answer(self) -> str:
        state = self.model.state
        texts = dialog_texts(self.dialog_n(state), self.cid)
        if state is None or state.step is Step.IDLE:
            return texts[0]
        if state.pending is not None:
            return texts[4]  # "да": ours (the model said so, or botd's state does)
        if state.step is Step.WAITING_CONFIRMATION:
            n = self.dialog_n(state)
            want = intended(self.cid, n)
            got = (state.address, state.phone, state.quantity)
            assert got == want, f"customer {self.cid} dialog {n}: summary {got}, ours {want}"
            return texts[4]
        by_step = {Step.WAITING_ADDRESS: 1, Step.WAITING_PHONE: 2, Step.WAITING_QUANTITY: 3}
        assert state.step in by_step, f"customer {self.cid}: unexpected step {state.step}"
        return texts[by_step[state.step]]

    def dialog_n(self, state: DialogState | None) -> int:
        if state is None or not state.dialog_id:
            return self.n
        return self.dialog_of.setdefault(state.dialog_id, self.n)


def intended(cid: int, n: int) -> tuple[str, str, int]:
    """(address, E.164 phone, quantity) of dialog ``n`` of customer ``cid``."""
    _, address, phone, quantity, _ = dialog_texts(n, cid)
    return address, "+996" + phone[1:].replace(" ", ""), int(quantity)


class Load:
    """The customers, the kill and what was seen."""

    def __init__(self, config: Config, replies: Replies, url: str) -> None:
        self.config = config
        self.replies = replies
        self.url = url
        self.customers = {cid: Customer(cid, DialogModel(config, cid)) for cid in CUSTOMER_IDS}
        self.killed_at = math.inf
        self.deviations: list[Deviation] = []
        self.stop = False

    async def run(self, http: httpx.AsyncClient, c: Customer) -> None:
        while not self.stop:
            before = len(c.ordered)
            started = time.monotonic()
            while len(c.ordered) == before:
                await self.turn(http, c)
            if started > self.killed_at:
                c.completed_after_kill += 1
            c.n += 1

    async def turn(self, http: httpx.AsyncClient, c: Customer) -> None:
        text = c.answer()
        body = inbox_payload(c.cid, text)
        key = str(c.cid)
        c.blocks.append(c.model.turn(text, body["message_id"]))
        if c.model.state is not None and c.model.state.dialog_id:
            c.dialog_n(c.model.state)
        for order in c.model.orders[c.drafts_seen :]:
            c.ordered.setdefault(order.idempotency_key, c.dialog_of.get(order.idempotency_key, c.n))
        c.drafts_seen = len(c.model.orders)
        seen = len(self.replies.texts[key])
        await post_until_queued(http, self.url, body, timeout=REPLY_TIMEOUT)
        turn = Turn(c.cid, body["message_id"], text, time.monotonic())
        c.turns.append(turn)
        try:
            with trio.fail_after(REPLY_TIMEOUT):
                while not match_replies(self.replies.texts[key][c.base :], c.blocks).complete:
                    await self.replies.wait(key, len(self.replies.texts[key]) + 1, timeout=math.inf)
        except AssertionError:
            if turn.posted_at < self.killed_at - 5:
                raise  # long before the kill: a real bug, not the fail-over
            await self.resync(c, turn)
        finally:
            if len(self.replies.times[key]) > seen:
                turn.first_reply_at = self.replies.times[key][seen]

    async def resync(self, c: Customer, turn: Turn) -> None:
        """botd answered from an older state: wait until it is done with the message (its
        replies sent), then continue from botd's own state."""
        key = str(c.cid)
        marker = f"{self.config.redis.key_prefix}seen:{turn.message_id}"
        dialog = f"{self.config.redis.key_prefix}dialog:{c.cid}"

        def look() -> tuple[Any, Any]:
            client = primary_client()
            try:
                return client.hmget(marker, "r", "sent"), client.hget(dialog, "s")
            finally:
                client.close()

        def delivered(said: list[str]) -> bool:
            return not said or self.replies.texts[key][-len(said) :] == said

        # botd is done with the message once its marker says the replies went out (or, sent
        # by the outbox, they arrived): the state read then is the one the next turn meets
        with trio.fail_after(REPLY_TIMEOUT):
            while True:
                try:
                    (said_raw, sent), state_raw = await trio.to_thread.run_sync(look)
                except redis.RedisError:
                    said_raw = sent = state_raw = None
                if said_raw is not None and (sent == b"1" or delivered(json.loads(said_raw))):
                    break
                await trio.sleep(0.1)
        botd_said = json.loads(said_raw)
        with trio.fail_after(REPLY_TIMEOUT):  # sent: they reach the fake
            while not delivered(botd_said):
                await self.replies.wait(key, len(self.replies.texts[key]) + 1, timeout=math.inf)
        state = load_state(json.loads(state_raw)) if state_raw else None
        self.deviations.append(
            Deviation(
                c.cid,
                turn.text,
                c.blocks[-1],
                self.replies.texts[key][c.base :][-6:],
                "idle" if state is None else state.step.value,
            )
        )
        c.model.state = state
        c.base, c.blocks = len(self.replies.texts[key]), []

    def audit(self) -> dict[str, int]:
        """Every completed dialog: exactly one order in PostgreSQL, with the customer's values."""
        rows = orders_by_client(self.config.postgres.dsn)
        result = {"dialogs": 0, "orders": 0, "turns": 0}
        for c in self.customers.values():
            got = {r["idempotency_key"]: r for r in rows.get(str(c.cid), [])}
            assert set(got) == set(c.ordered), (c.cid, sorted(got), sorted(c.ordered))
            for key, n in c.ordered.items():
                row = got[key]
                values = (row["delivery_address"], row["client_phone"], row["quantity"])
                assert values == intended(c.cid, n), (c.cid, n, values)
            assert sorted(c.ordered.values()) == list(range(c.n)), (c.cid, c.ordered, c.n)
            result["dialogs"] += c.n
            result["orders"] += len(got)
            result["turns"] += len(c.turns)
        return result


CUSTOMER_IDS = range(870_001, 870_001 + CUSTOMERS)


async def watch_ready(
    http: httpx.AsyncClient, url: str, seen: list[tuple[float, str]], done: Callable[[], bool]
) -> None:
    """Record each change of /ready's "redis" as (time.monotonic(), "up" | "down")."""
    last = ""
    while not done():
        try:
            state = (await http.get(f"{url}/ready", timeout=2)).json().get("redis", "?")
        except (httpx.HTTPError, ValueError):
            state = "?"
        if state != last:
            seen.append((time.monotonic(), state))
            last = state
        await trio.sleep(0.05)


@pytest.mark.parametrize("replica_behind", [0.0, 0.5], ids=["replica-in-sync", "replica-behind"])
async def test_primary_killed_under_load_loses_and_doubles_no_order(
    sentinel_set: None, make_config: Callable[..., Config], replies: Replies, replica_behind: float
) -> None:
    config = make_config(redis_sentinels=SENTINELS, redis_service_name=SERVICE, rabbitmq_shards="4")
    ready: list[tuple[float, str]] = []
    try:
        async with botds(config) as group, httpx.AsyncClient() as http:
            proc = await group.start()
            load = Load(config, replies, proc.url)
            finished = False
            with trio.fail_after(300):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch_ready, http, proc.url, ready, lambda: finished)
                    async with trio.open_nursery() as customers:
                        for c in load.customers.values():
                            customers.start_soon(load.run, http, c)
                        while min(c.n for c in load.customers.values()) < 1:  # warmed up
                            await replies.any_changed.wait()
                        node, load.killed_at = await trio.to_thread.run_sync(
                            kill_primary, replica_behind
                        )
                        while (
                            min(c.completed_after_kill for c in load.customers.values())
                            < DIALOGS_AFTER_KILL
                        ):
                            await replies.any_changed.wait()
                        load.stop = True
                    finished = True
            assert proc.process.returncode is None, "botd died"
            redis_warnings = sum("redis unavailable" in line for line in proc.lines)
    finally:
        await trio.to_thread.run_sync(delete_keys, config.redis.key_prefix)

    audit = load.audit()
    turns = [t for c in load.customers.values() for t in c.turns]
    after = [t for t in turns if t.posted_at > load.killed_at]
    in_flight = [t for t in turns if t.posted_at <= load.killed_at < t.first_reply_at]
    window = min(t.first_reply_at for t in after) - load.killed_at
    first_any = min(t for ts in replies.times.values() for t in ts if t > load.killed_at)
    stalled = max((t.first_reply_at - t.posted_at for t in in_flight), default=0.0)
    ready_after = [(round(at - load.killed_at, 2), s) for at, s in ready if at > load.killed_at]
    resent = sum(
        match_replies(replies.texts[str(c.cid)][c.base :], c.blocks).resent
        for c in load.customers.values()
    )
    print(
        f"\nredis fail-over (replica behind by {replica_behind}s): {node} killed; first reply "
        f"to a message posted after the kill "
        f"{window:.2f}s after it (first reply of any turn "
        f"{first_any - load.killed_at:.2f}s); turns in flight at the kill waited up to "
        f"{stalled:.2f}s; "
        f"/ready redis after the kill {ready_after}; {redis_warnings} 'redis unavailable' "
        f"warnings; {len(in_flight)} turns in flight, {len(after)} after; re-sent reply blocks "
        f"since the last resync {resent}; asked again (lost writes) {len(load.deviations)}; "
        f"{audit}"
    )
    for d in load.deviations:
        print(f"  customer {d.cid} said {d.text!r}: expected {d.expected}, got {d.got} ({d.state})")
    assert window < MAX_WINDOW
    assert audit["orders"] == audit["dialogs"] >= CUSTOMERS * (1 + DIALOGS_AFTER_KILL)
