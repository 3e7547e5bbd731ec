"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import psycopg
import trio

from botd import daemon
from botd.config import Config
from botd.testing.process import config_env

_ids = itertools.count(10_000_000)


def next_message_id() -> int:
    return next(_ids)


def inbox_payload(
    client_id: int | str, text: str | None, *, message_id: int | None = None, **extra: Any
) -> dict[str, Any]:
    """A Chat2Desk ``inbox`` webhook body as the real platform sends it."""
    body: dict[str, Any] = {
        "message_id": message_id if message_id is not None else next_message_id(),
        "type": "from_client",
        "text": text,
        "transport": "telegram",
        "client_id": client_id,
        "operator_id": None,
        "dialog_id": None,
        "channel_id": 17,
        "photo": None,
        "coordinates": None,
        "audio": None,
        "pdf": None,
        "client": {"id": client_id, "phone": "[tg] 807892", "client_phone": None, "name": "Peter"},
        "hook_type": "inbox",
        "request_id": 8725057,
        "attachments": [],
        "is_new_request": True,
        "is_new_client": False,
        "extra_data": {},
        "event_time": "2026-11-25T10:00:00Z",
    }
    body.update(extra)
    return body


async def post_webhook(
    client: httpx.AsyncClient, url: str, body: Any, **kwargs: Any
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return await client.post(f"{url}/webhook/chat2desk", content=content, headers=headers, **kwargs)


def subprocess_env(config: Config | None = None) -> dict[str, str]:
    """The environment of a ``botd`` subprocess: this one without any BOTD_* variable, plus
    exactly ``config`` when given (so the outer environment cannot leak into a test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTD_")}
    if config is not None:
        env.update(config_env(config))
    return env


def max_in_any_window(times: Iterable[float], window: float) -> int:
    """The largest number of ``times`` in any half-open window [t, t + window).

    Such a maximum is always reached by a window starting at one of the times, so checking the
    window at every time checks every window.
    """
    ordered = sorted(times)
    best = j = 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def orders(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM orders ORDER BY id")
        return list(cur.fetchall())


HAPPY_PATH = (
    "Здравствуйте, хочу заказать воду",
    "ул. Токтогула 125, кв. 4",
    "0555 123 456",
    "3",
    "да",
)


@asynccontextmanager
async def running_daemon(config: Config) -> AsyncIterator[daemon.Running]:
    """The whole daemon in-process (port 0) with ``config``; stopped and its queues deleted
    afterwards (the ``running`` fixture, for a test that needs its own configuration)."""
    from tests.conftest import delete_queues

    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        handle: daemon.Running = await nursery.start(partial(daemon.serve, config, stop=stop))
        yield handle
        stop.set()
    await delete_queues(config)


async def say_and_wait(
    http: httpx.AsyncClient, running: daemon.Running, text: str, *, client: int
) -> None:
    """Post one customer message and wait until the daemon has handled it."""
    handled = running.consumers.handled
    response = await post_webhook(http, running.url, inbox_payload(client, text))
    assert response.status_code == 200, response.text
    with trio.fail_after(10):
        await running.consumers.wait_handled(handled + 1)


async def complete_order(http: httpx.AsyncClient, running: daemon.Running, *, client: int) -> None:
    """The happy path, turn by turn: one order placed."""
    for text in HAPPY_PATH:
        await say_and_wait(http, running, text, client=client)


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 15) -> None:
    """Poll a condition the test cannot be woken by (a row in PostgreSQL, a counter)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def race_quick_calls(bridge: Any, calls: int, max_deadline: float, seed: int) -> None:
    """``calls`` quick bridge calls, each under a random deadline around the crossing time: each
    either returns its own value or is cancelled, never hangs, and nothing is left behind."""

    async def quick(i: int) -> int:
        await asyncio.sleep(0)
        return i

    rng = random.Random(seed)
    returned = cancelled = 0
    with trio.fail_after(20):
        for i in range(calls):
            value: int | None = None
            with trio.move_on_after(rng.uniform(0, max_deadline)) as race:
                value = await bridge.run(quick, i)
            if value is None:
                assert race.cancelled_caught
                cancelled += 1
            else:
                assert value == i
                returned += 1
    assert returned + cancelled == calls
    assert not bridge._tasks


async def cancel_mid_call_waits_for_cleanup(bridge: Any, cleanup_seconds: float) -> None:
    """Cancel a bridged call once its asyncio side runs: the Trio caller must get control back
    only after the asyncio task has finished unwinding (its slow ``finally``)."""
    token = trio.lowlevel.current_trio_token()
    started = trio.Event()
    saw_cancel = cleanup_done = False

    async def slow() -> None:
        nonlocal saw_cancel, cleanup_done
        token.run_sync_soon(started.set)  # from the loop, whichever thread it runs on
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            saw_cancel = True
            raise
        finally:
            await asyncio.sleep(cleanup_seconds)  # slow cleanup on the asyncio side
            cleanup_done = True

    async def expire_when_started(scope: trio.CancelScope) -> None:
        await started.wait()
        scope.deadline = trio.current_time()  # the timeout fires now, mid-call

    returned_before_cleanup: bool | None = None
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(3600) as scope:
            nursery.start_soon(expire_when_started, scope)
            try:
                await bridge.run(slow)
            finally:
                returned_before_cleanup = not cleanup_done
    assert scope.cancelled_caught, "the Trio cancellation was not honoured"
    assert saw_cancel, "the asyncio task was not cancelled"
    assert returned_before_cleanup is False, "the bridged call returned before the cleanup"
    assert cleanup_done
    assert not bridge._tasks
