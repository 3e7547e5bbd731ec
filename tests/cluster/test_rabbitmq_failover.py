"""A RabbitMQ node lost under load (``scripts/cluster up``, then ``scripts/cluster test``).

``botd run`` is given the three nodes of the local cluster (rabbit1..3 on 127.0.0.1:5681-5683,
the default vhost, a queue prefix of the test's own) and customers complete dialogs through its
webhook, retrying a 503 as Chat2Desk does. Two faults, each kill -9 of one node, later restarted:

1. the node botd is connected to, which also leads every queue botd declared (quorum queues are
   placed client-local): the connection fails over to the next node, the queues elect new
   leaders among the other two;
2. a node that leads some shard queues but does not hold botd's connection: only those queues
   elect new leaders, the connection stays.

Asserted: every webhook answered 200 was processed (each customer got every reply of its model,
in order) and each finished dialog placed exactly one order; webhooks were refused (503) only in
the window after a kill. Measured and printed: the fail-over window (from the kill until
publishes confirm again: the first 200 after the first 503, or after the kill when nothing was
refused) and the number of 503s, per fault.

Redis and PostgreSQL are the main services (their own fail-over is other tests' business).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio

from botd.config import Config
from botd.testing.process import BotdProcess
from tests.faults.support import Customer, Replies, Traffic, botds
from tests.helpers import inbox_payload, post_webhook

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "cluster"
PORTS = {"rabbit1": 5681, "rabbit2": 5682, "rabbit3": 5683}
NODE_OF_PORT = {port: node for node, port in PORTS.items()}
URLS = ",".join(f"amqp://guest:guest@127.0.0.1:{port}/%2F" for port in PORTS.values())
CUSTOMERS = 30
WARM_UP_SECONDS = 6.0  # traffic before the first kill
DOWN_SECONDS = 12.0  # how long a killed node stays down (a fault duration, not synchronisation)
SETTLE_SECONDS = 6.0  # traffic after a restart, before the next fault
# 503s later than this after a kill fail the test. Below DOWN_SECONDS on purpose: a publish
# channel registered with a dead queue leader is nacked until that node returns (see
# botd.broker.connection.REPLACE_NACKED_CHANNEL_SECONDS); botd must not wait for the node.
MAX_WINDOW_SECONDS = 8.0
CONNECTED = re.compile(r"rabbitmq connected to 127\.0\.0\.1:(\d+)")
NOT_QUEUED = re.compile(r"webhook message \d+ not queued: (.*)")
VARYING = re.compile(r"delivery_tag=\d+|0x[0-9a-f]+|\d+(\.\d+)?s\b")  # in refusal reasons


def _closed_ports() -> list[int]:
    closed = []
    for port in PORTS.values():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            closed.append(port)
    return closed


@pytest.fixture
def cluster() -> None:
    if closed := _closed_ports():
        pytest.skip(
            f"the RabbitMQ cluster is not up (nothing on 127.0.0.1:{closed}): "
            "run `scripts/cluster up` first"
        )


def _cluster(*args: str, timeout: float = 180) -> str:
    """Run ``scripts/cluster ARGS`` (kill, start, ctl); its output, or AssertionError."""
    done = subprocess.run(
        [str(CLUSTER), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"scripts/cluster {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


def _leaders(prefix: str, via: str) -> dict[str, str]:
    """Queue name -> short name of the node leading it, for the test's queues."""
    out = _cluster("ctl", via, "list_queues", "name", "leader", "--formatter", "json")
    rows = json.loads(out or "[]")
    return {
        row["name"]: str(row["leader"]).split("@")[0]
        for row in rows
        if row["name"].startswith(prefix + ".")
    }


def _connected_node(proc: BotdProcess) -> str:
    ports = [int(m[1]) for line in proc.lines if (m := CONNECTED.search(line))]
    assert ports, "\n".join(proc.lines[-20:])
    return NODE_OF_PORT[ports[-1]]


