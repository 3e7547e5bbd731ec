"""Cost of the Trio→asyncio bridge (docs/design.md §5): ``python -m bench.bench_bridge``.

Measures, each as the median of REPS repetitions (after one warm-up repetition; bridged and
native repetitions alternate so that both see the same machine load):

- one crossing alone: sequential ``await bridge.run(noop)`` (median per-call latency);
- per-call cost with 100 calls in flight (wall time / calls);
- Redis ``PING``: through the bridge vs natively (``asyncio`` on uvloop, no Trio);
- PostgreSQL ``SELECT 1`` on an autocommit psycopg ``AsyncConnectionPool``: through the bridge vs
  natively;
- RabbitMQ: a persistent publish to a quorum queue awaiting its confirm, one at a time, natively
  (aiormq): the floor under an idle webhook answer, which is sent only after that confirm.

The native runs happen in the same process, sequentially, between the bridged ones. Uses the
services on loopback (override with BOTD_BENCH_REDIS_URL / BOTD_BENCH_PG_DSN).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq
import psycopg
import redis.asyncio as aioredis
import trio
import uvloop
from psycopg_pool import AsyncConnectionPool

from botd.bridge import AsyncioBridge, open_bridge

REDIS_URL = os.environ.get("BOTD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("BOTD_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

REPS = 7  # measured repetitions (plus one warm-up repetition)
WARMUP = 100  # unmeasured calls before each sequential measurement
N_SEQ = 2000  # sequential crossings per repetition
IN_FLIGHT = 100  # concurrent callers
N_PER_CALLER = 50  # calls per concurrent caller per repetition
N_PING = 1000  # Redis PINGs per repetition
N_SELECT = 1000  # SELECT 1 per repetition
N_CONFIRM = 300  # confirmed publishes per repetition
AMQP_URL = os.environ.get("BOTD_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CONFIRM_QUEUE = "botd-bench.confirm"

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


def _us(seconds: float) -> float:
    return seconds * 1e6


def _median_latency(samples_ns: list[int]) -> float:
    """Median of per-call latencies, in seconds."""
    return statistics.median(samples_ns) / 1e9


async def _noop() -> None:
    return None


# --- measurement primitives ----------------------------------------------------------------------


async def _trio_sequential(
    bridge: AsyncioBridge, fn: Callable[[], Awaitable[Any]], n: int
) -> float:
    """Median latency of ``n`` sequential bridged calls."""
    samples: list[int] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await bridge.run(fn)
        samples.append(time.perf_counter_ns() - t0)
    return _median_latency(samples)


async def _trio_in_flight(bridge: AsyncioBridge, fn: Callable[[], Awaitable[Any]]) -> float:
    """Wall time per call with IN_FLIGHT callers, each making N_PER_CALLER sequential calls."""

    async def caller() -> None:
        for _ in range(N_PER_CALLER):
            await bridge.run(fn)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(IN_FLIGHT):
            nursery.start_soon(caller)
    return (time.perf_counter() - t0) / (IN_FLIGHT * N_PER_CALLER)


async def _asyncio_sequential(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    samples: list[int] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await fn()
        samples.append(time.perf_counter_ns() - t0)
    return _median_latency(samples)


async def _asyncio_in_flight(fn: Callable[[], Awaitable[Any]]) -> float:
    """Wall time per call with IN_FLIGHT asyncio callers, each making N_PER_CALLER calls."""

    async def caller() -> None:
        for _ in range(N_PER_CALLER):
            await fn()

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    return (time.perf_counter() - t0) / (IN_FLIGHT * N_PER_CALLER)


# --- the clients -------------------------------------------------------------------------------


async def _open_redis() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.ping()
    return client


async def _open_pg_pool() -> Pool:
    pool: Pool = AsyncConnectionPool(
        PG_DSN, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True, timeout=10)
    return pool


def _pg_select_one(pool: Pool) -> Callable[[], Awaitable[Any]]:
    async def select_one() -> Any:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT 1")
            return await cur.fetchone()

    return select_one


# --- the runs -----------------------------------------------------------------------------------

Results = dict[str, float]


async def _bridged_once() -> Results:
    results: Results = {}
    async with open_bridge("bench-asyncio") as bridge:
        await _trio_sequential(bridge, _noop, WARMUP)
        results["crossing alone (sequential noop)"] = await _trio_sequential(bridge, _noop, N_SEQ)
        results[f"crossing, {IN_FLIGHT} in flight (noop)"] = await _trio_in_flight(bridge, _noop)

        client = await bridge.run(_open_redis)
        try:

            async def ping() -> Any:
                return await client.ping()

            await _trio_sequential(bridge, ping, WARMUP)
            results["redis PING via bridge"] = await _trio_sequential(bridge, ping, N_PING)
            results[f"redis PING via bridge, {IN_FLIGHT} in flight"] = await _trio_in_flight(
                bridge, ping
            )
        finally:
            await bridge.run(client.aclose)

        pool = await bridge.run(_open_pg_pool)
        try:
            select_one = _pg_select_one(pool)
            await _trio_sequential(bridge, select_one, WARMUP)
            results["pg SELECT 1 via bridge"] = await _trio_sequential(bridge, select_one, N_SELECT)
        finally:
            await bridge.run(pool.close)
    return results


async def _native_once() -> Results:
    results: Results = {}
    client = await _open_redis()
    try:

        async def ping() -> Any:
            return await client.ping()

        await _asyncio_sequential(ping, WARMUP)
        results["redis PING native"] = await _asyncio_sequential(ping, N_PING)
        results[f"redis PING native, {IN_FLIGHT} in flight"] = await _asyncio_in_flight(ping)
    finally:
        await client.aclose()

    pool = await _open_pg_pool()
    try:
        select_one = _pg_select_one(pool)
        await _asyncio_sequential(select_one, WARMUP)
        results["pg SELECT 1 native"] = await _asyncio_sequential(select_one, N_SELECT)
    finally:
        await pool.close()

    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_declare(
            CONFIRM_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        properties = aiormq.spec.Basic.Properties(delivery_mode=2)

        async def publish() -> Any:
            return await channel.basic_publish(
                b'{"message_id":"1"}', routing_key=CONFIRM_QUEUE, properties=properties
            )

        await _asyncio_sequential(publish, WARMUP)
        results["amqp publish + confirm (quorum) native"] = await _asyncio_sequential(
            publish, N_CONFIRM
        )
        await channel.queue_delete(CONFIRM_QUEUE)
    finally:
        await connection.close()
    return results


def main() -> None:
    runs: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    # Bridged and native repetitions alternate so that both see the same machine load; the first
    # repetition is a warm-up and is discarded.
    for rep in range(REPS + 1):
        bridged = trio.run(_bridged_once)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            native = runner.run(_native_once())
        if rep:
            for name, value in (bridged | native).items():
                runs.setdefault(name, []).append(value)
    elapsed = time.perf_counter() - t0

    print(f"bridge benchmark: median of {REPS} repetitions (µs per call; each run in brackets)")
    width = max(len(k) for k in runs)
    for name, values in runs.items():
        spread = ", ".join(f"{_us(v):.1f}" for v in values)
        print(f"  {name:<{width}}  {_us(statistics.median(values)):8.1f}   [{spread}]")
    pairs = [
        ("redis PING", "redis PING via bridge", "redis PING native"),
        (
            f"redis PING, {IN_FLIGHT} in flight",
            f"redis PING via bridge, {IN_FLIGHT} in flight",
            f"redis PING native, {IN_FLIGHT} in flight",
        ),
        ("pg SELECT 1", "pg SELECT 1 via bridge", "pg SELECT 1 native"),
    ]
    for what, via_key, native_key in pairs:
        via = statistics.median(runs[via_key])
        direct = statistics.median(runs[native_key])
        extra = _us(via - direct)
        print(f"  {what}: the bridge adds {extra:.1f} µs per call ({via / direct:.2f}× native)")
    print(f"total {elapsed:.1f} s")


if __name__ == "__main__":
    main()
