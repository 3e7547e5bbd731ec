"""Durable dialog timers: one reminder to a silent customer, never against a newer state,
never twice, and still there after ``kill -9``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest
import redis
import trio

from botd.config import Config
from botd.daemon import Running
from botd.dialog import Reply, render
from botd.inbound import MessageKind, QueuedMessage, encode_queued, shard_of
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.process import start_botd
from botd.timers import timer_message_id
from tests.conftest import delete_queues
from tests.helpers import inbox_payload, post_webhook

CLIENT = 4242001
REMINDER = render(Reply("reminder"), "ru")


@pytest.fixture
def reminder_config(make_config: Callable[..., Config]) -> Config:
    """Reminders after 2 s (the dialog closes after an hour); DEBUG logs name each outcome."""
    return make_config(
        dialog_reminder_after_seconds="2", dialog_state_ttl_seconds="3600", log_level="DEBUG"
    )


async def _wait_texts(fake: FakeChat2Desk, client: int, n: int, timeout: float = 20) -> list[str]:
    with trio.fail_after(timeout):
        while len(fake.texts_for(client)) < n:
            await fake.wait_for_deliveries(len(fake.delivered()) + 1)
    return fake.texts_for(client)


async def test_silent_customer_gets_one_reminder_after_a_kill_9(
    reminder_config: Config, fake: FakeChat2Desk
) -> None:
    cfg = reminder_config
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        first = await start_botd(nursery, cfg)
        response = await post_webhook(http, first.url, inbox_payload(CLIENT, "Здравствуйте"))
        assert response.json() == {"status": "queued"}
        greeting = await _wait_texts(fake, CLIENT, 2)
        first.kill9()  # the reminder is a queued message, not a task in this process
        assert await first.wait_exit() == -9
        second = await start_botd(nursery, cfg)
        # The greeting may be sent once more (kill -9 before the ack: replies are at-least-once).
        with trio.fail_after(20):
            while REMINDER not in fake.texts_for(CLIENT):
                await fake.wait_for_deliveries(len(fake.delivered()) + 1)
        texts = await _wait_texts(fake, CLIENT, fake.texts_for(CLIENT).index(REMINDER) + 2)
        at = texts.index(REMINDER)
        assert texts[:2] == greeting and set(texts[:at]) == set(greeting)
        assert texts[at + 1] == greeting[1]  # the current question again
        # It never fires twice: the reply below is answered, and no second reminder comes.
        response = await post_webhook(http, second.url, inbox_payload(CLIENT, "ул. Токтогула 125"))
        assert response.json() == {"status": "queued"}
        texts = await _wait_texts(fake, CLIENT, at + 3)
        assert texts.count(REMINDER) == 1
        second.signal(15)
        assert await second.wait_exit() == 0
    await delete_queues(cfg)


def _timer_handled(client: int = CLIENT, *, other_than: str = "") -> str:
    """The consumer's DEBUG line for a reminder timer of ``client``: groups (timer id,
    outcome)."""
    skip = rf"(?!{re.escape(other_than)}\b)" if other_than else ""
    return rf"message {skip}(reminder-{client}-\d+) client {client}: (\w+)"


async def test_a_reply_in_the_meantime_replaces_the_reminder(
    reminder_config: Config, fake: FakeChat2Desk
) -> None:
    """The greeting's reminder is replaced by the address's (a customer has one timer, for the
    latest state): only that one fires, once, and re-asks the current question."""
    cfg = reminder_config
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        proc = await start_botd(nursery, cfg)
        await post_webhook(http, proc.url, inbox_payload(CLIENT, "Здравствуйте"))
        await _wait_texts(fake, CLIENT, 2)
        await post_webhook(http, proc.url, inbox_payload(CLIENT, "ул. Токтогула 125"))
        await _wait_texts(fake, CLIENT, 3)
        version = _dialog_version(cfg, CLIENT)  # the address's state, the reminder's
        handled = await proc.wait_for_line(_timer_handled(), timeout=20)
        assert handled.groups() == (timer_message_id("reminder", str(CLIENT), version), "processed")
        texts = await _wait_texts(fake, CLIENT, 5)
        assert texts[3] == REMINDER and texts[4] == texts[2], texts
        proc.signal(15)
        assert await proc.wait_exit() == 0
    # The greeting's timer was due first: had it been kept, it would have been handled before.
    timers = [m[1] for m in map(re.compile(_timer_handled()).search, proc.lines) if m]
    assert timers == [handled[1]], timers
    assert fake.texts_for(CLIENT).count(REMINDER) == 1
    await delete_queues(cfg)


def _dialog_version(cfg: Config, client: int) -> int:
    sync = redis.Redis.from_url(cfg.redis.url)
    try:
        return int(sync.hget(f"{cfg.redis.key_prefix}dialog:{client}", "v") or 0)
    finally:
        sync.close()


# ---- versions never repeat: a customer whose dialog expired comes back ---------------------------


def _forget_dialog(cfg: Config, client: int) -> None:
    """Delete the customer's dialog key, as its TTL (``dialog.state_ttl_seconds``) would."""
    sync = redis.Redis.from_url(cfg.redis.url)
    try:
        assert sync.delete(f"{cfg.redis.key_prefix}dialog:{client}") == 1
    finally:
        sync.close()


