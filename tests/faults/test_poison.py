"""Poison messages (docs/design.md §3.7): a message that fails every time is retried a bounded
number of times, then dead-lettered with the broker's reason, and its shard moves on to the next
message."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import trio

from botd.bridge import open_bridge
from botd.broker import Broker, Browsed, layout, open_broker
from botd.config import Config
from botd.inbound import shard_of
from tests.faults.support import DialogModel, Replies, botds, dialog_texts, say


@asynccontextmanager
async def connected_broker(config: Config) -> AsyncIterator[Broker]:
    async with open_bridge() as bridge, open_broker(bridge, config.rabbitmq, **layout(config)) as b:
        await b.connect_once()
        yield b


async def dead_letters(broker: Broker, n: int, *, timeout: float = 30) -> list[Browsed]:
    """Wait (polling the queue depth, 0.1 s steps) for ``n`` messages in the DLQ; browse them."""
    with trio.fail_after(timeout):
        while await broker.queue_depth(broker.topology.dlq) < n:
            await trio.sleep(0.1)
    async with broker.browse(broker.topology.dlq, limit=n) as browser:
        return list(browser.messages)


def first_death(headers: dict[str, Any]) -> tuple[str, str]:
    death = headers["x-death"][0]
    reason, queue = death["reason"], death["queue"]
    return (
        reason.decode() if isinstance(reason, bytes) else str(reason),
        queue.decode() if isinstance(queue, bytes) else str(queue),
    )


def same_shard_customer(cid: int, shards: int, *, start: int) -> int:
    other = start
    while shard_of(str(other), shards) != shard_of(str(cid), shards):
        other += 1
    return other


async def test_malformed_message_is_dead_lettered_and_the_shard_moves_on(
    make_config: Callable[..., Config], replies: Replies
) -> None:
    config = make_config()
    cid = same_shard_customer(0, config.rabbitmq.shards, start=870_001)
    shard = shard_of(str(cid), config.rabbitmq.shards)
    async with botds(config) as group, httpx.AsyncClient() as http:
        proc = await group.start()
        async with connected_broker(config) as broker:
            await broker.publish(broker.topology.shard(shard), b'{"not": "a message"', timeout=5)
            model = DialogModel(config, cid)
            expected = model.turn("Здравствуйте")
            await say(http, proc.url, cid, "Здравствуйте")
            assert await replies.wait(cid, len(expected)) == list(expected)
            (dead,) = await dead_letters(broker, 1)
            assert await broker.queue_depth(broker.topology.shard(shard)) == 0
    assert dead.body == b'{"not": "a message"'
    assert first_death(dead.headers) == ("rejected", broker.topology.shard(shard))
    assert sum("dropping malformed message to the DLQ" in line for line in proc.lines) == 1


async def test_permanent_db_error_is_retried_a_bounded_number_of_times_then_dead_lettered(
    make_config: Callable[..., Config], replies: Replies
) -> None:
    config = make_config()
    limit = config.rabbitmq.delivery_limit
    with psycopg.connect(config.postgres.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE orders ADD CONSTRAINT test_small_orders CHECK (quantity < 10)")
    poisoned = 871_001
    other = same_shard_customer(poisoned, config.rabbitmq.shards, start=872_001)
    texts = list(dialog_texts(0, poisoned))
    texts[3] = "20"  # the order insert will violate the constraint: a permanent error
    async with botds(config) as group, httpx.AsyncClient() as http:
        proc = await group.start()
        model = DialogModel(config, poisoned)
        expected: list[str] = []
        for text in texts[:4]:
            expected += model.turn(text)
            await say(http, proc.url, poisoned, text)
            await replies.wait(poisoned, len(expected))
        started = time.monotonic()
        confirm = await say(http, proc.url, poisoned, "да")
        await say(http, proc.url, other, "Здравствуйте")  # queued behind the poison, same shard
        other_expected = DialogModel(config, other).turn("Здравствуйте")
        assert await replies.wait(other, len(other_expected)) == list(other_expected)
        async with connected_broker(config) as broker:
            (dead,) = await dead_letters(broker, 1)
        elapsed = time.monotonic() - started
    failures = [
        line
        for line in proc.lines
        if f"message {confirm['message_id']} client {poisoned}: processing failed" in line
    ]
    print(f"\npoison: {len(failures)} attempts, dead-lettered within {elapsed:.2f}s")
    assert 2 <= len(failures) <= limit + 1, failures
    assert any("order rejected by the database" in line for line in proc.lines)
    assert str(confirm["message_id"]).encode() in dead.body
    assert first_death(dead.headers)[0] == "delivery_limit", dead.headers
    assert replies.texts[str(poisoned)] == expected  # no reply to the failed step
    with psycopg.connect(config.postgres.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
