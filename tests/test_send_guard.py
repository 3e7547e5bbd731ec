"""The guard before every Chat2Desk call (docs/design.md §3.2): the fence, and the send lease in
real Redis — one process at a time per customer, a dead local holder taken over quickly."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from botd.errors import DeliveryLost
from botd.send_guard import DEAD_HOLDER_GRACE_SECONDS, SendGuards
from botd.state_store import StateStore
from tests.test_state_store import store  # noqa: F401 - the fixture

CLIENT = "880001"


async def test_a_second_holder_waits_until_the_first_gives_the_lease_back(
    store: StateStore,  # noqa: F811
) -> None:
    first, second = SendGuards(store, lease_seconds=5), SendGuards(store, lease_seconds=5)
    await first.guard(first.lease(CLIENT), None, "a")()  # taken
    entered = trio.Event()

    async def second_calls() -> None:
        await second.guard(second.lease(CLIENT), None, "b")()
        entered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second_calls)
        with trio.move_on_after(0.5):
            await entered.wait()
        assert not entered.is_set()  # the first one is mid-call
        await store.mark_sent("m1", (), lease=first.lease(CLIENT))  # gives it back
        with trio.fail_after(2):
            await entered.wait()
    left, holder = await store.take_send_lease(first.lease(CLIENT), 5)
    assert left > 0 and holder == second.holder  # now the second one holds it


async def test_the_lease_of_a_process_that_died_here_is_taken_after_a_short_grace(
    store: StateStore,  # noqa: F811
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_holder = (
        f"{SendGuards(store, lease_seconds=1).holder.split(':')[0]}:{dead.stdout.strip()}:x"
    )
    killed = SendGuards(store, lease_seconds=60, holder=dead_holder)
    await killed.guard(killed.lease(CLIENT), None, "killed")()  # held for a minute
    restarted = SendGuards(store, lease_seconds=5)
    started = trio.current_time()
    with trio.fail_after(DEAD_HOLDER_GRACE_SECONDS + 2):
        await restarted.guard(restarted.lease(CLIENT), None, "redelivery")()
    assert trio.current_time() - started >= DEAD_HOLDER_GRACE_SECONDS
    # a holder that is alive (here: another machine's) is waited for
    other = SendGuards(store, lease_seconds=60, holder="elsewhere:1:y")
    await store.release_send_lease(restarted.lease(CLIENT))
    await other.guard(other.lease(CLIENT), None, "other")()
    with trio.move_on_after(DEAD_HOLDER_GRACE_SECONDS + 0.5) as waited:
        await restarted.guard(restarted.lease(CLIENT), None, "redelivery")()
    assert waited.cancelled_caught


async def test_no_call_once_the_delivery_is_no_longer_ours(store: StateStore) -> None:  # noqa: F811
    guards = SendGuards(store, lease_seconds=5)
    with pytest.raises(DeliveryLost, match="gone"):
        await guards.guard(guards.lease(CLIENT), lambda: False, "message 7")()
    left, _ = await store.take_send_lease(SendGuards(store, lease_seconds=5).lease(CLIENT), 5)
    assert left == 0  # nothing was taken for a delivery that is not ours
