"""The Trio→asyncio bridge keeps Trio's rules on both sides (docs/design.md §5).

One test per rule; each runs a real bridge (uvloop in its own thread). The pool tests use the real
Redis and PostgreSQL on loopback. Synchronisation between our own tasks and threads uses
``trio.Event``/``threading.Event`` and the Trio token, never sleeps; the only polling is of an
external server's state, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import threading
import uuid
import warnings
from typing import Any

import outcome
import psycopg
import pytest
import redis.asyncio as aioredis
import trio
import trio.testing
from psycopg_pool import AsyncConnectionPool

from botd.bridge import AsyncioBridge, BridgeClosed, open_bridge
from tests.helpers import cancel_mid_call_waits_for_cleanup, race_quick_calls

REDIS_URL = os.environ.get("BOTD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("BOTD_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

# How long a loop-thread callback may block waiting for the Trio side before the test fails.
THREAD_WAIT = 10.0


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def _noop() -> None:
    return None


def _signal_trio(token: trio.lowlevel.TrioToken, event: trio.Event) -> None:
    """From the loop thread: set a Trio event (without blocking the loop)."""
    token.run_sync_soon(event.set)


async def _loop_tasks(bridge: AsyncioBridge) -> tuple[set[asyncio.Task[Any]], asyncio.Task[Any]]:
    async def snapshot() -> tuple[set[asyncio.Task[Any]], asyncio.Task[Any]]:
        me = asyncio.current_task()
        assert me is not None
        return asyncio.all_tasks(), me

    return await bridge.run(snapshot)


class _StuckCall(Exception):
    pass


async def _run_with_watchdog(bridge: AsyncioBridge, fn: Any, *args: Any, timeout: float = 5) -> Any:
    """``bridge.run(fn, *args)``, failing (instead of hanging) if it is never woken.

    A call that the bridge never wakes cannot be cancelled either (its abort waits for the
    asyncio side), so on timeout the parked Trio task is rescheduled with an error.
    """
    result: list[Any] = []
    done = trio.Event()
    caller: list[trio.lowlevel.Task] = []

    async def call() -> None:
        caller.append(trio.lowlevel.current_task())
        try:
            result.append(await bridge.run(fn, *args))
        except Exception as exc:
            result.append(exc)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        with trio.move_on_after(timeout):
            await done.wait()
        if not done.is_set():
            trio.lowlevel.reschedule(caller[0], outcome.Error(_StuckCall()))
            await done.wait()
    if isinstance(result[0], _StuckCall):
        pytest.fail(f"bridge.run({fn!r}) was never woken")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


# --- rule 1: results and exceptions pass through; the coroutine runs in the loop thread -------


async def test_result_and_exception_pass_through_and_run_in_loop_thread() -> None:
    name = _unique("bridge-test")
    trio_ident = threading.get_ident()
    async with open_bridge(name) as bridge:

        async def where(x: int) -> tuple[int, int, str, asyncio.AbstractEventLoop]:
            await asyncio.sleep(0)
            return (
                x * 2,
                threading.get_ident(),
                threading.current_thread().name,
                asyncio.get_running_loop(),
            )

        value, ident, thread_name, loop = await bridge.run(where, 21)
        assert value == 42
        assert ident != trio_ident
        assert thread_name == name
        assert loop is bridge.loop

        async def boom(msg: str) -> None:
            await asyncio.sleep(0)
            raise ValueError(msg)

        with pytest.raises(ValueError, match="from asyncio"):
            await bridge.run(boom, "from asyncio")

        # fn raising before its first await (e.g. a wrong argument count) must also reach Trio,
        # not leave the Trio task parked for ever (a cancel scope could not end that wait).
        with pytest.raises(TypeError):
            await _run_with_watchdog(bridge, boom)

        def not_a_coroutine_function() -> Any:
            raise ValueError("sync raise")

        with pytest.raises(ValueError, match="sync raise"):
            await _run_with_watchdog(bridge, not_a_coroutine_function)

        # The bridge still works after those errors.
        assert (await bridge.run(where, 1))[0] == 2


# --- rule 2: cancel mid-call waits for the asyncio cleanup --------------------------------------


async def test_cancel_mid_call_waits_for_asyncio_cleanup() -> None:
    async with open_bridge() as bridge:
        await cancel_mid_call_waits_for_cleanup(bridge, cleanup_seconds=0.2)


# --- rule 3: cancel before start never runs the body --------------------------------------------


async def test_cancel_before_start_never_runs_body() -> None:
    async with open_bridge() as bridge:
        executed: list[str] = []

        async def body(tag: str) -> str:
            executed.append(tag)
            await asyncio.sleep(0)
            executed.append(tag + ":after-await")
            return tag

        # (a) Called inside an already-cancelled scope.
        with trio.CancelScope() as scope:
            scope.cancel()
            await bridge.run(body, "already-cancelled")
        assert scope.cancelled_caught
        calls_before = bridge.calls

        # (b) Cancelled after "start" was scheduled but before the loop ran it: block the loop
        # thread with a gated callback, schedule the call, cancel, then release the loop.
        gate = threading.Event()
        blocked = threading.Event()

        def block_loop() -> None:
            blocked.set()
            assert gate.wait(THREAD_WAIT)

        bridge.loop.call_soon_threadsafe(block_loop)
        assert await trio.to_thread.run_sync(blocked.wait, THREAD_WAIT)

        call_scope = trio.CancelScope()
        finished = trio.Event()

        async def caller() -> None:
            with call_scope:
                await bridge.run(body, "scheduled-then-cancelled")
            finished.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller)
                await trio.testing.wait_all_tasks_blocked()
                assert bridge.calls == calls_before + 1, "the call was not scheduled yet"
                assert not finished.is_set(), "the call ended while the loop was blocked"
                call_scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                # The caller must keep waiting: the loop has not acknowledged the cancel yet.
                assert not finished.is_set()
                gate.set()
        finally:
            gate.set()

        assert call_scope.cancelled_caught
        # A full round trip through the loop: everything scheduled before it has run.
        await bridge.run(_noop)
        assert executed == [], f"a cancelled-before-start call ran: {executed}"
        assert not bridge._tasks


# --- rule 4: a call that completes though the cancel raced it: value or Cancelled, no hang -----


async def test_completion_racing_cancel_returns_value_or_cancels_never_hangs() -> None:
    async with open_bridge() as bridge:
        # Deterministic: the cancel arrives while the coroutine is finishing (the loop thread is
        # busy in it), so the task completes first; its value must be returned, then Trio
        # cancels at the next checkpoint.
        entered = threading.Event()
        release = threading.Event()

        async def finishes_despite_cancel() -> str:
            await asyncio.sleep(0)
            entered.set()
            assert release.wait(THREAD_WAIT)  # blocks the loop: the cancel cannot land
            return "done"

        got: list[str] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as scope:

                    async def cancel_while_finishing() -> None:
                        try:
                            assert await trio.to_thread.run_sync(entered.wait, THREAD_WAIT)
                            scope.cancel()
                            await trio.testing.wait_all_tasks_blocked()
                        finally:
                            release.set()

                    nursery.start_soon(cancel_while_finishing)
                    got.append(await bridge.run(finishes_despite_cancel))
                    await trio.lowlevel.checkpoint()
                    got.append("not cancelled at the next checkpoint")
        assert got == ["done"]
        assert scope.cancelled_caught

        # Random: quick calls with deadlines around the crossing time.
        await race_quick_calls(bridge, 600, 400e-6, seed=4)
        tasks, me = await _loop_tasks(bridge)
        assert tasks == {me}


# --- rule 5: a cancelled call leaves the client's connection pool clean -------------------------


async def _poll_until(check: Any, what: str, timeout: float = 5.0) -> None:
    """Poll an *external server's* state until ``await check()`` is true (bounded)."""
    try:
        with trio.fail_after(timeout):
            while not await check():
                await trio.sleep(0.05)
    except trio.TooSlowError:
        pytest.fail(f"timed out waiting for: {what}")


