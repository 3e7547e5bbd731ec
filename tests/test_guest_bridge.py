"""The bridge when Trio is the guest of the uvloop loop (``botd run``; docs/design.md §5).

Same rules as tests/test_bridge.py (the loop in its own thread), on one thread: each test runs
its body with :func:`botd.bridge.run_as_guest`, as ``botd run`` does. With one thread the loop
cannot be blocked from outside, so the orderings are made with the loop's own FIFO: a callback
queued with ``loop.call_soon`` runs before anything queued after it. No sleeps synchronise.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import sniffio
import trio

from botd.bridge import BridgeClosed, open_bridge, run_as_guest
from tests.helpers import cancel_mid_call_waits_for_cleanup, race_quick_calls

REDIS_URL = os.environ.get("BOTD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def guest(body: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``body`` as ``botd run`` runs the daemon, failing instead of hanging."""

    async def bounded() -> Any:
        with trio.fail_after(30):
            return await body()

    return run_as_guest(bounded)


def test_calls_run_on_the_same_thread_and_loop_and_pass_results_and_errors() -> None:
    trio_ident = threading.get_ident()

    async def body() -> None:
        async with open_bridge() as bridge:
            assert bridge.same_thread
            assert bridge.loop is asyncio.get_running_loop()
            assert sniffio.current_async_library() == "trio"

            async def where(x: int) -> tuple[int, int, str, asyncio.AbstractEventLoop]:
                await asyncio.sleep(0)
                return (
                    x * 2,
                    threading.get_ident(),
                    sniffio.current_async_library(),
                    asyncio.get_running_loop(),
                )

            value, ident, library, loop = await bridge.run(where, 21)
            assert (value, ident, library, loop) == (42, trio_ident, "asyncio", bridge.loop)
            # Back on Trio, libraries asking sniffio still see Trio.
            assert sniffio.current_async_library() == "trio"

            async def boom(msg: str) -> None:
                await asyncio.sleep(0)
                raise ValueError(msg)

            with pytest.raises(ValueError, match="from asyncio"):
                await bridge.run(boom, "from asyncio")
            with pytest.raises(TypeError):  # wrong argument count: raised before any await
                await bridge.run(boom)
            assert (await bridge.run(where, 1))[0] == 2
            assert bridge.calls == 4  # the TypeError was raised creating the coroutine

    guest(body)


def test_cancel_mid_call_waits_for_asyncio_cleanup() -> None:
    async def body() -> None:
        async with open_bridge() as bridge:
            await cancel_mid_call_waits_for_cleanup(bridge, cleanup_seconds=0.05)

    guest(body)


def test_cancel_before_the_loop_started_the_call_never_runs_its_body() -> None:
    async def body() -> None:
        async with open_bridge() as bridge:
            executed: list[str] = []

            async def work(tag: str) -> str:
                executed.append(tag)
                await asyncio.sleep(0)
                return tag

            with trio.CancelScope() as scope:  # (a) already cancelled
                scope.cancel()
                await bridge.run(work, "already-cancelled")
            assert scope.cancelled_caught

            # (b) The cancel is queued on the loop before the call's first step.
            with trio.CancelScope() as scope:
                bridge.loop.call_soon(scope.cancel)
                await bridge.run(work, "queued-then-cancelled")
            assert scope.cancelled_caught
            assert await bridge.run(work, "after") == "after"
            assert executed == ["after"], f"a cancelled-before-start call ran: {executed}"
            assert not bridge._tasks

    guest(body)


def test_completion_racing_a_cancel_returns_the_value_then_cancels() -> None:
    async def body() -> None:
        async with open_bridge() as bridge:
            got: list[str] = []
            with trio.CancelScope() as scope:

                async def finishes_as_cancel_arrives() -> str:
                    # Queued before the task's done-callbacks: the cancel lands on a done task.
                    asyncio.get_running_loop().call_soon(scope.cancel)
                    return "done"

                got.append(await bridge.run(finishes_as_cancel_arrives))
                await trio.lowlevel.checkpoint()
                got.append("not cancelled at the next checkpoint")
            assert got == ["done"]
            assert scope.cancelled_caught

            await race_quick_calls(bridge, 600, 200e-6, seed=4)

    guest(body)


