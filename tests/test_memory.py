"""The in-memory adapters (botd.memory) keep the semantics of the real ones."""

from __future__ import annotations

import io

import pytest

from botd.dialog import OrderDraft, TimerKind
from botd.errors import TransientError
from botd.memory import (
    FIRST_SENT_ID,
    MemoryOrderStore,
    MemoryOutbox,
    MemorySender,
    MemoryStateStore,
    MemoryTimers,
    timer_message_id,
    version_ttl_seconds,
)
from botd.ports import CancelOutcome, CancelResult, CommitResult, Marker, reply_ids
from botd.state_store import version_ttl_seconds as real_version_ttl_seconds
from botd.timers import timer_message_id as real_timer_message_id


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def draft(key: str = "c1:m1", quantity: int = 2) -> OrderDraft:
    return OrderDraft(
        idempotency_key=key,
        client_id="c1",
        phone="+996555123456",
        address="Токтогула 10",
        quantity=quantity,
    )


async def test_state_store_compare_and_set_and_markers() -> None:
    store = MemoryStateStore()
    loaded = await store.load("c1", "m1")
    assert (loaded.version, loaded.state, loaded.marker, loaded.own_echo) == (0, None, None, False)
    state = {"schema": 1, "step": "waiting_address"}
    ok = await store.commit("c1", "m1", expected_version=0, state=state, replies=("hi",))
    assert ok is CommitResult.COMMITTED
    # The same message again: a duplicate, whatever the version.
    again = await store.commit("c1", "m1", expected_version=1, state=None, replies=())
    assert again is CommitResult.DUPLICATE
    # Another message against an old version: a conflict, nothing stored.
    stale = await store.commit("c1", "m2", expected_version=0, state=None, replies=("x",))
    assert stale is CommitResult.CONFLICT
    assert (await store.load("c1", "m2")).marker is None
    loaded = await store.load("c1", "m1")
    assert loaded.version == 1 and loaded.state == state
    assert loaded.marker == Marker(("hi",), sent=False)
    await store.mark_sent("m1", ("777", ""))
    assert (await store.load("c1", "m1")).marker == Marker(("hi",), sent=True)
    assert (await store.load("c1", "777")).own_echo
    assert not (await store.load("c1", "")).own_echo
    # An empty state is stored as idle (None), and the version still moves on.
    await store.commit("c1", "m3", expected_version=1, state=None, replies=())
    assert (await store.load("c1", "m4")).version == 2
    assert store.state_of("c1") is None
    assert store.commits == [
        CommitResult.COMMITTED,
        CommitResult.DUPLICATE,
        CommitResult.CONFLICT,
        CommitResult.COMMITTED,
    ]


async def test_state_store_state_is_a_copy() -> None:
    store = MemoryStateStore()
    state: dict[str, object] = {"step": "waiting_phone"}
    await store.commit("c1", "m1", expected_version=0, state=state, replies=())
    state["step"] = "changed"
    loaded = await store.load("c1", "m2")
    assert loaded.state == {"step": "waiting_phone"}


async def test_state_store_ttls_on_its_clock() -> None:
    clock = Clock()
    store = MemoryStateStore(clock=clock, state_ttl_seconds=100, dedupe_ttl_seconds=500)
    await store.commit("c1", "m1", expected_version=0, state={"a": 1}, replies=("r",))
    clock.now += 99
    assert (await store.load("c1", "m1")).version == 1
    clock.now += 1
    loaded = await store.load("c1", "m1")
    # the dialog expired; its version did not: the next dialog goes on from it
    assert (loaded.version, loaded.state) == (1, None)
    assert loaded.marker is not None  # the marker lives longer
    clock.now += 400
    assert (await store.load("c1", "m1")).marker is None


async def test_state_store_versions_never_repeat_after_the_dialog_expired() -> None:
    clock = Clock()
    store = MemoryStateStore(clock=clock, state_ttl_seconds=100, dedupe_ttl_seconds=500)
    seen = []
    for dialog in range(3):  # three dialogs, each expiring after two steps
        for step in range(2):
            loaded = await store.load("c1", f"m{dialog}-{step}")
            state = {"dialog": dialog, "step": step}
            result = await store.commit(
                "c1", f"m{dialog}-{step}", expected_version=loaded.version, state=state, replies=()
            )
            assert result is CommitResult.COMMITTED
            seen.append(store.version_of("c1"))
        clock.now += 100
        assert store.state_of("c1") is None
    assert seen == [1, 2, 3, 4, 5, 6]
    # forgotten only when nothing can carry an old version any more (Redis ``version:`` TTL)
    clock.now += version_ttl_seconds(100, 500) - 100 - 1
    assert store.version_of("c1") == 6
    clock.now += 1
    assert store.version_of("c1") == 0