async def test_a_returning_customer_gets_a_reminder_after_the_dialog_expired(
    reminder_config: Config, fake: FakeChat2Desk
) -> None:
    """The returning customer's dialog must not reach a version whose timer id was used: its
    dedupe marker (48 h) would swallow the new reminder."""
    cfg, client = reminder_config, CLIENT + 1
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        proc = await start_botd(nursery, cfg)
        await post_webhook(http, proc.url, inbox_payload(client, "Здравствуйте"))
        greeting = await _wait_texts(fake, client, 2)
        texts = await _wait_texts(fake, client, 4)  # the reminder and the question again
        assert texts[2:] == [REMINDER, greeting[1]], texts
        first = await proc.wait_for_line(_timer_handled(client), timeout=20)
        assert first[2] == "processed", first[0]
        _forget_dialog(cfg, client)
        await post_webhook(http, proc.url, inbox_payload(client, "Здравствуйте"))
        texts = await _wait_texts(fake, client, 6)
        assert texts[4:] == greeting, texts  # a new dialog
        texts = await _wait_texts(fake, client, 8)  # fails (times out) if the reminder is lost
        assert texts[6:] == [REMINDER, greeting[1]], texts
        second = await proc.wait_for_line(_timer_handled(client, other_than=first[1]), timeout=20)
        assert second[2] == "processed", second[0]
        proc.signal(15)
        assert await proc.wait_exit() == 0
    await delete_queues(cfg)


async def test_a_late_close_of_the_old_dialog_does_nothing_to_the_new_one(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    client = CLIENT + 2
    store, broker = running.store, running.broker

    async def say(text: str | None, *, kind: str = "customer", version: int = 0) -> None:
        handled = running.consumers.handled
        if kind == "customer":
            async with httpx.AsyncClient() as http:
                await post_webhook(http, running.url, inbox_payload(client, text or ""))
        else:  # a timer, as the timer router moves it into the customer's shard queue
            timer = QueuedMessage(
                message_id=timer_message_id(kind, str(client), version),
                client_id=str(client),
                text=None,
                received_at=time.time(),
                kind=MessageKind(kind),
                version=version,
            )
            shard = broker.topology.shard(shard_of(str(client), config.rabbitmq.shards))
            await broker.publish(shard, encode_queued(timer), timeout=broker.publish_timeout)
        with trio.fail_after(15):
            await running.consumers.wait_handled(handled + 1)

    await say("Здравствуйте")
    old = (await store.load(str(client), "x")).version  # the old dialog's last version
    _forget_dialog(config, client)
    await say("Здравствуйте")
    new = await store.load(str(client), "x")
    assert new.version > old and new.state is not None
    texts = fake.texts_for(client)
    # the old dialog's close arrives late: the timer was set for version ``old``
    await say(None, kind="expire", version=old)
    assert fake.texts_for(client) == texts  # no goodbye
    after = await store.load(str(client), "x")
    assert (after.version, after.state) == (new.version, new.state)
    assert running.consumers.stats.stale_timers == 1
