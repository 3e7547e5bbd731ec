"""An ORDER_STATUS message through the Processor over the real Redis: the customer hears the
shop's news once, in their language, with the order's number; a malformed one is dead-lettered.

The state store (dialog state, dedupe markers, send leases) is the real one on Redis; the
order store, sender, outbox and timers are the in-memory ones of tests/test_processor.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest

from botd import dialog
from botd.bridge import AsyncioBridge
from botd.broker import Delivery
from botd.config import RedisConfig
from botd.consumer import Outcome, Processor, ShardConsumers, to_event
from botd.dialog import Reply, Step
from botd.errors import InvalidInput
from botd.inbound import MessageKind, QueuedMessage, encode_queued
from botd.memory import MemoryOrderStore, MemoryOutbox, MemorySender, MemoryTimers
from botd.state_store import StateStore, open_state_store
from tests.conftest import REDIS_URL

CLIENT = "555000222"
ORDER_ID = 4217
SETTINGS = dialog.DialogSettings()


@pytest.fixture
async def store(bridge: AsyncioBridge, redis_prefix: str) -> AsyncIterator[StateStore]:
    config = RedisConfig(url=REDIS_URL, key_prefix=redis_prefix)
    async with open_state_store(bridge, config, state_ttl_seconds=SETTINGS.state_ttl_seconds) as s:
        yield s


class World:
    """A Processor on the real state store, with the in-memory sender, orders and timers."""

    def __init__(self, store: StateStore) -> None:
        self.now = time.time()  # Redis keeps the state with a TTL from the real clock
        self.store = store
        self.sender = MemorySender()
        self.timers = MemoryTimers(lambda: self.now, reminder_after=1800, expire_after=84600)
        self.processor = Processor(
            store=store,
            orders=MemoryOrderStore(),
            sender=self.sender,
            outbox=MemoryOutbox(),
            settings=SETTINGS,
            clock=lambda: self.now,
            timers=self.timers,
        )

    def status(
        self,
        status: str = "delivering",
        *,
        order_id: int | None = ORDER_ID,
        locale: str | None = "ru",
        event: str = "6f1c2a",
    ) -> QueuedMessage:
        """The message the order-event relay publishes for one move of the order."""
        return QueuedMessage(
            message_id=f"order-{event}",
            client_id=CLIENT,
            text=None,
            received_at=self.now,
            kind=MessageKind.ORDER_STATUS,
            order_id=order_id,
            order_status=status,
            locale=locale,
        )

    async def given(self, state: dialog.DialogState) -> None:
        """Store ``state`` as the customer's dialog (as an earlier step would have)."""
        loaded = await self.store.load(CLIENT, "setup")
        await self.store.commit(
            CLIENT,
            f"setup-{loaded.version}",
            expected_version=loaded.version,
            state=dialog.dump_state(state),
            replies=(),
        )

    async def state(self) -> tuple[int, dialog.DialogState | None]:
        loaded = await self.store.load(CLIENT, "probe")
        return loaded.version, None if loaded.state is None else dialog.load_state(loaded.state)


def told(key: str, locale: str) -> str:
    return dialog.render(Reply(key, (("order_id", str(ORDER_ID)),)), locale)


def idle(locale: str, at: float) -> dialog.DialogState:
    return dialog.DialogState(
        Step.IDLE, "", locale, at, at, locale_sure=True, last_order_key=f"{CLIENT}:m1"
    )


async def test_the_customer_is_told_once_in_the_language_of_their_dialog(
    store: StateStore,
) -> None:
    world = World(store)
    await world.given(idle("ky", world.now - 3600))
    # the relay's locale (the order's) loses to the dialog's: the customer's latest language
    assert await world.processor.process(world.status(locale="ru")) is Outcome.PROCESSED
    assert world.sender.texts_for(CLIENT) == [told("order_delivering", "ky")]
    assert str(ORDER_ID) in world.sender.texts_for(CLIENT)[0]
    version, state = await world.state()
    assert version == 2 and state == idle("ky", world.now - 3600)  # committed, unchanged
    assert world.timers.scheduled == []


