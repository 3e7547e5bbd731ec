"""What a PostgreSQL stand-by asks of botd, without the cluster (docs/operations.md, "PostgreSQL
primary lost"): a multi-host DSN is valid configuration and works for ``botd migrate`` and the
order store; a write that lands on a read-only server is transient, and its connection is
dropped so the next one finds the primary. The fail-over itself:
tests/cluster/test_postgres_failover.py."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import psycopg
import pytest
import trio

from botd.bridge import AsyncioBridge
from botd.config import PostgresConfig, describe, load_config
from botd.dialog import OrderDraft
from botd.errors import ConfigError, TransientError
from botd.migrate import apply_migrations, latest_version
from botd.order_store import _translate, open_order_store
from tests.helpers import orders

CLUSTER_DSN = (
    "postgresql://postgres@127.0.0.1:5441,127.0.0.1:5442/botd?target_session_attrs=read-write"
)


def draft(key: str) -> OrderDraft:
    return OrderDraft(
        idempotency_key=key,
        client_id="17340089",
        phone="+996555123456",
        address="ул. Токтогула 125, кв. 4",
        quantity=3,
    )


def with_dead_host_first(dsn: str) -> str:
    """``dsn`` with a refused host (port 1) in front: libpq must go on to the real one."""
    parts = urlsplit(dsn)
    user, at, hosts = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user}{at}127.0.0.1:1,{hosts}").geturl()


@pytest.mark.parametrize(
    "dsn",
    [
        CLUSTER_DSN,
        "postgresql://botd:s3cret@db1.example:5432,db2.example:5432/botd",
        "postgres://u@db1,db2,db3/botd?target_session_attrs=primary",
        "postgresql://u@[::1]:5441,[2001:db8::2]:5442/botd",
        "postgresql://postgres@127.0.0.1:5432/botd",
        "postgresql:///botd?host=/var/run/postgresql",
    ],
)
def test_multi_host_dsn_passes_config_validation(dsn: str) -> None:
    assert load_config(None, env={"BOTD_POSTGRES_DSN": dsn}).postgres.dsn == dsn


@pytest.mark.parametrize(
    "dsn",
    [
        "mysql://db1,db2/botd",
        "postgresql://u@db1:5432,:5433/botd",  # an empty host
        "postgresql://u@db1:5432,db2:x/botd",  # a port that is no number
        "postgresql://u@db1:70000/botd",
        "postgresql://u@/botd",
    ],
)
def test_malformed_dsn_is_refused_naming_the_multi_host_form(dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"BOTD_POSTGRES_DSN": dsn})
    (problem,) = info.value.problems
    assert "BOTD_POSTGRES_DSN" in problem
    assert "postgresql://user@host1:port1,host2:port2/db" in problem


def test_multi_host_dsn_password_is_masked() -> None:
    config = load_config(
        None, env={"BOTD_POSTGRES_DSN": "postgresql://botd:s3cret@db1:5432,db2:5432/botd"}
    )
    shown = [row for row in describe(config) if row[0] == "postgres" and row[1] == "dsn"]
    assert shown
    assert all("s3cret" not in " ".join(row) for row in shown)


def test_migrate_and_the_order_store_accept_a_multi_host_dsn(migrated_dsn: str) -> None:
    # migrated already through the one-host DSN: through the list it is up to date
    assert apply_migrations(with_dead_host_first(migrated_dsn)) == []
    with psycopg.connect(with_dead_host_first(migrated_dsn)) as conn:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert row is not None and row[0] == latest_version()


async def test_order_store_places_through_a_multi_host_dsn(
    bridge: AsyncioBridge, migrated_dsn: str
) -> None:
    dsn = with_dead_host_first(migrated_dsn) + "&target_session_attrs=read-write"
    async with open_order_store(bridge, PostgresConfig(dsn=dsn)) as store:
        order_id = await store.place(draft("dialog-multi-host-1"))
    assert [r["id"] for r in orders(migrated_dsn)] == [order_id]


def test_read_only_server_is_transient(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as info:
            conn.execute("CREATE TABLE never_made (id int)")
    assert isinstance(_translate(info.value), TransientError)


async def test_write_on_a_read_only_connection_is_retried_on_a_fresh_one(
    bridge: AsyncioBridge, migrated_dsn: str
) -> None:
    """The pool's one connection turns read-only (as a server turned stand-by would be): the
    insert is transient, and the retry gets a new connection instead of the same read-only one."""
    config = PostgresConfig(dsn=migrated_dsn, pool_min_size=1, pool_max_size=1)
    async with open_order_store(bridge, config) as store:
        (before,) = await store._run("SELECT pg_backend_pid()", None, timeout=10)
        await store._run("SET default_transaction_read_only = on", None, timeout=10)
        with pytest.raises(TransientError, match="read-only"):
            await store.place(draft("dialog-read-only-1"))
        order_id = await store.place(draft("dialog-read-only-1"))
        (after,) = await store._run("SELECT pg_backend_pid()", None, timeout=10)
    assert after != before
    assert [r["id"] for r in orders(migrated_dsn)] == [order_id]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def serve_proxy(port: int, target: tuple[str, int]) -> None:
    """Forward 127.0.0.1:``port`` to ``target`` (the main PostgreSQL): a server that is down
    (connection refused) until this starts, as a promoted stand-by is to botd until promotion."""

    async def pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except trio.BrokenResourceError:
            pass
        done.cancel()

    async def handle(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(*target)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, server, nursery.cancel_scope)
            nursery.start_soon(pump, server, client, nursery.cancel_scope)

    await trio.serve_tcp(handle, port, host="127.0.0.1")


async def test_a_waiting_insert_gets_the_database_soon_after_it_is_back(
    bridge: AsyncioBridge, migrated_dsn: str
) -> None:
    """psycopg_pool gives up a failed reconnect and leaves a request already waiting to wait out
    its whole timeout; botd asks again every second, so the insert runs about a second after
    the server answers again (the fail-over window), not 10 s later."""
    parts = urlsplit(migrated_dsn)
    target = (parts.hostname or "127.0.0.1", parts.port or 5432)
    port = free_port()
    user = parts.netloc.rpartition("@")[0]
    dsn = parts._replace(netloc=f"{user}@127.0.0.1:{port}").geturl()
    back_after = 1.5
    async with (
        open_order_store(bridge, PostgresConfig(dsn=dsn)) as store,
        trio.open_nursery() as nursery,
    ):

        async def come_back() -> None:
            await trio.sleep(back_after)
            await serve_proxy(port, target)

        nursery.start_soon(come_back)
        started = trio.current_time()
        order_id = await store.place(draft("dialog-back-soon-1"), timeout=10)
        took = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert [r["id"] for r in orders(migrated_dsn)] == [order_id]
    assert took < back_after + 2.5, f"the insert waited {took:.1f}s"