async def test_cancelled_redis_call_leaves_pool_clean() -> None:
    key = _unique("botd-test:bridge:blpop")
    client_name = _unique("botd-bridge-test")
    async with open_bridge() as bridge:

        async def make_client() -> aioredis.Redis:
            return aioredis.Redis.from_url(REDIS_URL, client_name=client_name)

        client = await bridge.run(make_client)
        pool = client.connection_pool

        async def in_use() -> int:
            counts = pool.get_connection_count()
            assert len(pool._in_use_connections) == counts[1][0]
            return len(pool._in_use_connections)

        async def blpop() -> Any:
            return await client.blpop([key], timeout=5)

        async def our_blpop_clients() -> int:
            clients = await client.client_list()
            return sum(
                1 for c in clients if c.get("name") == client_name and c.get("cmd") == "blpop"
            )

        async def blocked_on_server() -> bool:
            return await bridge.run(our_blpop_clients) == 1

        async def unblocked_on_server() -> bool:
            return await bridge.run(our_blpop_clients) == 0

        try:

            async def ping() -> bool:
                return bool(await client.ping())

            assert await bridge.run(ping)

            async def cancel_once_blocked(scope: trio.CancelScope) -> None:
                await _poll_until(blocked_on_server, "BLPOP blocked on the server")
                scope.deadline = trio.current_time()

            blpop_result: Any = "not returned"
            async with trio.open_nursery() as nursery:
                with trio.move_on_after(10) as scope:
                    nursery.start_soon(cancel_once_blocked, scope)
                    blpop_result = await bridge.run(blpop)
            assert scope.cancelled_caught
            assert blpop_result == "not returned"
            # Read at once from the Trio thread: the bridge returned only after the asyncio task
            # finished, so its `finally` (releasing the connection) must already have run.
            assert not pool._in_use_connections, "the call returned before the release"

            assert await bridge.run(in_use) == 0, "a connection stayed in use after the cancel"
            # No orphaned BLPOP on the server: it would pop the value pushed below.
            await _poll_until(unblocked_on_server, "the cancelled BLPOP to leave the server")

            async def follow_up() -> tuple[bool, Any, int]:
                pong = bool(await client.ping())
                await client.set(key + ":v", "value", ex=60)
                got = await client.get(key + ":v")
                await client.lpush(key, "item")
                length = int(await client.llen(key))
                return pong, got, length

            assert await bridge.run(follow_up) == (True, b"value", 1)
            assert await bridge.run(in_use) == 0
        finally:

            async def cleanup() -> None:
                try:
                    await client.delete(key, key + ":v")
                finally:
                    await client.aclose()

            await bridge.run(cleanup)

        def all_disconnected() -> bool:
            return not pool._in_use_connections and all(
                not c.is_connected for c in pool._available_connections
            )

        assert all_disconnected(), "the Redis client left connections open after aclose()"


