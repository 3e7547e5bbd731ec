"""The one door from Trio to asyncio (docs/design.md §5).

aiormq, redis-py's asyncio client and psycopg's async pool run on one uvloop event loop. Trio code
calls them through :meth:`AsyncioBridge.run`. The loop is where Trio is:

- ``botd run`` (:func:`run_as_guest`): Trio runs as the *guest* of a uvloop loop on the main
  thread (``trio.lowlevel.start_guest_run``). Both run on one thread, so a call is an asyncio
  task created directly and an outcome handed straight back: no thread hand-off, no contention
  for the GIL (measured: bench/bench_e2e.py, docs/design.md §5.2).
- under a plain ``trio.run`` (tests, the CLI tools) :func:`open_bridge` starts the loop in a
  thread it owns; calls are handed over with ``call_soon_threadsafe`` and woken through the
  Trio token.

Either way the same rules hold:

- the coroutine runs as an asyncio task on the loop; the Trio task parks with
  ``wait_task_rescheduled`` and is rescheduled with the outcome;
- a call cancelled before the loop started it never runs its body;
- a call cancelled while running cancels the asyncio task and returns only once that task has
  finished unwinding; then :class:`trio.Cancelled` is raised (or, if the task completed before the
  cancellation reached it, its result is returned and Trio cancels at the next checkpoint);
- closing the bridge cancels whatever still runs on the loop and waits for it; an owned loop is
  then stopped and its thread joined without blocking Trio.

No other module imports asyncio for running things; adapters pass coroutine functions here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import outcome
import trio
import uvloop

from botd.errors import TransientError

T = TypeVar("T")


class BridgeClosed(TransientError):
    """The asyncio loop is gone (the daemon is shutting down)."""


def _unwrap(
    result: outcome.Outcome[T] | None, raise_cancel: trio.lowlevel.RaiseCancelT | None
) -> T:
    """A finished call's value or error. None (never started) or a cancelled asyncio task: Trio's
    cancellation if Trio asked for it, otherwise the loop cancelled it while shutting down."""
    if result is None or (
        isinstance(result, outcome.Error) and isinstance(result.error, asyncio.CancelledError)
    ):
        if raise_cancel is not None:
            raise_cancel()
        raise BridgeClosed("the asyncio task was cancelled by the loop's shutdown")
    return result.unwrap()


class AsyncioBridge:
    """Runs coroutine functions on the owned asyncio loop for Trio callers."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        token: trio.lowlevel.TrioToken,
        *,
        same_thread: bool = False,
    ) -> None:
        self._loop = loop
        self._token = token
        self._same_thread = same_thread
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.calls = 0

    @property
    def same_thread(self) -> bool:
        """Whether Trio runs as the loop's guest: loop callbacks may then call Trio directly."""
        return self._same_thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the asyncio loop and return its result to Trio."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise BridgeClosed("the asyncio bridge is closed")
        self.calls += 1
        if self._same_thread:
            return await self._run_here(fn, *args)
        trio_task = trio.lowlevel.current_task()
        token = self._token
        loop = self._loop
        tasks = self._tasks
        aio_task: asyncio.Task[T] | None = None
        cancel_requested = False

        def wake(result: outcome.Outcome[T] | None) -> None:
            # Runs in the loop thread; hands the outcome to Trio (None: never started).
            token.run_sync_soon(trio.lowlevel.reschedule, trio_task, outcome.Value(result))

        def on_done(task: asyncio.Task[T]) -> None:
            tasks.discard(task)
            wake(outcome.capture(task.result))

        def start() -> None:
            nonlocal aio_task
            if cancel_requested:
                wake(None)
                return
            try:
                aio_task = loop.create_task(fn(*args))  # type: ignore[arg-type]
            except BaseException as exc:  # fn raised before its first await: hand it to Trio
                wake(outcome.Error(exc))
                return
            tasks.add(aio_task)
            aio_task.add_done_callback(on_done)

        def cancel_in_loop() -> None:
            nonlocal cancel_requested
            cancel_requested = True
            if aio_task is not None:
                aio_task.cancel()

        raise_cancel: trio.lowlevel.RaiseCancelT | None = None

        def abort(rc: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            nonlocal raise_cancel
            raise_cancel = rc
            try:
                loop.call_soon_threadsafe(cancel_in_loop)
            except RuntimeError:  # loop already closed: nothing can be running there
                return trio.lowlevel.Abort.SUCCEEDED
            return trio.lowlevel.Abort.FAILED  # keep waiting until the asyncio side is done

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError as exc:
            raise BridgeClosed("the asyncio loop is closed") from exc
        result: outcome.Outcome[T] | None = await trio.lowlevel.wait_task_rescheduled(abort)
        return _unwrap(result, raise_cancel)

    async def _run_here(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """:meth:`run` when Trio is the loop's guest: same thread, no hand-off through a token."""
        trio_task = trio.lowlevel.current_task()
        tasks = self._tasks
        aio_task: asyncio.Task[T] = self._loop.create_task(fn(*args))  # type: ignore[arg-type]
        tasks.add(aio_task)

        def on_done(task: asyncio.Task[T]) -> None:
            tasks.discard(task)
            trio.lowlevel.reschedule(trio_task, outcome.Value(outcome.capture(task.result)))

        aio_task.add_done_callback(on_done)
        raise_cancel: trio.lowlevel.RaiseCancelT | None = None

        def abort(rc: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            nonlocal raise_cancel
            raise_cancel = rc
            aio_task.cancel()
            return trio.lowlevel.Abort.FAILED  # keep waiting until the asyncio side is done

        result: outcome.Outcome[T] = await trio.lowlevel.wait_task_rescheduled(abort)
        return _unwrap(result, raise_cancel)

    async def aclose(self) -> None:
        """Cancel every task still on the loop and wait for them (run before stopping the loop)."""
        self._closed = True
        if self._same_thread:
            pending = [t for t in self._tasks if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await self._run_here(asyncio.wait, pending)
            return

        async def cancel_all() -> None:
            pending = [t for t in self._tasks if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)

        fut = asyncio.run_coroutine_threadsafe(cancel_all(), self._loop)
        await trio.to_thread.run_sync(fut.result)


@asynccontextmanager
async def open_bridge(name: str = "botd-asyncio") -> AsyncIterator[AsyncioBridge]:
    """The bridge to this thread's loop when Trio is its guest (:func:`run_as_guest`); otherwise
    start a uvloop event loop in a dedicated thread, and stop it and join the thread on exit."""
    try:
        host = asyncio.get_running_loop()
    except RuntimeError:
        host = None
    if host is not None:
        bridge = AsyncioBridge(host, trio.lowlevel.current_trio_token(), same_thread=True)
        try:
            yield bridge
        finally:
            with trio.CancelScope(shield=True):
                await bridge.aclose()
        return
    loop = uvloop.new_event_loop()
    ready = threading.Event()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    thread = threading.Thread(target=run_loop, name=name, daemon=True)
    thread.start()
    await trio.to_thread.run_sync(ready.wait)
    bridge = AsyncioBridge(loop, trio.lowlevel.current_trio_token())
    try:
        yield bridge
    finally:
        with trio.CancelScope(shield=True):
            await bridge.aclose()
            loop.call_soon_threadsafe(loop.stop)
            await trio.to_thread.run_sync(thread.join)


def run_as_guest(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Like ``trio.run(async_fn, *args)``, with Trio the guest of a new uvloop loop on this thread.

    Trio's own I/O wait runs in a helper thread only while Trio has nothing to run; everything
    else (Trio's tasks, the asyncio clients, their callbacks) runs on this thread. The loop owns
    the signal wake-up fd (``host_uses_signal_set_wakeup_fd``); Trio's signal receivers still
    work, their handlers run on this thread. Once Trio is done, anything still on the loop is
    cancelled and awaited, as ``asyncio.run`` does, and the loop is closed.
    """
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    done: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
    try:
        trio.lowlevel.start_guest_run(
            async_fn,
            *args,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        result = loop.run_until_complete(done)
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return result.unwrap()
