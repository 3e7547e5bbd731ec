"""``kill -9`` between an order and its events (docs/orders.md): one note, one webhook event.

The order and its ``order.placed`` event are one statement, so a crash right after the insert
leaves an event nobody has handed on yet; the restarted process's relay finds it. A crash after
the relay published a batch but before it marked it publishes the batch again; the note and
webhook destinations drop the copies by the event's id.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from botd.config import Config
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.fake_shop import FakeShop, open_fake_shop
from tests.faults.support import botds, dialog_texts, orders_by_client, say

SECRET = "shop-secret-for-crash-tests-0123"


@pytest.fixture
async def shop() -> AsyncIterator[FakeShop]:
    async with open_fake_shop(SECRET) as shop:
        yield shop


async def _notes(fake: FakeChat2Desk, cid: int, n: int) -> None:
    with trio.fail_after(30):
        while len(fake.notes_for(cid)) < n:
            await trio.sleep(0.05)


@pytest.mark.parametrize(
    ("point", "cid"), [("after_order_insert", 820_001), ("after_events_handed_on", 820_002)]
)
async def test_kill9_between_the_order_and_its_events_gives_one_note_and_one_event(
    point: str,
    cid: int,
    make_config: Callable[..., Config],
    fake: FakeChat2Desk,
    shop: FakeShop,
) -> None:
    config = make_config(shop_webhook_url=shop.url, shop_webhook_secret=SECRET)
    texts = dialog_texts(1, cid)
    async with botds(config) as group, httpx.AsyncClient() as http:
        first = await group.start(BOTD_TEST_CRASH_AT=point)
        for text in texts:
            # the last one may be taken and crash on before its answer is flushed
            with contextlib.suppress(httpx.TransportError):
                await say(http, first.url, cid, text)
        assert await first.wait_exit() == -9, "\n".join(first.lines[-20:])
        await group.start()
        with trio.fail_after(30):
            (event,) = await shop.wait_accepted(1)
        await _notes(fake, cid, 1)

    (order,) = orders_by_client(config.postgres.dsn)[str(cid)]
    assert event["order"]["id"] == order["id"] and event["type"] == "order.placed"
    assert len(fake.notes_for(cid)) == 1, fake.notes_for(cid)
    assert fake.duplicate_deliveries() == []
    # at least once: a copy is possible only if the crash fell between the shop's 2xx and
    # botd's record of it, which neither point is
    assert shop.copies() == 0
    assert all(r.signature_ok for r in shop.requests)
