"""The account-wide Chat2Desk limiter in Redis (docs/design.md §3.6), against the real Redis and in
real time, with the 60 s window scaled down to seconds (the margin scales with it: 1 s per 60 s).

Two limiters on two asyncio bridges with two Redis clients stand for two ``botd run`` processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import redis
import trio
import trio.testing

from botd.bridge import open_bridge
from botd.errors import TransientError
from botd.shared_limiter import SharedLimiter, limiter_key, open_limiter
from tests.conftest import REDIS_URL, TOKEN
from tests.helpers import max_in_any_window

OpenLimiter = Callable[..., AbstractAsyncContextManager[SharedLimiter]]


@pytest.fixture
def limiter_at(redis_prefix: str) -> OpenLimiter:
    """``limiter_at(limit=…, burst=…, window_seconds=…)``: a limiter on a bridge of its own (a
    process of its own), all of one test on the same account key."""

    @asynccontextmanager
    async def opened(**kw: Any) -> AsyncIterator[SharedLimiter]:
        kw.setdefault("redis_url", REDIS_URL)
        kw.setdefault("key", limiter_key(redis_prefix, TOKEN))
        async with open_bridge() as bridge, open_limiter(bridge, **kw) as limiter:
            yield limiter

    return opened


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A plain client to look at (or plant) the limiter's keys."""
    c = redis.Redis.from_url(REDIS_URL)
    yield c
    c.close()


async def test_two_processes_never_exceed_the_limit_and_use_it(limiter_at: OpenLimiter) -> None:
    window, limit, burst, windows = 2.0, 40, 5, 5
    times: list[float] = []
    by: dict[int, int] = {0: 0, 1: 0}

    async def hammer(limiter: SharedLimiter, n: int) -> None:
        while True:
            await limiter.acquire()
            times.append(trio.current_time())
            by[n] += 1

    async with (
        limiter_at(limit=limit, burst=burst, window_seconds=window) as a,
        limiter_at(limit=limit, burst=burst, window_seconds=window) as b,
    ):
        with trio.move_on_after(windows * window + 0.5):
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(hammer, a, 0)
                    nursery.start_soon(hammer, b, 1)
        stats = (a.statistics(), b.statistics())
    times.sort()
    worst = max_in_any_window(times, window)
    # The steady rate: under a backlog the pattern repeats every `limit` admissions (each one
    # waits for the one `limit` places before it to leave the window + margin), so the rate is
    # k·limit admissions over the time from admission 0 to admission k·limit.
    k = (len(times) - 1) // limit
    utilisation = k * window / (times[k * limit] - times[0])
    print(
        f"\ntwo limiters, {limit} per {window:g}s window, burst {burst}: admitted {by}, "
        f"worst window {worst}, steady rate over {k} cycles = {utilisation:.2%} of the limit "
        f"(the 1/60 margin allows at most {60 / 61:.2%})"
    )
    assert worst <= limit
    assert by[0] > 0 and by[1] > 0, "both processes sent"
    assert utilisation >= 0.975
    assert (stats[0].admitted, stats[1].admitted) == (by[0], by[1])


async def test_a_pause_set_by_one_process_holds_the_other(limiter_at: OpenLimiter) -> None:
    async with (
        limiter_at(limit=600, burst=5) as a,
        limiter_at(limit=600, burst=5) as b,
    ):
        await a.pause_for(1.0)
        await b.pause_for(0.2)  # a shorter pause never shortens the shared one
        start = trio.current_time()
        await b.acquire()
        held = trio.current_time() - start
        stats = (a.statistics(), b.statistics())
    print(f"\nthe other process waited {held:.3f}s of a 1 s pause")
    assert 0.99 <= held < 1.5
    assert stats[1].total_wait_seconds >= 0.99
    assert (stats[0].pauses, stats[1].pauses) == (1, 0)  # b's pause extended nothing


async def test_waiters_in_one_process_are_served_in_arrival_order(
    limiter_at: OpenLimiter,
) -> None:
    async with limiter_at(limit=1200, burst=1) as limiter:  # one call per 50 ms
        await limiter.acquire()  # use up the burst: everyone below has to wait
        order: list[int] = []

        async def waiter(i: int) -> None:
            await limiter.acquire()
            order.append(i)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(12):
                    nursery.start_soon(waiter, i)
                    await trio.testing.wait_all_tasks_blocked()
    assert order == list(range(12))


async def test_a_cancelled_waiter_takes_no_token(
    limiter_at: OpenLimiter, client: redis.Redis
) -> None:
    async with limiter_at(limit=60, burst=1) as limiter:  # one call per second
        await limiter.acquire()
        start = trio.current_time()
        with trio.move_on_after(0.3) as scope:
            await limiter.acquire()
        assert scope.cancelled_caught
        await limiter.acquire()  # due one interval after the first, not two
        waited = trio.current_time() - start
        stats = limiter.statistics()
        admitted_in_redis = client.zcard(limiter.keys[1])
    assert 0.9 <= waited < 1.5, waited
    assert (stats.admitted, stats.waiting, admitted_in_redis) == (2, 0, 2)


async def test_keys_hide_the_token_and_expire(
    redis_prefix: str, limiter_at: OpenLimiter, client: redis.Redis
) -> None:
    async with limiter_at(limit=300, burst=5) as limiter:
        await limiter.acquire()
        await limiter.pause_for(5)
        keys = {k.decode() for k in client.scan_iter(match=f"{redis_prefix}*")}
        assert keys == set(limiter.keys)
        assert all(TOKEN not in k for k in keys)
        ttls = [client.pttl(k) for k in limiter.keys]
        # the pause (5 s) + the window with its margin (61 s) + 1 s
        assert all(0 < ttl <= 67_000 for ttl in ttls), ttls
    async with limiter_at(limit=10, burst=2, window_seconds=0.3) as limiter:
        await limiter.acquire()
        with trio.fail_after(5):
            while client.exists(*limiter.keys):
                await trio.sleep(0.1)  # polling Redis, bounded: gone ~1.3 s after the call


async def test_a_clock_that_steps_back_does_not_hold_senders(
    limiter_at: OpenLimiter, client: redis.Redis
) -> None:
    """State written while the Redis clock ran an hour ahead: after the step back, senders go on
    from where the shared clock was, instead of waiting an hour."""
    async with limiter_at(limit=60, burst=1) as limiter:
        seconds, micros = client.time()
        ahead = (seconds + 3600) * 1_000_000 + micros
        client.hset(limiter.keys[0], mapping={"tat": ahead, "last": ahead, "paused": 0})
        client.expire(limiter.keys[0], 60)
        with trio.fail_after(2):
            await limiter.acquire()
        skew = int(client.hget(limiter.keys[0], "skew") or 0)
    assert skew > 3500 * 1_000_000


async def test_an_unreachable_redis_is_a_transient_error(redis_prefix: str) -> None:
    async with (
        open_bridge() as bridge,
        open_limiter(
            bridge, redis_url="redis://127.0.0.1:1/0", key=f"{redis_prefix}x", limit=60, burst=1
        ) as limiter,
    ):
        with pytest.raises(TransientError, match="redis unavailable"):
            await limiter.acquire()
        with pytest.raises(TransientError, match="redis unavailable"):
            await limiter.pause_for(3)
        # the pause still holds this process's senders
        assert limiter.statistics().paused_until >= trio.current_time() + 2.5
        assert limiter.statistics().admitted == 0
