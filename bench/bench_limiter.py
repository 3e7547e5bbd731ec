"""Cost per send of the Redis-shared rate limiter (docs/design.md §3.6):
``python bench/bench_limiter.py``.

Latency of one ``SharedLimiter.acquire()`` that is admitted at once (the limit set far above the
load, so it measures the script round trip through the asyncio bridge, not the waiting), as
p50/p99 in µs over N sequential calls, next to:

- one bare bridge crossing (``await bridge.run(noop)``);
- a Redis ``PING`` through the bridge;
- the in-process ``TokenBucket.acquire()``;
- the shared limiter with two limiters on two bridges (two "processes") acquiring concurrently.

Runs with the daemon's GIL switch interval (``tune_runtime``). Uses Redis on loopback (override with BOTD_BENCH_REDIS_URL); its keys are removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
import trio

from botd.bridge import AsyncioBridge, open_bridge
from botd.daemon import tune_runtime
from botd.ratelimit import TokenBucket
from botd.shared_limiter import open_limiter

REDIS_URL = os.environ.get("BOTD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
N = 5000  # measured calls per variant
WARMUP = 200
LIMIT, BURST = 100_000, 10_000  # per 60 s: never the bottleneck below


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1e3, p99 / 1e3


async def timed(fn: Callable[[], Awaitable[Any]], n: int = N) -> list[int]:
    for _ in range(WARMUP):
        await fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await fn()
        samples.append(time.perf_counter_ns() - t0)
    return samples


def report(name: str, samples: list[int]) -> None:
    p50, p99 = percentiles(samples)
    print(f"{name:<52} p50 {p50:7.1f} µs   p99 {p99:7.1f} µs")


async def ping_through(bridge: AsyncioBridge) -> list[int]:
    holder: dict[str, aioredis.Redis] = {}

    async def open_client() -> None:
        holder["c"] = aioredis.Redis.from_url(REDIS_URL)

    async def close_client() -> None:
        await holder["c"].aclose()

    await bridge.run(open_client)
    try:
        return await timed(lambda: bridge.run(holder["c"].ping))
    finally:
        await bridge.run(close_client)


async def main() -> None:
    key = f"botdbench:{secrets.token_hex(4)}:ratelimit:bench"
    try:
        async with open_bridge() as bridge:

            async def noop() -> None:
                return None

            report("bridge crossing (noop)", await timed(lambda: bridge.run(noop)))
            report("Redis PING through the bridge", await ping_through(bridge))
            bucket = TokenBucket(LIMIT, BURST)
            report("TokenBucket.acquire (in process)", await timed(bucket.acquire, BURST - 500))
            async with open_limiter(
                bridge, redis_url=REDIS_URL, key=key, limit=LIMIT, burst=BURST
            ) as limiter:
                report("SharedLimiter.acquire (one process)", await timed(limiter.acquire))
        # two "processes": each its own bridge and client, acquiring at the same time
        results: list[list[int]] = []

        async def one(key_: str) -> None:
            async with (
                open_bridge() as b,
                open_limiter(b, redis_url=REDIS_URL, key=key_, limit=LIMIT, burst=BURST) as lim,
            ):
                results.append(await timed(lim.acquire, N // 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, f"{key}2")  # a fresh account: a full burst
            nursery.start_soon(one, f"{key}2")
        report("SharedLimiter.acquire (two limiters concurrently)", results[0] + results[1])
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.delete(key, f"{key}:admitted", f"{key}2", f"{key}2:admitted")
        finally:
            client.close()


if __name__ == "__main__":
    tune_runtime()  # the GIL switch interval botd runs with (§9)
    trio.run(main)
