"""Shared set-up for benchmarks: a private namespace on the real services, and cleanup."""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import psycopg
import redis

from botd.bridge import open_bridge
from botd.broker import layout, open_broker
from botd.config import Config, load_config
from botd.migrate import apply_migrations

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "botd_bench"


def _ensure_db() -> str:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone():
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}"


@asynccontextmanager
async def bench_config(base_url: str, **env: str) -> AsyncIterator[Config]:
    """A config in a fresh schema / key prefix / queue prefix; everything removed afterwards."""
    tag = secrets.token_hex(4)
    schema = f"bench_{tag}"
    base = _ensure_db()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    dsn = f"{base}?options={quote(f'-csearch_path={schema}')}"
    apply_migrations(dsn)
    values = {
        "BOTD_WEBHOOK_PORT": "0",
        "BOTD_WEBHOOK_ALLOW_UNAUTHENTICATED": "true",  # loopback only, like the tests
        "BOTD_RABBITMQ_QUEUE_PREFIX": f"bench{tag}",
        "BOTD_REDIS_KEY_PREFIX": f"botdbench:{tag}:",
        "BOTD_POSTGRES_DSN": dsn,
        "BOTD_CHAT2DESK_BASE_URL": base_url,
        "BOTD_CHAT2DESK_TOKEN": "test-token",
        "BOTD_CHAT2DESK_REQUESTS_PER_MINUTE": "100000",
        "BOTD_CHAT2DESK_BURST": "10000",
        "BOTD_LOG_LEVEL": "WARNING",
        **env,
    }
    config = load_config(None, env=values)
    try:
        yield config
    finally:
        async with (
            open_bridge() as bridge,
            open_broker(bridge, config.rabbitmq, **layout(config)) as b,
        ):
            await b.connect_once()
            await b.delete_queues()
        client = redis.Redis.from_url(config.redis.url)
        keys = list(client.scan_iter(match=f"{config.redis.key_prefix}*", count=5000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_cpu_seconds(pid: int) -> float:
    """The system (kernel) part of :func:`cpu_seconds`: syscalls, and on loopback the network
    stack's work for the peer's socket too."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def add_env_option(parser: argparse.ArgumentParser) -> None:
    """``--env NAME=VALUE`` (repeatable): extra environment for the botd process under test."""
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the botd process (e.g. BOTD_TEST_THREADED_BRIDGE=1)",
    )


def env_option(args: argparse.Namespace) -> dict[str, str]:
    return dict(e.split("=", 1) for e in args.env)


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches so far, summed over the process's threads (each
    is a sleep and wake-up of a thread: I/O waits, GIL hand-offs between botd's two threads)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
        except FileNotFoundError:
            continue  # the thread ended meanwhile
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_count() -> int:
    return os.cpu_count() or 1
