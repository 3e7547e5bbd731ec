"""The Chat2Desk token bucket under a simulated clock (docs/design.md §3.6): never over the
limit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing

from botd.ratelimit import WINDOW_SECONDS, TokenBucket
from tests.helpers import max_in_any_window


@contextmanager
def livelock_guard(real_seconds: float = 5.0) -> Iterator[None]:
    """Fail instead of hanging if the code under test spins without letting the clock move.

    Under the autojump clock a task that keeps re-sleeping for less than the clock's resolution
    never lets simulated time advance, so ``fail_after`` would never fire: a real-time timer
    cancels the block instead. (A watchdog, not synchronisation: it never fires when the code
    works.)
    """
    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:
        timer = threading.Timer(real_seconds, token.run_sync_soon, (scope.cancel,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
    if scope.cancelled_caught:
        pytest.fail(f"livelock: simulated time stopped at {trio.current_time()!r}")


async def admit_all(bucket: TokenBucket, n: int) -> list[float]:
    """Start ``n`` waiters at once; return their admission times in admission order."""
    times: list[float] = []

    async def waiter() -> None:
        await bucket.acquire()
        times.append(trio.current_time())

    with livelock_guard():
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(waiter)
    assert len(times) == n
    return times


def test_window_helper_counts_half_open_windows() -> None:
    assert max_in_any_window([0.0, 59.9, 60.0, 120.0], WINDOW_SECONDS) == 2
    assert max_in_any_window([0.0, 59.9, 60.0, 119.0], WINDOW_SECONDS) == 3
    assert max_in_any_window([0.0, 0.0, 0.0, 60.0], WINDOW_SECONDS) == 3
    assert max_in_any_window([], WINDOW_SECONDS) == 0


# Rates below are per-minute values whose per-second rate is a power of two, so the bucket's
# float arithmetic is exact; see test_default_rate_makes_progress_under_the_mock_clock for why.
@pytest.mark.parametrize(
    ("per_minute", "burst", "minutes"),
    [(240, 5, 8), (60, 60, 6), (15, 3, 10), (960, 50, 3), (120, 500, 4), (480, 1, 3)],
)
async def test_no_window_exceeds_the_limit_and_the_backlog_runs_at_the_limit(
    autojump_clock: trio.testing.MockClock, per_minute: int, burst: int, minutes: int
) -> None:
    start = trio.current_time()
    bucket = TokenBucket(per_minute, burst)
    times = [t - start for t in await admit_all(bucket, per_minute * minutes)]

    assert max_in_any_window(times, WINDOW_SECONDS) <= per_minute
    # the backlog never empties, so after the first minute the bucket runs at the limit
    steady_minutes = minutes - 2
    steady = [t for t in times if 60 <= t < 60 + 60 * steady_minutes]
    assert len(steady) >= 0.95 * per_minute * steady_minutes, len(steady)
    assert times == sorted(times)
    assert bucket.statistics().admitted == per_minute * minutes


async def test_first_burst_goes_at_once(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    bucket = TokenBucket(240, 5)
    times = [t - start for t in await admit_all(bucket, 8)]
    assert times[:5] == [0.0] * 5
    assert times[5:] == [0.25, 0.5, 0.75]  # then one every 60/240 s


async def test_burst_is_capped_by_the_limit(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    bucket = TokenBucket(3, 10)
    times = [t - start for t in await admit_all(bucket, 6)]
    assert times[:3] == [0.0] * 3
    assert all(t >= 60 - 1e-9 for t in times[3:])
    assert max_in_any_window(times, WINDOW_SECONDS) <= 3


async def test_saved_tokens_never_exceed_the_burst(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(60, 4)
    await trio.sleep(3600)  # idle for an hour
    start = trio.current_time()
    times = [t - start for t in await admit_all(bucket, 6)]
    assert times[:4] == [0.0] * 4
    assert times[4] == pytest.approx(1.0)
    assert times[5] == pytest.approx(2.0)


async def test_pause_until_delays_everyone(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    bucket = TokenBucket(240, 5)
    bucket.pause_until(start + 30)
    bucket.pause_until(start + 10)  # an earlier deadline does not shorten the pause
    stats = bucket.statistics()
    assert (stats.paused_until, stats.pauses) == (start + 30, 1)
    times = [t - start for t in await admit_all(bucket, 7)]
    assert times == [30.0] * 5 + [30.25, 30.5]


async def test_pause_during_a_backlog(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    bucket = TokenBucket(240, 4)
    times: list[float] = []

    async def waiter() -> None:
        await bucket.acquire()
        times.append(trio.current_time() - start)

    async def pauser() -> None:
        await trio.sleep(10.1)
        bucket.pause_until(start + 40)  # a 429 with Retry-After

    with livelock_guard():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pauser)
            for _ in range(400):
                nursery.start_soon(waiter)
    before = [t for t in times if t <= 10.1]
    during = [t for t in times if 10.1 < t < 40]
    after = [t for t in times if t >= 40]
    assert during == []
    assert len(before) == 4 + 40  # the burst, then 4/s for 10 s
    assert after[:5] == [40.0] * 4 + [40.25]  # a full bucket after the pause, then the pace
    assert max_in_any_window(times, WINDOW_SECONDS) <= 240
    assert bucket.statistics().pauses == 1


async def test_waiters_are_served_first_come_first_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = TokenBucket(60, 1)
    await bucket.acquire()  # use up the saved token: everyone below has to wait
    order: list[int] = []

    async def waiter(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(12):
            nursery.start_soon(waiter, i)
            # let waiter i queue up before waiter i + 1 arrives
            await trio.testing.wait_all_tasks_blocked()
    assert order == list(range(12))


async def test_statistics(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    bucket = TokenBucket(60, 2)
    assert bucket.statistics().admitted == 0
    assert bucket.statistics().waiting == 0
    done: list[float] = []

    async def waiter() -> None:
        await bucket.acquire()
        done.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        # two went out on the saved tokens; four wait (time has not moved yet)
        stats = bucket.statistics()
        assert trio.current_time() == start
        assert (stats.admitted, stats.waiting) == (2, 4)
    stats = bucket.statistics()
    assert (stats.admitted, stats.waiting) == (6, 0)
    assert done == [
        0.0,
        0.0,
        pytest.approx(1.0),
        pytest.approx(2.0),
        pytest.approx(3.0),
        pytest.approx(4.0),
    ]
    assert stats.total_wait_seconds == pytest.approx(sum(done))
    assert (stats.pauses, stats.paused_until) == (0, 0.0)


async def test_cancelled_waiter_takes_no_token(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    bucket = TokenBucket(60, 1)
    await bucket.acquire()
    with trio.move_on_after(0.5) as scope:
        await bucket.acquire()
    assert scope.cancelled_caught
    stats = bucket.statistics()
    assert (stats.admitted, stats.waiting) == (1, 0)
    await bucket.acquire()
    assert trio.current_time() - start == pytest.approx(1.0)
    assert bucket.statistics().admitted == 2


async def test_default_rate_makes_progress_under_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    bucket = TokenBucket(300, 5)
    with livelock_guard(real_seconds=2.0):
        times = [t - start for t in await admit_all(bucket, 400)]
    assert max_in_any_window(times, WINDOW_SECONDS) <= 300