async def test_order_store_places_once_and_cancels_by_the_rules() -> None:
    orders = MemoryOrderStore()
    assert await orders.place(draft("k1")) == 1
    assert await orders.place(draft("k1", quantity=9)) == 1  # idempotent: the first one stays
    assert await orders.place(draft("k2")) == 2
    assert [(r.id, r.quantity, r.status) for r in orders.rows] == [
        (1, 2, "placed"),
        (2, 2, "placed"),
    ]
    assert await orders.cancel("k1") == CancelResult(CancelOutcome.CANCELLED, 1)
    assert await orders.cancel("k1") == CancelResult(CancelOutcome.ALREADY_CANCELLED, 1)
    orders.set_status(2, "delivering")
    assert await orders.cancel("k2") == CancelResult(CancelOutcome.TOO_LATE, 2)
    assert await orders.cancel("nope") == CancelResult(CancelOutcome.NOT_FOUND, None)
    assert [r.status for r in orders.rows] == ["cancelled", "delivering"]
    row = orders.by_id(1)
    assert row is not None
    assert row.public() == {
        "id": 1,
        "phone": "+996555123456",
        "address": "Токтогула 10",
        "quantity": 2,
        "status": "cancelled",
    }
    with pytest.raises(KeyError):
        orders.set_status(99, "confirmed")


async def test_sender_records_prints_and_fails_on_request() -> None:
    out = io.StringIO()
    sender = MemorySender(out)
    assert await sender.send("c1", "hello") == str(FIRST_SENT_ID)
    sender.failures.append(TransientError("down"))
    with pytest.raises(TransientError):
        await sender.send("c1", "lost")
    assert await sender.send("c2", "hi") == str(FIRST_SENT_ID + 1)
    assert sender.sent == [("c1", "hello"), ("c2", "hi")]
    assert sender.texts_for("c1") == ["hello"]
    assert out.getvalue() == "bot> hello\nbot> hi\n"


async def test_outbox_records_and_counts_pending() -> None:
    store = MemoryStateStore()
    outbox = MemoryOutbox(store)
    await outbox.park("c1", "m1", reply_ids("m1", ("a", "b")), reason="down")
    await outbox.dead_letter("c1", "m1", "c", reason="refused", attempts=1)
    assert (await store.load("c1", "m2")).outbox_pending == 1
    ((batch_id, parked),) = outbox.parked
    assert (parked.texts, parked.reason) == (("a", "b"), "down")
    assert parked.external_ids == ("botd-m1-0", "botd-m1-1")
    assert [(d.text, d.reason, d.attempts) for d in outbox.dead] == [("c", "refused", 1)]
    outbox.done(batch_id)
    assert (await store.load("c1", "m2")).outbox_pending == 0


async def test_timers_come_due_in_order_on_the_clock() -> None:
    clock = Clock(100.0)
    timers = MemoryTimers(clock, reminder_after=30, expire_after=50)
    await timers.schedule("c1", TimerKind.EXPIRE, 3)  # due 150
    await timers.schedule("c1", TimerKind.REMINDER, 4)  # due 130
    clock.now = 120.0
    await timers.schedule("c2", TimerKind.REMINDER, 1)  # due 150, after c1's expire on the tie
    assert timers.next_due() == 130.0
    assert timers.pop_due(129.0) is None
    due = [timers.pop_due(1000.0) for _ in range(3)]
    assert [(t.due, t.event.message_id) for t in due if t is not None] == [
        (130.0, "reminder-c1-4"),
        (150.0, "expire-c1-3"),
        (150.0, "reminder-c2-1"),
    ]
    first = due[0]
    assert first is not None
    assert (first.event.kind, first.event.version, first.event.client_id) == ("reminder", 4, "c1")
    assert timers.pop_due(1000.0) is None and timers.next_due() is None
    assert len(timers.scheduled) == 3


def test_timer_ids_are_those_of_the_real_timers() -> None:
    assert timer_message_id("reminder", "42", 7) == real_timer_message_id("reminder", "42", 7)


def test_version_ttl_is_that_of_the_real_store() -> None:
    assert version_ttl_seconds(86400, 172800) == real_version_ttl_seconds(86400, 172800)