async def test_cancelled_postgres_call_leaves_pool_clean() -> None:
    app = _unique("botd-bridge-test")
    async with open_bridge() as bridge:

        async def make_pool() -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
            pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                PG_DSN,
                min_size=1,
                max_size=2,
                open=False,
                kwargs={"autocommit": True, "application_name": app},
            )
            await pool.open(wait=True, timeout=10)
            return pool

        async def make_monitor() -> psycopg.AsyncConnection[Any]:
            return await psycopg.AsyncConnection.connect(
                PG_DSN, autocommit=True, application_name=app + "-monitor"
            )

        pool = await bridge.run(make_pool)
        monitor = await bridge.run(make_monitor)

        async def sleeping_queries() -> int:
            cur = await monitor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = %s AND state = 'active' AND query LIKE %s",
                (app, "%pg_sleep%"),
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        async def sleeping_on_server() -> bool:
            return await bridge.run(sleeping_queries) == 1

        async def nothing_sleeping() -> bool:
            return await bridge.run(sleeping_queries) == 0

        async def in_use() -> int:
            stats = pool.get_stats()
            return stats["pool_size"] - stats["pool_available"]

        async def pg_sleep() -> Any:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT pg_sleep(5)")
                return await cur.fetchone()

        async def select_one() -> Any:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT 1")
                return await cur.fetchone()

        try:

            async def cancel_once_sleeping(scope: trio.CancelScope) -> None:
                await _poll_until(sleeping_on_server, "pg_sleep running on the server")
                scope.deadline = trio.current_time()

            sleep_result: Any = "not returned"
            async with trio.open_nursery() as nursery:
                with trio.move_on_after(10) as scope:
                    nursery.start_soon(cancel_once_sleeping, scope)
                    sleep_result = await bridge.run(pg_sleep)
            assert scope.cancelled_caught
            assert sleep_result == "not returned"
            # Read at once from the Trio thread: the bridge returned only after the asyncio task
            # finished, so the connection must already be back in the pool (or discarded).
            stats = pool.get_stats()
            assert stats["pool_size"] == stats["pool_available"], stats

            await _poll_until(nothing_sleeping, "the cancelled pg_sleep to end on the server")
            assert await bridge.run(in_use) == 0, "a connection stayed in use after the cancel"
            assert await bridge.run(select_one) == (1,)
            assert await bridge.run(in_use) == 0
        finally:

            async def cleanup() -> None:
                try:
                    await pool.close()
                finally:
                    await monitor.close()

            await bridge.run(cleanup)
        assert pool.closed
        assert monitor.closed


