"""PostgreSQL primary lost, stand-by promoted (docs/operations.md): under load, kill -9 the
primary's postmaster and promote the streaming replica (scripts/cluster.d/postgres.sh); botd,
whose DSN lists both with ``target_session_attrs=read-write``, writes to the new primary as soon
as it is promoted, and every finished dialog has exactly one order — the ones committed before the
kill survive (synchronous replication), an insert whose outcome was lost with the connection is
retried under its idempotency key. The window (kill → first order on the new primary) is
printed. After the test the old primary is rebuilt as the new one's replica, so the test can run
again (the roles alternate).

Needs ``scripts/cluster up`` (or ``source scripts/cluster.d/postgres.sh && postgres_up``) and
the main RabbitMQ and Redis; skipped otherwise.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
import trio

from botd.config import Config
from botd.testing.process import config_env
from tests.faults.support import Replies, Traffic, botds

pytestmark = pytest.mark.cluster

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cluster.d" / "postgres.sh"
NODES = {"pg1": 5441, "pg2": 5442}
CLUSTER_DSN = (
    "postgresql://postgres@127.0.0.1:5441,127.0.0.1:5442/botd?target_session_attrs=read-write"
)
CUSTOMERS = 30
ORDERS_BEFORE_KILL = 20  # load is flowing when the primary dies
ORDERS_AFTER = 20  # orders on the new primary before the customers stop
MAX_WINDOW_SECONDS = 10.0  # promotion → first order (the consumer's retry backs off to 5 s)


def cluster_sh(*command: str, timeout: float = 180) -> str:
    """Run one function of scripts/cluster.d/postgres.sh (sourced, as scripts/cluster does)."""
    done = subprocess.run(
        ["bash", "-c", f'source "{SCRIPT}" && "$@"', "postgres.sh", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


def node_dsn(port: int, schema: str | None = None) -> str:
    dsn = f"postgresql://postgres@127.0.0.1:{port}/botd?connect_timeout=3"
    return dsn if schema is None else f"{dsn}&options={quote(f'-csearch_path={schema}')}"


def role(port: int) -> str | None:
    """'primary', 'replica' or None (not answering)."""
    try:
        with psycopg.connect(node_dsn(port), autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.OperationalError:
        return None
    return "replica" if row and row[0] else "primary"


@dataclass(frozen=True)
class Cluster:
    primary: str
    replica: str
    schema: str
    dsn: str  # the multi-host DSN botd gets, with this test's schema

    def port(self, node: str) -> int:
        return NODES[node]


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    """The cluster's current roles and a schema of this test; afterwards the killed primary is
    rebuilt as the replica of the promoted one and the schema dropped."""
    roles = {node: role(port) for node, port in NODES.items()}
    how = "run `scripts/cluster up` (or `source scripts/cluster.d/postgres.sh && postgres_up`)"
    if None in roles.values():
        pytest.skip(f"PostgreSQL cluster not reachable on 127.0.0.1:5441/5442 {roles}: {how}")
    primaries = [n for n, r in roles.items() if r == "primary"]
    if len(primaries) != 1:
        pytest.skip(f"PostgreSQL cluster needs one primary and one replica, has {roles}: {how}")
    primary = primaries[0]
    replica = next(n for n in NODES if n != primary)
    with psycopg.connect(node_dsn(NODES[primary]), autocommit=True) as conn:
        streaming = conn.execute(
            "SELECT 1 FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
            (replica,),
        ).fetchone()
        if not streaming:
            pytest.skip(f"{replica} does not stream from {primary}: postgres_rebuild {replica}")
        schema = f"t_{secrets.token_hex(6)}"
        conn.execute(f'CREATE SCHEMA "{schema}"')
    cluster = Cluster(
        primary,
        replica,
        schema,
        f"{CLUSTER_DSN}&options={quote(f'-csearch_path={schema}')}",
    )
    try:
        yield cluster
    finally:
        if role(NODES[primary]) is None and role(NODES[replica]) == "primary":
            cluster_sh("postgres_rebuild", primary)
        with psycopg.connect(CLUSTER_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def botd_migrate(config: Config) -> str:
    """``botd migrate`` as an operator runs it, against the multi-host DSN."""
    done = subprocess.run(
        [sys.executable, "-m", "botd", "migrate"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("BOTD_")},
            **config_env(config),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def count_orders(port: int, schema: str, *, since: float | None = None) -> tuple[int, float | None]:
    """(orders, earliest created_at as a Unix time) on one node, those created after ``since``
    only when given; (−1, None) while the node does not answer."""
    sql = "SELECT count(*), extract(epoch FROM min(created_at))::float8 FROM orders"
    try:
        with psycopg.connect(node_dsn(port, schema), autocommit=True) as conn:
            if since is None:
                row = conn.execute(sql).fetchone()
            else:
                row = conn.execute(
                    sql + " WHERE created_at > to_timestamp(%s)", (since,)
                ).fetchone()
    except psycopg.OperationalError:
        return -1, None
    assert row is not None
    return int(row[0]), row[1]


async def wait_orders(
    port: int, schema: str, n: int, *, since: float | None = None, timeout: float = 90
) -> float | None:
    """Wait until ``n`` orders (created after ``since``) are on the node; their earliest time."""
    with trio.fail_after(timeout):
        while True:
            count, first = await trio.to_thread.run_sync(
                lambda: count_orders(port, schema, since=since)
            )
            if count >= n:
                return first
            await trio.sleep(0.05)


@dataclass
class ReadyWatch:
    """What /ready said about PostgreSQL from the kill on (the operator's view)."""

    down_at: float | None = None
    up_again_at: float | None = None
    body: str = ""


async def watch_ready(http: httpx.AsyncClient, url: str, since: float, seen: ReadyWatch) -> None:
    """Look at /ready every 0.1 s until PostgreSQL was down and is up again (or cancelled)."""
    while seen.up_again_at is None:
        try:
            response = await http.get(url + "/ready", timeout=5)
            state = response.json().get("postgres")
        except (httpx.HTTPError, ValueError):
            state = None
        now = trio.current_time() - since
        if state == "down" and seen.down_at is None:
            seen.down_at, seen.body = now, response.text
        elif state == "up" and seen.down_at is not None:
            seen.up_again_at = now
        await trio.sleep(0.1)


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    return float(m[1]) if m else float("nan")


def walreceiver_pid(port: int) -> int:
    with psycopg.connect(node_dsn(port), autocommit=True) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_wal_receiver").fetchone()
    assert row is not None, "the replica has no WAL receiver"
    return int(row[0])


def sync_waiters(port: int) -> int:
    """Inserts committed on the primary that wait for the stand-by's flush (outcome unknown to
    their client until it comes)."""
    with psycopg.connect(node_dsn(port), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' "
            "AND query LIKE '%INSERT INTO orders%'"
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def stalled(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize(
    ("promote_after", "in_flight"),
    [(0.0, False), (5.0, False), (0.0, True)],
    ids=["promoted-at-once", "promoted-after-5s", "inserts-in-flight"],
)
async def test_primary_killed_standby_promoted_orders_resume_exactly_once(
    make_config: Callable[..., Config],
    replies: Replies,
    pg_cluster: Cluster,
    promote_after: float,
    in_flight: bool,
) -> None:
    """``promote_after``: at once (as a fail-over manager would) or after 5 s without a primary
    (as an operator would), which has botd's retries back off meanwhile. ``in_flight``: the
    replica's WAL receiver is stopped (SIGSTOP) before the kill, so order inserts are committed
    on the primary but wait for the stand-by when it dies: their outcome is unknown to botd,
    which retries them on the new primary under the same idempotency key."""
    cl = pg_cluster
    config = make_config(postgres_dsn=cl.dsn, rabbitmq_shards="4")
    migrated = botd_migrate(config)
    customers = list(range(880_001, 880_001 + CUSTOMERS))
    watch = ReadyWatch()
    async with botds(config) as group, httpx.AsyncClient() as http:
        proc = await group.start()
        traffic = Traffic(config, replies, proc.url, reply_timeout=120)
        async with trio.open_nursery() as nursery:
            for cid in customers:
                nursery.start_soon(traffic.dialogs, http, cid, None)
            await wait_orders(cl.port(cl.primary), cl.schema, ORDERS_BEFORE_KILL)
            before_kill = count_orders(cl.port(cl.primary), cl.schema)[0]

            waiting = 0
            with ExitStack() as stack:
                if in_flight:
                    stack.enter_context(stalled(walreceiver_pid(cl.port(cl.replica))))
                    with trio.fail_after(30):
                        while waiting < 3:
                            await trio.sleep(0.05)
                            waiting = await trio.to_thread.run_sync(
                                sync_waiters, cl.port(cl.primary)
                            )
                killed = trio.current_time()
                watching = trio.CancelScope()

                async def watch_ready_until_stopped() -> None:
                    with watching:
                        await watch_ready(http, proc.url, killed, watch)

                nursery.start_soon(watch_ready_until_stopped)
                said = await trio.to_thread.run_sync(cluster_sh, "postgres_kill", cl.primary)
            # when the signal was sent: an order created later can only be the new primary's
            killed_wall = float(re.findall(r"SIGKILL at ([\d.]+)", said)[0])
            await trio.sleep_until(killed + promote_after)
            await trio.to_thread.run_sync(cluster_sh, "postgres_promote", cl.replica)
            promoted = time.time() - killed_wall  # pg_ctl promote -w is back: it takes writes

            port = cl.port(cl.replica)
            first_wall = await wait_orders(port, cl.schema, 1, since=killed_wall)
            assert first_wall is not None
            await wait_orders(port, cl.schema, ORDERS_AFTER, since=killed_wall)
            traffic.stop = True  # each customer finishes the dialog it is in
            watching.cancel()
        with trio.fail_after(60):  # the relay, too, found the new primary
            while (await trio.to_thread.run_sync(lambda: unpublished(port, cl.schema))) > 0:
                await trio.sleep(0.2)
        metrics = (await http.get(proc.url + "/metrics", timeout=10)).text
    window = first_wall - killed_wall
    audit = traffic.audit()
    retries = [line for line in proc.lines if "retrying in" in line]
    pg_retries = [line for line in retries if "postgres unavailable" in line]
    dialogs = sum(c.done_dialogs for c in traffic.customers.values())
    print(
        f"\npostgres fail-over: {cl.primary} killed (kill -9), {cl.replica} promoted after "
        f"{promoted * 1000:.0f} ms; first order on {cl.replica} {window * 1000:.0f} ms after the "
        f"kill ({(window - promoted) * 1000:.0f} ms after the promotion); /ready said postgres "
        "down after "
        f"{'-' if watch.down_at is None else f'{watch.down_at * 1000:.0f} ms'}, up again after "
        f"{'-' if watch.up_again_at is None else f'{watch.up_again_at * 1000:.0f} ms'}; "
        f"{before_kill} orders before the kill, {waiting} inserts in flight at the kill, "
        f"{dialogs} dialogs finished, orders created by botd "
        f"{metric(metrics, 'botd_orders_placed_total'):.0f} (the others found by their key "
        "when retried); "
        f"{len(pg_retries)} postgres retries logged ({len(retries)} transient in all, "
        f"botd_processing_retries {metric(metrics, 'botd_processing_retries_total')}); {audit}"
    )
    for line in retries[:6]:
        print("  ", line[:240])
    assert "applied 0001_" in migrated, migrated
    assert window - promoted < MAX_WINDOW_SECONDS
    assert audit["orders_expected"] == dialogs >= ORDERS_BEFORE_KILL + ORDERS_AFTER
    assert audit["orders_found"] == audit["orders_expected"], "an order was lost"
    assert audit["orders_doubled"] == 0, "an order was doubled"
    assert audit["orders_wrong"] == 0
    if promote_after >= 1:  # a shorter outage may fall between two looks at /ready
        assert watch.down_at is not None and watch.up_again_at is not None, watch
        assert '"postgres":"down"' in watch.body.replace(" ", ""), watch.body


def unpublished(port: int, schema: str) -> int:
    with psycopg.connect(node_dsn(port, schema), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM order_events WHERE published_at IS NULL"
        ).fetchone()
    return int(row[0]) if row else 0