def test_randomly_cancelled_redis_calls_leave_the_pool_clean() -> None:
    key = f"botd-test:guest-bridge:{uuid.uuid4().hex[:12]}"

    async def body() -> None:
        async with open_bridge() as bridge:

            async def make_client() -> aioredis.Redis:
                # Callers wait for one of 20 connections, as in a loaded botd.
                pool = aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=20)
                return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool

            client = await bridge.run(make_client)
            pool = client.connection_pool
            rng = random.Random(5)
            try:

                async def incr() -> int:
                    return int(await client.incr(key))

                counted = 0
                async with trio.open_nursery() as nursery:

                    async def one(deadline: float) -> None:
                        nonlocal counted
                        with trio.move_on_after(deadline):
                            await bridge.run(incr)
                            counted += 1

                    for i in range(1000):  # every other call is never cancelled
                        nursery.start_soon(one, rng.uniform(0, 0.01) if i % 2 else 3600)
                assert not pool._in_use_connections, "a cancelled call kept its connection"

                async def value() -> int:
                    return int(await client.get(key) or 0)

                # Every INCR that returned happened; a cancelled one may have happened or not.
                assert 500 <= counted <= await bridge.run(value) <= 1000
                assert await bridge.run(incr) == await bridge.run(value)
            finally:

                async def cleanup() -> None:
                    try:
                        await client.delete(key)
                    finally:
                        await client.aclose()

                await bridge.run(cleanup)
            assert not pool._in_use_connections

    guest(body)


def test_closing_with_a_call_in_flight_ends_it_and_leaves_the_host_loop_running() -> None:
    ended_with: list[BaseException | str] = []
    cleanup_done = False

    async def body() -> asyncio.AbstractEventLoop:
        nonlocal cleanup_done
        started = trio.Event()

        async def in_flight() -> None:
            nonlocal cleanup_done
            started.set()
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0)
                cleanup_done = True

        async with trio.open_nursery() as nursery, open_bridge() as bridge:

            async def caller() -> None:
                try:
                    await bridge.run(in_flight)
                except BridgeClosed as exc:
                    ended_with.append(exc)
                else:
                    ended_with.append("returned")

            nursery.start_soon(caller)
            await started.wait()
        assert cleanup_done, "the in-flight task did not unwind before the bridge closed"
        assert not bridge.loop.is_closed()  # the host's loop: run_as_guest closes it
        with pytest.raises(BridgeClosed):
            await bridge.run(asyncio.sleep, 0)
        return bridge.loop

    loop = guest(body)
    assert len(ended_with) == 1 and isinstance(ended_with[0], BridgeClosed), ended_with
    assert loop.is_closed()


def test_run_as_guest_returns_raises_and_cancels_what_is_left_on_the_loop() -> None:
    left_behind_cancelled = False

    async def body() -> str:
        async with open_bridge() as bridge:

            async def spawn_background() -> None:
                async def forever() -> None:
                    nonlocal left_behind_cancelled
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        left_behind_cancelled = True
                        raise

                asyncio.get_running_loop().create_task(forever())

            await bridge.run(spawn_background)
        return "value"

    assert guest(body) == "value"
    assert left_behind_cancelled, "a task left on the loop was not cancelled at the end"

    async def fails() -> None:
        await trio.lowlevel.checkpoint()
        raise LookupError("from the guest")

    with pytest.raises(LookupError, match="from the guest"):
        guest(fails)
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # nothing left running on this thread


def test_trio_signal_receivers_work_in_guest_mode() -> None:
    async def body() -> int:
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            os.kill(os.getpid(), signal.SIGUSR1)
            async for signum in signals:
                return signum
        raise AssertionError("the receiver ended without a signal")

    assert guest(body) == signal.SIGUSR1
