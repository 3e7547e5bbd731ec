"""What a shop owner looks at: orders placed and cancelled, time from the first message to the
order, dialogs abandoned per step — counted by the Processor over the real Redis and PostgreSQL,
and scraped from the running daemon."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
import trio

from botd import daemon, dialog, ports
from botd.bridge import AsyncioBridge
from botd.config import PostgresConfig, RedisConfig
from botd.consumer import Outcome, Processor, abandoned_at
from botd.dialog import Step, TimerKind
from botd.errors import TransientError
from botd.histogram import BucketHistogram, HistogramSnapshot
from botd.inbound import MessageKind, QueuedMessage
from botd.memory import MemoryOutbox, MemorySender, MemoryTimers
from botd.order_store import ORDER_SECONDS_BUCKETS, OrderStore, open_order_store
from botd.state_store import StateStore, open_state_store
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.conftest import REDIS_URL
from tests.helpers import HAPPY_PATH, inbox_payload, post_webhook
from tests.test_ops import Samples, scrape, value

CLIENT = "555000222"
SETTINGS = dialog.DialogSettings()
WAITING = ("waiting_address", "waiting_phone", "waiting_quantity", "waiting_confirmation")


class FailOneCommit:
    """The real state store; once ``armed``, its next commit fails as a Redis blip would (after
    the order insert): the whole step, order insert included, runs again on the redelivery."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit(self, *args: Any, **kwargs: Any) -> ports.CommitResult:
        if self.armed:
            self.armed = False
            raise TransientError("redis went away")
        return await self._store.commit(*args, **kwargs)


class World:
    """A Processor on the real Redis and PostgreSQL, on a clock the test moves."""

    def __init__(self, store: StateStore, orders: OrderStore, now: float) -> None:
        self.now = now
        self.store = FailOneCommit(store)
        self.timers = MemoryTimers(lambda: self.now, reminder_after=1800, expire_after=84600)
        self.processor = Processor(
            store=cast(ports.StateStore, self.store),
            orders=orders,
            sender=MemorySender(),
            outbox=MemoryOutbox(),
            settings=SETTINGS,
            clock=lambda: self.now,
            timers=self.timers,
        )
        self.ids = 0

    def message(self, text: str | None) -> QueuedMessage:
        self.ids += 1
        self.now += 1
        return QueuedMessage(
            message_id=f"m{self.ids}",
            client_id=CLIENT,
            text=text,
            received_at=self.now,
            kind=MessageKind.CUSTOMER,
        )

    async def say(self, text: str | None) -> Outcome:
        return await self.processor.process(self.message(text))

    async def fire_last_timer(self) -> Outcome:
        timer = self.timers.scheduled[-1]
        self.now = timer.due
        return await self.processor.process(timer.event)

    @property
    def abandoned(self) -> dict[str, int]:
        return self.processor.stats.abandoned


@pytest.fixture
async def state_store(bridge: AsyncioBridge, redis_prefix: str) -> AsyncIterator[StateStore]:
    config = RedisConfig(url=REDIS_URL, key_prefix=redis_prefix)
    async with open_state_store(
        bridge, config, state_ttl_seconds=SETTINGS.state_ttl_seconds
    ) as store:
        yield store


@pytest.fixture
async def orders(bridge: AsyncioBridge, migrated_dsn: str) -> AsyncIterator[OrderStore]:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        yield store


def le(snapshot: HistogramSnapshot, bound: float) -> int:
    """Observations <= ``bound`` (Prometheus ``le``)."""
    return dict(zip(snapshot.bounds, snapshot.cumulative, strict=True))[bound]


# ---- the counting ----------------------------------------------------------------------------


def test_buckets_are_cumulative_and_inclusive() -> None:
    h = BucketHistogram((60, 30, 120))
    assert h.snapshot() == HistogramSnapshot((30, 60, 120), (0, 0, 0), 0, 0.0)
    for seconds in (30, 31, 90, 500):
        h.observe(seconds)
    assert h.snapshot() == HistogramSnapshot((30, 60, 120), (1, 2, 3), 4, 651.0)
    assert ORDER_SECONDS_BUCKETS[:3] == (30, 60, 120) and ORDER_SECONDS_BUCKETS[-1] == 86400


def _state(step: Step, updated_at: float = 1000.0) -> dialog.DialogState:
    return dialog.DialogState(
        step=step,
        dialog_id="" if step in (Step.IDLE, Step.HANDOFF) else "d-1",
        locale="ru",
        started_at=updated_at,
        updated_at=updated_at,
    )