@dataclass
class Fault:
    """One kill -9 and what the webhooks saw after it."""

    name: str
    node: str
    killed_at: float
    restarted_at: float = 0.0
    leaders_lost: list[str] = field(default_factory=list)
    refused: int = 0
    window: float = 0.0
    last_refusal: float = 0.0
    slowest: float = 0.0  # the longest webhook answer (a publish waiting for its confirm)
    reply_pause: float = 0.0  # the longest time without a reply delivered to any customer


class TimedTraffic(Traffic):
    """:class:`Traffic` that also records when each webhook was answered and how (0: no answer,
    e.g. connection refused or timed out)."""

    def __init__(self, config: Config, replies: Replies, url: str, *, reply_timeout: float) -> None:
        super().__init__(config, replies, url, reply_timeout=reply_timeout)
        self.answers: list[tuple[float, int]] = []
        self.latencies: list[tuple[float, float]] = []  # (answered at, seconds it took)

    async def turn(self, http: httpx.AsyncClient, c: Customer, text: str) -> None:
        body = inbox_payload(c.cid, text)
        c.blocks.append(c.model.turn(text, body["message_id"]))
        url = self.url if isinstance(self.url, str) else self.url()
        with trio.fail_after(self.reply_timeout):
            while True:
                sent_at = time.monotonic()
                try:
                    response: httpx.Response | None = await post_webhook(
                        http, url, body, timeout=15
                    )
                except httpx.HTTPError:
                    response = None
                status = 0 if response is None else response.status_code
                answered_at = time.monotonic()
                self.answers.append((answered_at, status))
                self.latencies.append((answered_at, answered_at - sent_at))
                if response is not None and status == 200:
                    assert response.json() == {"status": "queued"}, response.text
                    break
                assert status in (0, 503), (status, response and response.text)
                self.refused += 1
                await trio.sleep(0.1)
        c.sent += 1
        await self.wait_replies(c)

    def measure(self, fault: Fault, until: float) -> None:
        """The fault's 503s and fail-over window from the answers in [killed_at, until)."""
        after = [(t, s) for t, s in self.answers if fault.killed_at <= t < until]
        refusals = [t for t, s in after if s != 200]
        fault.refused = len(refusals)
        if refusals:
            fault.last_refusal = refusals[-1] - fault.killed_at
            start = refusals[0]
        else:
            start = fault.killed_at
        recovered = next((t for t, s in after if s == 200 and t > start), None)
        assert recovered is not None, f"{fault.name}: no webhook answered 200 after the kill"
        fault.window = recovered - fault.killed_at
        fault.slowest = max(
            (d for t, d in self.latencies if fault.killed_at <= t < until), default=0.0
        )
        times = sorted(
            t for ts in self.replies.times.values() for t in ts if fault.killed_at <= t < until
        )
        gaps = [b - a for a, b in zip([fault.killed_at, *times], times, strict=False)]
        fault.reply_pause = max(gaps, default=until - fault.killed_at)


async def _kill(node: str) -> float:
    killed_at = time.monotonic()
    await trio.to_thread.run_sync(_cluster, "kill", node)
    return killed_at


async def _start(node: str) -> float:
    started = time.monotonic()
    await trio.to_thread.run_sync(_cluster, "start", node)
    return started


