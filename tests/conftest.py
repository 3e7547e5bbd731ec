"""Shared fixtures: real RabbitMQ, Redis and PostgreSQL, each test in its own namespace.

- RabbitMQ: one vhost per test session (created with rabbitmqctl, deleted at the end) and a
  queue prefix per test, whose queues are deleted after the test;
- Redis: a key prefix per test, whose keys are deleted after the test;
- PostgreSQL: database ``botd_test`` and a schema per test (``search_path`` in the DSN).
The Chat2Desk API is the in-process fake (a real HTTP server on loopback).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import redis
import trio

from botd import daemon
from botd.bridge import AsyncioBridge, open_bridge
from botd.broker import Broker, layout, open_broker
from botd.chat_api import ChatApi, open_chat_api
from botd.config import Chat2DeskConfig, Config, load_config
from botd.migrate import apply_migrations
from botd.testing.fake_chat2desk import FakeChat2Desk, open_fake_chat2desk

PG_ADMIN_DSN = os.environ.get(
    "BOTD_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_TEST_DB = "botd_test"
REDIS_URL = os.environ.get("BOTD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_BASE = os.environ.get("BOTD_TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
TOKEN = "test-token"


def _pg_base_dsn() -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{PG_TEST_DB}"


@pytest.fixture(scope="session")
def pg_database() -> str:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (PG_TEST_DB,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{PG_TEST_DB}"')
    return _pg_base_dsn()


@pytest.fixture
def pg_dsn(pg_database: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh schema with botd's tables migrated."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    dsn = f"{pg_database}?options={quote(f'-csearch_path={schema}')}"
    try:
        yield dsn
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def migrated_dsn(pg_dsn: str) -> str:
    apply_migrations(pg_dsn)
    return pg_dsn


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"botdtest:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _rabbitmqctl(*args: str, timeout: float = 60) -> None:
    """Run rabbitmqctl; on timeout kill its whole process group (the Erlang CLI included —
    an orphaned CLI holds a distribution port and, piled up, wedges later rabbitmqctl calls)."""
    proc = subprocess.Popen(
        ["rabbitmqctl", "-q", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)


@pytest.fixture(scope="session")
def amqp_vhost_url() -> Iterator[str]:
    """A vhost for this test session, so nothing a test leaves behind touches other users."""
    vhost = f"botd-test-{os.getpid()}-{secrets.token_hex(3)}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"{AMQP_BASE}/{quote(vhost, safe='')}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def queue_prefix() -> str:
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
def make_config(
    amqp_vhost_url: str,
    queue_prefix: str,
    redis_prefix: str,
    migrated_dsn: str,
    fake: FakeChat2Desk,
) -> Callable[..., Config]:
    """Build this test's config (its own queues, keys and schema on the real services, the fake
    Chat2Desk) with overrides as ``section_key="value"``, e.g. ``make_config(rabbitmq_shards="4")``.
    """

    def build(**overrides: str) -> Config:
        env = {
            "BOTD_WEBHOOK_PORT": "0",
            # loopback only; the tests about authentication set a path token or a secret
            "BOTD_WEBHOOK_ALLOW_UNAUTHENTICATED": "true",
            "BOTD_RABBITMQ_URL": amqp_vhost_url,
            "BOTD_RABBITMQ_QUEUE_PREFIX": queue_prefix,
            "BOTD_RABBITMQ_SHARDS": "2",
            "BOTD_REDIS_URL": REDIS_URL,
            "BOTD_REDIS_KEY_PREFIX": redis_prefix,
            "BOTD_POSTGRES_DSN": migrated_dsn,
            "BOTD_CHAT2DESK_BASE_URL": fake.base_url,
            "BOTD_CHAT2DESK_TOKEN": TOKEN,
            "BOTD_CHAT2DESK_REQUESTS_PER_MINUTE": "60000",
            "BOTD_CHAT2DESK_BURST": "1000",
            "BOTD_CHAT2DESK_TIMEOUT_SECONDS": "2",
            "BOTD_OUTBOX_MAX_BACKOFF_SECONDS": "2",
            "BOTD_DAEMON_SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
        env.update({f"BOTD_{key.upper()}": value for key, value in overrides.items()})
        return load_config(None, env=env)

    return build


@pytest.fixture
async def fake() -> AsyncIterator[FakeChat2Desk]:
    async with open_fake_chat2desk(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """For running ``botd.cli.main`` in-process: no BOTD_* from the outer environment, the cwd a
    fresh directory without config.toml (yielded), the root logger restored afterwards."""
    for name in list(os.environ):
        if name.startswith("BOTD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield tmp_path
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


@pytest.fixture
async def bridge() -> AsyncIterator[AsyncioBridge]:
    async with open_bridge() as b:
        yield b


OpenApi = Callable[[Chat2DeskConfig], AbstractAsyncContextManager[ChatApi]]


@pytest.fixture
async def open_api(bridge: AsyncioBridge) -> AsyncIterator[OpenApi]:
    """``open_chat_api`` on this test's bridge."""
    yield partial(open_chat_api, bridge=bridge)


@pytest.fixture
async def broker(bridge: AsyncioBridge, config: Config) -> AsyncIterator[Broker]:
    """A connected broker with the test's topology declared; its queues are deleted afterwards."""
    async with (
        open_broker(bridge, config.rabbitmq, **layout(config)) as b,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(b.serve)
        yield b
        with trio.CancelScope(shield=True):
            await b.delete_queues()
        nursery.cancel_scope.cancel()


@pytest.fixture
async def running(config: Config, amqp_vhost_url: str) -> AsyncIterator[daemon.Running]:
    """The whole daemon, started in-process on port 0; drained and stopped after the test."""
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        handle: daemon.Running = await nursery.start(partial(daemon.serve, config, stop=stop))
        yield handle
        stop.set()
    await delete_queues(config)


async def delete_queues(config: Config) -> None:
    """Remove the test's queues (quorum queues are not free: don't let them pile up)."""
    with trio.CancelScope(shield=True):
        async with (
            open_bridge() as b,
            open_broker(b, config.rabbitmq, **layout(config)) as broker,
        ):
            await broker.connect_once()
            await broker.delete_queues()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests (``@pytest.mark.slow``, anywhere under tests/) run only when asked:
    ``pytest -m slow tests`` (``scripts/chaos pytest``); the multi-node tests
    (``@pytest.mark.cluster``) only with ``pytest -m cluster tests`` (``scripts/cluster test``).
    A session-wide hook: it sees every item."""
    asked = config.getoption("markexpr", "") or ""
    for marker, how in (("slow", "scripts/chaos pytest"), ("cluster", "scripts/cluster test")):
        if marker in asked:
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: run with `{how}`")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