# --- rule 6: thousands of randomly cancelled calls neither hang nor leak ------------------------


async def test_thousands_of_randomly_cancelled_calls_neither_hang_nor_leak() -> None:
    total, batch = 3000, 500
    rng = random.Random(6)
    outcomes = {"returned": 0, "cancelled": 0}
    async with open_bridge() as bridge:

        async def work(delay: float, cleanup: bool) -> float:
            try:
                await asyncio.sleep(delay)
            finally:
                if cleanup:
                    await asyncio.sleep(0)
            return delay

        async def one(delay: float, deadline: float, cleanup: bool) -> None:
            with trio.move_on_after(deadline) as scope:
                assert await bridge.run(work, delay, cleanup) == delay
                outcomes["returned"] += 1
            if scope.cancelled_caught:
                outcomes["cancelled"] += 1

        with trio.fail_after(60):
            for _ in range(total // batch):
                async with trio.open_nursery() as nursery:
                    for _ in range(batch):
                        nursery.start_soon(
                            one, rng.uniform(0, 0.01), rng.uniform(0, 0.01), rng.random() < 0.5
                        )

        assert outcomes["returned"] + outcomes["cancelled"] == total, outcomes
        assert outcomes["cancelled"] > 0, outcomes
        assert outcomes["returned"] <= bridge.calls <= total
        assert not bridge._tasks, f"{len(bridge._tasks)} asyncio tasks leaked"
        tasks, me = await _loop_tasks(bridge)
        assert tasks == {me}, f"stray asyncio tasks: {tasks - {me}}"


# --- rule 7: closing the bridge with a call in flight --------------------------------------------


async def test_close_with_call_in_flight_ends_it_and_joins_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    name = _unique("bridge-close-test")
    token = trio.lowlevel.current_trio_token()
    started = trio.Event()
    cleanup_done = False
    ended_with: list[BaseException | str] = []
    loop_thread: list[threading.Thread] = []

    async def in_flight() -> None:
        nonlocal cleanup_done
        loop_thread.append(threading.current_thread())
        _signal_trio(token, started)
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)
            cleanup_done = True

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with trio.fail_after(10):
            # The bridge (inner) closes while the caller is still in flight; the nursery (outer)
            # then waits for the caller, which must end without anyone cancelling it.
            async with trio.open_nursery() as nursery, open_bridge(name) as bridge:

                async def caller() -> None:
                    try:
                        await bridge.run(in_flight)
                    except BridgeClosed as exc:
                        ended_with.append(exc)
                    except trio.Cancelled as exc:
                        ended_with.append(exc)
                        raise
                    else:
                        ended_with.append("returned")

                nursery.start_soon(caller)
                await started.wait()
        loop = bridge.loop
        gc.collect()

    assert len(ended_with) == 1 and isinstance(ended_with[0], BridgeClosed), ended_with
    assert cleanup_done, "the in-flight asyncio task did not unwind before the loop stopped"
    assert loop_thread and not loop_thread[0].is_alive(), "the loop thread was not joined"
    assert loop_thread[0].name == name
    assert loop.is_closed()
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

    with pytest.raises(BridgeClosed):
        await bridge.run(_noop)


# --- rule 8: many concurrent calls keep their own results ---------------------------------------


async def test_many_concurrent_calls_keep_their_own_results() -> None:
    n = 1000
    rng = random.Random(8)
    delays = [rng.uniform(0, 0.005) for _ in range(n)]
    results: dict[int, tuple[int, str]] = {}
    async with open_bridge() as bridge:

        async def echo(i: int, delay: float) -> tuple[int, str]:
            await asyncio.sleep(delay)  # completions come back in a shuffled order
            return i, f"value-{i}"

        async def one(i: int) -> None:
            results[i] = await bridge.run(echo, i, delays[i])

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)

        assert not bridge._tasks
    assert results == {i: (i, f"value-{i}") for i in range(n)}