async def test_a_lost_rabbitmq_node_loses_and_doubles_nothing(
    cluster: None,
    make_config: Callable[..., Config],
    replies: Replies,
    record_property: Callable[[str, object], None],
) -> None:
    config = make_config(
        rabbitmq_url=URLS,
        rabbitmq_shards="4",
        rabbitmq_reconnect_max_seconds="2",
        chat2desk_timeout_seconds="5",
    )
    prefix = config.rabbitmq.queue_prefix
    faults: list[Fault] = []
    down: set[str] = set()

    async def outage(what: str, node: str, leaders: dict[str, str]) -> None:
        """kill -9 ``node`` under the load, keep it down DOWN_SECONDS, start it, settle."""
        fault = Fault(what, node, await _kill(node))
        down.add(node)
        fault.leaders_lost = sorted(q for q, leader in leaders.items() if leader == node)
        faults.append(fault)
        await trio.sleep(DOWN_SECONDS)  # the outage lasts this long (not a synchronisation)
        fault.restarted_at = await _start(node)
        down.discard(node)
        await trio.sleep(SETTLE_SECONDS)

    try:
        async with botds(config) as group, httpx.AsyncClient() as http:
            proc = await group.start()
            first = _connected_node(proc)
            listing = await trio.to_thread.run_sync(
                _cluster, "ctl", first, "list_connections", "name", "client_properties"
            )
            assert f"botd pid {proc.process.pid}" in listing, listing
            traffic = TimedTraffic(config, replies, proc.url, reply_timeout=120)
            async with trio.open_nursery() as nursery:
                for cid in range(870_001, 870_001 + CUSTOMERS):
                    nursery.start_soon(traffic.dialogs, http, cid, None)
                await trio.sleep(WARM_UP_SECONDS)

                # 1. the node holding botd's connection and leading its queues
                leaders = await trio.to_thread.run_sync(_leaders, prefix, first)
                await outage("connection's node", first, leaders)

                # 2. a node leading shard queues, not holding the connection
                now_on = _connected_node(proc)
                assert now_on != first, "botd did not fail over to another node"
                leaders = await trio.to_thread.run_sync(_leaders, prefix, now_on)
                shard_leaders = [
                    node for q, node in leaders.items() if ".shard." in q and node != now_on
                ]
                victim = (
                    max(set(shard_leaders), key=shard_leaders.count)
                    if shard_leaders
                    else next(n for n in PORTS if n != now_on)
                )
                await outage("a queue leader", victim, leaders)
                traffic.stop = True  # every customer finishes the dialog it is in
            assert proc.process.returncode is None, "\n".join(proc.lines[-30:])
            connections = [m[0] for line in proc.lines if (m := CONNECTED.search(line))]
            broker_log = [line for line in proc.lines if "botd.broker" in line][:40]
            not_queued = Counter(
                VARYING.sub("…", m[1]) for line in proc.lines if (m := NOT_QUEUED.search(line))
            ).most_common(6)
    finally:
        for node in sorted(down):  # never leave the cluster short of a node
            with trio.CancelScope(shield=True):
                await _start(node)

    ends = [f.killed_at for f in faults[1:]] + [time.monotonic()]
    for fault, end in zip(faults, ends, strict=True):
        traffic.measure(fault, end)
    first_kill = faults[0].killed_at
    early = [t for t, s in traffic.answers if s != 200 and t < first_kill]
    audit = traffic.audit()
    lines = [f"\nRabbitMQ node lost under load ({CUSTOMERS} customers, 4 shards, 1 botd):"]
    for n, f in enumerate(faults, 1):
        lines.append(
            f"  fault {n}: kill -9 {f.node} ({f.name}; led {len(f.leaders_lost)} of botd's "
            f"queues): fail-over window {f.window:.2f} s, {f.refused} webhook 503s, last 503 "
            f"{f.last_refusal:.2f} s after the kill, slowest webhook {f.slowest:.2f} s, longest "
            f"pause in replies {f.reply_pause:.2f} s, node down "
            f"{f.restarted_at - f.killed_at:.1f} s"
        )
        record_property(f"fault{n}_node", f.node)
        record_property(f"fault{n}_window_seconds", round(f.window, 3))
        record_property(f"fault{n}_503s", f.refused)
    lines.append("  botd's broker log:")
    lines += [f"    {x}" for x in broker_log]
    lines.append("  why webhooks were refused (count):")
    lines += [f"    {n} × {reason}" for reason, n in not_queued]
    lines.append(f"  audit: {audit}")
    print("\n".join(lines))

    assert not early, f"webhooks refused before any fault: {len(early)}"
    for f in faults:
        assert f.last_refusal <= MAX_WINDOW_SECONDS, f
    assert len(connections) >= 2, connections  # connected, then failed over
    assert audit["customers"] == CUSTOMERS
    assert audit["orders_expected"] > 0
    assert audit["orders_found"] == audit["orders_expected"]
    assert audit["orders_wrong"] == audit["orders_doubled"] == 0