def test_abandoned_only_when_a_waiting_dialog_ends_unfinished() -> None:
    waiting, idle = _state(Step.WAITING_ADDRESS), _state(Step.IDLE)
    closed = dialog.Transition(idle, ())
    expire = dialog.TimerFired("t", CLIENT, TimerKind.EXPIRE, 1.0)
    reminder = dialog.TimerFired("t", CLIENT, TimerKind.REMINDER, 1.0)
    assert abandoned_at(waiting, expire, closed, 2000.0, SETTINGS) == "waiting_address"
    assert abandoned_at(waiting, reminder, dialog.Transition(waiting, ()), 2000.0, SETTINGS) is None
    assert abandoned_at(idle, expire, closed, 2000.0, SETTINGS) is None
    assert abandoned_at(None, expire, closed, 2000.0, SETTINGS) is None
    turn = dialog.Turn("m", CLIENT, "привет", 0.0)
    late = 1000.0 + SETTINGS.state_ttl_seconds + 1
    assert abandoned_at(waiting, turn, closed, late, SETTINGS) == "waiting_address"
    assert abandoned_at(waiting, turn, closed, late - 2, SETTINGS) is None  # still in time
    # an operator's dialog past its silence is no customer giving up
    assert abandoned_at(_state(Step.HANDOFF), turn, closed, late, SETTINGS) is None
    operator = dialog.OperatorMessage("o", CLIENT, "добрый день", 0.0)
    assert abandoned_at(waiting, operator, closed, late, SETTINGS) is None


async def test_the_expire_timer_closing_a_dialog_counts_it_abandoned_at_its_step(
    state_store: StateStore, orders: OrderStore
) -> None:
    world = World(state_store, orders, time.time())
    await world.say(HAPPY_PATH[0])
    await world.say(HAPPY_PATH[1])  # the address: now the phone is asked
    assert await world.fire_last_timer() is Outcome.PROCESSED  # the reminder: no giving up yet
    assert world.abandoned == {}
    expire = world.timers.scheduled[-1].event
    assert expire.kind == "expire"
    assert await world.fire_last_timer() is Outcome.PROCESSED
    assert world.abandoned == {"waiting_phone": 1}
    assert await world.processor.process(expire) is Outcome.DUPLICATE  # a redelivery
    assert world.abandoned == {"waiting_phone": 1}


async def test_a_customer_back_after_the_ttl_counts_the_dialog_abandoned(
    state_store: StateStore, orders: OrderStore
) -> None:
    world = World(state_store, orders, time.time())
    await world.say(HAPPY_PATH[0])
    world.now += SETTINGS.state_ttl_seconds  # the timers were lost; the dialog expired
    assert await world.say(HAPPY_PATH[0]) is Outcome.PROCESSED
    assert world.abandoned == {"waiting_address": 1}
    await world.say(HAPPY_PATH[1])  # the new dialog goes on: nothing more given up
    assert world.abandoned == {"waiting_address": 1}


async def test_an_order_observes_the_time_from_the_first_message_once(
    state_store: StateStore, orders: OrderStore
) -> None:
    world = World(state_store, orders, time.time() - 90 - len(HAPPY_PATH))
    for text in HAPPY_PATH[:-1]:
        await world.say(text)
    world.store.armed = True  # the confirmation's commit fails after its order insert
    confirm = world.message(HAPPY_PATH[-1])
    world.now = time.time()
    with pytest.raises(TransientError):
        await world.processor.process(confirm)
    assert await world.processor.process(confirm) is Outcome.PROCESSED  # the redelivery
    assert world.processor.stats.orders == 2  # the order store was asked twice...
    stats = orders.statistics()
    assert stats.placed == 1  # ...and created the order once
    h = stats.from_first_message
    assert h.count == 1 and 89 <= h.total < 120, h
    assert (le(h, 60), le(h, 120), le(h, 86400)) == (0, 1, 1)


async def test_an_order_with_an_unknown_start_is_not_observed(orders: OrderStore) -> None:
    draft = dialog.OrderDraft("d-unknown", CLIENT, "+996555123456", "ул. Токтогула 125", 3)
    await orders.place(draft)
    await orders.place(dialog.OrderDraft("d-known", CLIENT, "+996555123456", "x", 1, "ru", 1.0))
    stats = orders.statistics()
    assert stats.placed == 2 and stats.from_first_message.count == 1


# ---- the scrape ------------------------------------------------------------------------------


async def say(client: httpx.AsyncClient, running: daemon.Running, text: str) -> None:
    handled = running.consumers.handled
    response = await post_webhook(client, running.url, inbox_payload(730_501, text))
    assert response.json() == {"status": "queued"}, response.text
    with trio.fail_after(20):
        await running.consumers.wait_handled(handled + 1)


def shop(samples: Samples) -> tuple[float, ...]:
    return (
        value(samples, "botd_orders_placed_total"),
        value(samples, "botd_orders_cancelled_total"),
        value(samples, "botd_order_from_first_message_seconds_count"),
        value(samples, "botd_order_from_first_message_seconds_bucket", le="30.0"),
        value(samples, "botd_order_from_first_message_seconds_bucket", le="+Inf"),
    )


async def test_the_shop_metrics_are_scraped_from_zero(
    running: daemon.Running, fake: FakeChat2Desk
) -> None:
    async with httpx.AsyncClient() as client:
        _, before = await scrape(client, running.url)
        assert shop(before) == (0, 0, 0, 0, 0)
        for step in WAITING:
            assert value(before, "botd_dialogs_abandoned_total", step=step) == 0, step
        for text in HAPPY_PATH:
            await say(client, running, text)
        await say(client, running, "отмените заказ")
        _, after = await scrape(client, running.url)
    assert shop(after) == (1, 1, 1, 1, 1)
    assert 0 < value(after, "botd_order_from_first_message_seconds_sum") < 30
