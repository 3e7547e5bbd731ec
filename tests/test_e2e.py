"""End to end: the whole daemon in-process on port 0, real services, the Chat2Desk fake."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from botd.config import Config
from botd.daemon import Running
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.helpers import HAPPY_PATH, inbox_payload, orders, post_webhook

CLIENT = 17340089


async def _say(
    client: httpx.AsyncClient,
    running: Running,
    fake: FakeChat2Desk,
    text: str,
    expect: int,
    **kw: Any,
) -> dict[str, object]:
    body = inbox_payload(CLIENT, text, **kw)
    response = await post_webhook(client, running.url, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "queued"}
    with trio.fail_after(10):
        await fake.wait_for_deliveries(expect)
    return body


async def test_full_dialog_creates_one_order(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{running.url}/ready")).status_code == 200
        delivered = 0
        for text in HAPPY_PATH:
            before = len(fake.delivered())
            await _say(client, running, fake, text, before + 1)
            delivered = len(fake.delivered())
        assert delivered >= len(HAPPY_PATH)

    rows = orders(config.postgres.dsn)
    assert len(rows) == 1
    order = rows[0]
    assert order["client_phone"] == "+996555123456"
    assert order["delivery_address"] == "ул. Токтогула 125, кв. 4"
    assert order["quantity"] == 3
    assert order["chat2desk_client_id"] == str(CLIENT)
    assert order["status"] == "new"
    texts = fake.texts_for(CLIENT)
    assert f"{order['id']}" in texts[-1]
    for request in fake.requests:
        assert request.authorization == "test-token"
        assert request.body is not None and request.body["type"] == "to_client"


async def test_duplicate_webhook_changes_nothing(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    async with httpx.AsyncClient() as client:
        first = await _say(client, running, fake, "Привет", 1)
        replies_after_first = fake.texts_for(CLIENT)
        state_before = await running.store.load(str(CLIENT), "0")
        for _ in range(3):
            response = await post_webhook(client, running.url, first)
            assert response.json() == {"status": "queued"}
        # A following message proves the duplicates were consumed before it (same shard, in order).
        await _say(client, running, fake, "ул. Токтогула 125", len(replies_after_first) + 1)
    state_after = await running.store.load(str(CLIENT), "0")
    assert state_after.version == state_before.version + 1
    assert fake.texts_for(CLIENT)[: len(replies_after_first)] == replies_after_first
    assert running.consumers.stats.duplicates == 3