@pytest.mark.parametrize("locale", ["ru", "ky", "en"])
async def test_without_a_dialog_the_language_of_the_order_is_used(
    store: StateStore, locale: str
) -> None:
    world = World(store)
    assert await world.processor.process(world.status("cancelled", locale=locale)) is (
        Outcome.PROCESSED
    )
    assert world.sender.texts_for(CLIENT) == [told("order_cancelled_by_shop", locale)]
    _, state = await world.state()
    assert state is not None and (state.step, state.locale) == (Step.IDLE, locale)


async def test_the_same_message_twice_is_told_once(store: StateStore) -> None:
    world = World(store)
    message = world.status()
    assert await world.processor.process(message) is Outcome.PROCESSED
    assert await world.processor.process(message) is Outcome.DUPLICATE
    assert world.sender.texts_for(CLIENT) == [told("order_delivering", "ru")]
    assert (await world.state())[0] == 1
    assert world.processor.stats.duplicates == 1


async def test_mid_dialog_the_question_comes_again_and_a_new_reminder_is_set(
    store: StateStore,
) -> None:
    world = World(store)
    asked = dialog.DialogState(
        Step.WAITING_PHONE,
        f"{CLIENT}:m1",
        "en",
        world.now - 120,
        world.now - 60,
        address="Bishkek, Chui 100, flat 5",
        locale_sure=True,
    )
    await world.given(asked)
    assert await world.processor.process(world.status()) is Outcome.PROCESSED
    assert world.sender.texts_for(CLIENT) == [
        told("order_delivering", "en"),
        dialog.render(Reply("ask_phone"), "en"),
    ]
    version, state = await world.state()
    assert (version, state) == (2, asked)  # updated_at kept: the dialog's TTL still counts
    assert [(t.event.kind, t.event.version) for t in world.timers.scheduled] == [
        (MessageKind.REMINDER, 2)
    ]


async def test_a_human_operators_conversation_is_left_alone(store: StateStore) -> None:
    world = World(store)
    handoff = dialog.DialogState(Step.HANDOFF, "", "ru", world.now - 60, world.now - 60)
    await world.given(handoff)
    assert await world.processor.process(world.status("cancelled")) is Outcome.PROCESSED
    assert world.sender.sent == []
    assert (await world.state())[1] == handoff


async def test_a_status_not_worth_telling_changes_nothing(store: StateStore) -> None:
    world = World(store)
    assert await world.processor.process(world.status("confirmed")) is Outcome.STALE_TIMER
    assert world.sender.sent == []
    assert await world.state() == (0, None)
    assert world.processor.stats.stale_timers == 1


@pytest.mark.parametrize(
    "broken",
    [{"order_id": None}, {"order_status": None}, {"order_status": ""}],
)
async def test_a_status_without_its_order_is_invalid_and_changes_nothing(
    store: StateStore, broken: dict[str, Any]
) -> None:
    world = World(store)
    message = msgspec.structs.replace(world.status(), **broken)
    with pytest.raises(InvalidInput, match="order_id and order_status are required"):
        to_event(message)
    with pytest.raises(InvalidInput):
        await world.processor.process(message)
    assert world.sender.sent == []
    assert await world.state() == (0, None)


class _Sub:
    """The subscription a shard consumer acks or nacks through; records which."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.nacked: list[tuple[int, bool]] = []

    def is_open(self) -> bool:
        return True

    async def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery.delivery_tag)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        self.nacked.append((delivery.delivery_tag, requeue))


async def test_the_shard_consumer_dead_letters_it_at_once_and_acks_a_good_one(
    store: StateStore,
) -> None:
    """Redelivering a status without its order cannot help: straight to the DLQ (no requeue),
    counted as poison — while a well-formed one is processed and acked."""
    world = World(store)
    broker = SimpleNamespace(topology=SimpleNamespace(shards=1, shard=lambda i: f"shard.{i}"))
    consumers = ShardConsumers(cast(Any, broker), world.processor, prefetch=1)
    sub = _Sub()
    no_order = encode_queued(world.status(order_id=None, event="1"))
    good = encode_queued(world.status(event="2"))
    await consumers._handle(0, cast(Any, sub), Delivery(no_order, 1, False, {}))
    await consumers._handle(0, cast(Any, sub), Delivery(good, 2, False, {}))
    assert sub.nacked == [(1, False)]
    assert sub.acked == [2]
    assert consumers.stats.poison == 1
    assert world.sender.texts_for(CLIENT) == [told("order_delivering", "ru")]
