"""Durable dialog timers: one reminder to a silent customer, never against a newer state,
never twice, and still there after ``kill -9``."""

from __future__ import annotations

import httpx
import trio

from botd.config import Config
from botd.dialog import Reply, render
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.process import start_botd
from tests.conftest import delete_queues, make_config
from tests.helpers import inbox_payload, post_webhook

CLIENT = 4242001
REMINDER = render(Reply("reminder"), "ru")


async def _reminder_config(config: Config, seconds: int = 2) -> Config:
    return make_config(
        amqp_url=config.rabbitmq.url,
        queue_prefix=config.rabbitmq.queue_prefix,
        redis_prefix=config.redis.key_prefix,
        pg_dsn=config.postgres.dsn,
        base_url=config.chat2desk.base_url,
        BOTD_DIALOG_REMINDER_AFTER_SECONDS=str(seconds),
        BOTD_DIALOG_STATE_TTL_SECONDS="3600",
    )


async def _wait_texts(fake: FakeChat2Desk, client: int, n: int, timeout: float = 20) -> list[str]:
    with trio.fail_after(timeout):
        while len(fake.texts_for(client)) < n:
            await fake.wait_for_deliveries(len(fake.delivered()) + 1)
    return fake.texts_for(client)


async def test_silent_customer_gets_one_reminder_after_a_kill_9(
    config: Config, fake: FakeChat2Desk
) -> None:
    cfg = await _reminder_config(config)
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


async def test_a_reply_in_the_meantime_makes_the_reminder_stale(
    config: Config, fake: FakeChat2Desk
) -> None:
    cfg = await _reminder_config(config, seconds=2)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        proc = await start_botd(nursery, cfg)
        await post_webhook(http, proc.url, inbox_payload(CLIENT, "Здравствуйте"))
        await _wait_texts(fake, CLIENT, 2)
        await post_webhook(http, proc.url, inbox_payload(CLIENT, "ул. Токтогула 125"))
        await _wait_texts(fake, CLIENT, 3)
        # The first timer (set at the greeting) fires against an older version: stale, silent.
        # The second (set at the address) fires: exactly one reminder in total.
        texts = await _wait_texts(fake, CLIENT, 5)
        assert texts[3] == REMINDER and texts[4] == texts[2]
        proc.signal(15)
        assert await proc.wait_exit() == 0
    assert len(fake.texts_for(CLIENT)) == 5
    await delete_queues(cfg)
