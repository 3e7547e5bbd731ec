"""End to end: the whole daemon in-process on port 0, real services, the Chat2Desk fake."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from botd.config import Config
from botd.daemon import Running
from botd.dialog import Reply, render
from botd.testing.fake_chat2desk import FIRST_MESSAGE_ID, FakeChat2Desk
from tests.helpers import HAPPY_PATH, inbox_payload, orders, post_webhook

CLIENT = 17340089


async def say(client: httpx.AsyncClient, running: Running, text: str, **kw: Any) -> dict[str, Any]:
    """Post one customer message and wait until botd has finished handling it."""
    body = inbox_payload(CLIENT, text, **kw)
    handled = running.consumers.handled
    response = await post_webhook(client, running.url, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "queued"}
    with trio.fail_after(10):
        await running.consumers.wait_handled(handled + 1)
    return body


async def test_full_dialog_creates_one_order(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{running.url}/ready")).status_code == 200
        replies_per_turn = []
        for text in HAPPY_PATH:
            before = len(fake.texts_for(CLIENT))
            await say(client, running, text)
            replies_per_turn.append(len(fake.texts_for(CLIENT)) - before)
    assert all(n >= 1 for n in replies_per_turn), replies_per_turn

    rows = orders(config.postgres.dsn)
    assert len(rows) == 1
    order = rows[0]
    assert order["client_phone"] == "+996555123456"
    assert order["delivery_address"] == "ул. Токтогула 125, кв. 4"
    assert order["quantity"] == 3
    assert order["chat2desk_client_id"] == str(CLIENT)
    assert order["status"] == "placed"
    texts = fake.texts_for(CLIENT)
    assert f"№{order['id']}" in texts[-1]
    assert "ул. Токтогула 125, кв. 4" in texts[-2] and "+996555123456" in texts[-2]
    for request in fake.requests:
        assert request.authorization == "test-token"
        if not request.visible:  # the order's internal note (docs/orders.md)
            assert request.body["type"] == "comment" and "🛒" in request.body["text"]
            continue
        assert request.body is not None and request.body["type"] == "to_client"
        assert request.body["client_id"] == CLIENT


async def test_duplicate_webhook_changes_nothing(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    async with httpx.AsyncClient() as client:
        first = await say(client, running, "Привет")
        replies_after_first = fake.texts_for(CLIENT)
        state_before = await running.store.load(str(CLIENT), "0")
        for _ in range(3):
            handled = running.consumers.handled
            response = await post_webhook(client, running.url, first)
            assert response.json() == {"status": "queued"}
            with trio.fail_after(10):
                await running.consumers.wait_handled(handled + 1)
        assert fake.texts_for(CLIENT) == replies_after_first  # no reply was sent again
        await say(client, running, "ул. Токтогула 125")
    state_after = await running.store.load(str(CLIENT), "0")
    assert state_after.version == state_before.version + 1
    assert running.consumers.stats.duplicates == 3
    assert orders(config.postgres.dsn) == []


async def test_health_version_and_metrics(running: Running) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{running.url}/health")).json() == {"status": "ok"}
        index = (await client.get(f"{running.url}/")).json()
        assert index["name"] == "botd" and index["version"]
        ready = await client.get(f"{running.url}/ready")
        assert ready.status_code == 200
        assert ready.json()["rabbitmq"] == "up" and ready.json()["postgres"] == "up"
        await post_webhook(client, running.url, inbox_payload(CLIENT, "hi"))
        text = (await client.get(f"{running.url}/metrics")).text
    assert 'botd_webhook_requests_total{code="200"} 1.0' in text
    assert "botd_build_info" in text


async def test_operator_takes_over_and_gives_back(running: Running, fake: FakeChat2Desk) -> None:
    async with httpx.AsyncClient() as client:
        await say(client, running, "Здравствуйте")
        greeted = len(fake.texts_for(CLIENT))
        # botd's own replies come back as outbox events: recognised by id, they change nothing.
        own_id = FIRST_MESSAGE_ID  # the fake numbers delivered messages from this id on
        await say(
            client,
            running,
            render(Reply("greeting"), "ru"),
            hook_type="outbox",
            type="to_client",
            message_id=own_id,
            operator_id=41164,
        )
        assert running.consumers.stats.own_echoes == 1
        await say(client, running, "ул. Токтогула 125")  # the dialog still runs
        assert len(fake.texts_for(CLIENT)) == greeted + 1
        # A human operator writes: the bot steps aside and stays silent.
        await say(
            client,
            running,
            "Добрый день, это Айгуль из магазина",
            hook_type="outbox",
            type="to_client",
            operator_id=41164,
        )
        before = len(fake.texts_for(CLIENT))
        await say(client, running, "0555 123 456")
        await say(client, running, "сколько стоит?")
        assert len(fake.texts_for(CLIENT)) == before
        state = await running.store.load(str(CLIENT), "0")
        assert state.state is not None and state.state["step"] == "handoff"
        # The operator gives the customer back with /bot: the next message starts a new dialog.
        await say(client, running, "/bot", hook_type="outbox", type="to_client", operator_id=41164)
        await say(client, running, "Привет")
        assert len(fake.texts_for(CLIENT)) > before
