"""Orders reach the shop (docs/orders.md): the whole daemon in-process, real services, the fake
Chat2Desk and a fake shop receiver that checks every signature.

An order gives exactly one internal note in the customer's dialog and one signed webhook event;
a cancel gives the cancel note and event; the shop's status change reaches the shop's system;
events the shop does not take are retried, dead-lettered after the configured attempts, and
replayed from the DLQ; a republished event (the relay's crash window) changes nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from botd import daemon
from botd.config import Config
from botd.order_lifecycle import move
from botd.order_notes import note_external_id
from botd.shop_webhook import sign, verify
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.fake_shop import FakeShop, open_fake_shop
from tests.helpers import (
    complete_order,
    orders,
    running_daemon,
    say_and_wait,
    subprocess_env,
    wait_until,
)

SECRET = "shop-secret-for-tests-0123456789"
CLIENT = 17_555_001

say = partial(say_and_wait, client=CLIENT)
order_one = partial(complete_order, client=CLIENT)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
async def shop() -> AsyncIterator[FakeShop]:
    async with open_fake_shop(SECRET) as shop:
        yield shop


def shop_config(make_config: Callable[..., Config], shop: FakeShop, **more: str) -> Config:
    return make_config(
        shop_webhook_url=shop.url,
        shop_webhook_secret=SECRET,
        shop_webhook_max_backoff_seconds="1",
        **more,
    )


async def placed_and_sent(
    http: httpx.AsyncClient, running: daemon.Running, shop: FakeShop, dsn: str
) -> dict[str, Any]:
    """One order through the dialog, its event taken by the shop; the order's row."""
    await order_one(http, running)
    with trio.fail_after(15):
        await shop.wait_accepted(1)
    (order,) = orders(dsn)
    return order


async def wait_notes(fake: FakeChat2Desk, n: int) -> list[dict[str, Any]]:
    await wait_until(lambda: len(fake.notes_for(CLIENT)) >= n)
    return fake.notes_for(CLIENT)


def events(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM order_events ORDER BY id")
        return list(cur.fetchall())


async def test_an_order_gives_one_note_and_one_signed_event(
    make_config: Callable[..., Config], shop: FakeShop, fake: FakeChat2Desk
) -> None:
    config = shop_config(make_config, shop)
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        with trio.fail_after(15):
            (event,) = await shop.wait_accepted(1)
        (note,) = await wait_notes(fake, 1)
        await wait_until(lambda: all(e["published_at"] for e in events(config.postgres.dsn)))
        metrics = (await http.get(f"{running.url}/metrics")).text

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    assert samples[("botd_order_events_published_total", (("type", "order.placed"),))] == 1
    assert samples[("botd_order_events_published_total", (("type", "order.cancelled"),))] == 0
    for destination in ("note", "shop"):
        key = (("destination", destination), ("outcome", "delivered"))
        assert samples[("botd_order_event_deliveries_total", key)] == 1, destination
    assert samples[("botd_order_events_oldest_unpublished_seconds", ())] == 0

    (order,) = orders(config.postgres.dsn)
    (row,) = events(config.postgres.dsn)
    assert (row["type"], row["from_status"], row["to_status"], row["actor"]) == (
        "order.placed",
        None,
        "placed",
        "customer",
    )
    assert event == {
        "id": str(row["event_id"]),
        "type": "order.placed",
        "created": event["created"],
        "order": {
            "id": order["id"],
            "status": "placed",
            "phone": "+996555123456",
            "address": "ул. Токтогула 125, кв. 4",
            "quantity": 3,
            "client_id": str(CLIENT),
            "created_at": event["order"]["created_at"],
        },
        "change": {"from": None, "to": "placed", "by": "customer", "note": None},
    }
    assert ISO_Z.match(event["created"]) and ISO_Z.match(event["order"]["created_at"])
    jsonschema.validate(event, SCHEMA)
    assert all(r.signature_ok for r in shop.requests) and shop.copies() == 0
    assert len(shop.requests) == 1
    # the note: internal, once, with the order's number and details, never among the replies
    assert note["type"] == "comment"
    assert note["external_id"] == note_external_id(str(row["event_id"]))
    assert f"№{order['id']}" in note["text"] and "+996555123456" in note["text"]
    assert "Токтогула 125" in note["text"] and "3 шт." in note["text"]
    assert not any("🛒" in t for t in fake.texts_for(CLIENT))
    assert fake.duplicate_deliveries() == []
    assert order["locale"] == "ru" and order["dialog_started_at"] is not None


async def test_a_customer_cancel_gives_the_cancel_note_and_event(
    make_config: Callable[..., Config], shop: FakeShop, fake: FakeChat2Desk
) -> None:
    config = shop_config(make_config, shop)
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        await say(http, running, "отмена")
        with trio.fail_after(15):
            placed, cancelled = await shop.wait_accepted(2)
        notes = await wait_notes(fake, 2)

    (order,) = orders(config.postgres.dsn)
    assert order["status"] == "cancelled"
    assert (placed["type"], cancelled["type"]) == ("order.placed", "order.cancelled")
    assert cancelled["order"]["status"] == "cancelled" and cancelled["order"]["id"] == order["id"]
    assert cancelled["change"] == {
        "from": "placed",
        "to": "cancelled",
        "by": "customer",
        "note": None,
    }
    assert placed["id"] != cancelled["id"]
    assert [n["text"][:1] for n in notes] == ["🛒", "❌"]
    assert f"№{order['id']}" in notes[1]["text"] and "клиентом" in notes[1]["text"]
    assert len(shop.requests) == 2 and fake.duplicate_deliveries() == []


async def test_the_shops_status_change_reaches_the_shop(
    make_config: Callable[..., Config], shop: FakeShop, fake: FakeChat2Desk
) -> None:
    config = shop_config(make_config, shop)
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        order = await placed_and_sent(http, running, shop, config.postgres.dsn)
        with psycopg.connect(config.postgres.dsn) as conn:
            move(conn, order["id"], "confirmed", actor="shop:anna", note="звонила клиенту")
        with trio.fail_after(15):  # made by another process: the relay's poll finds it
            _, confirmed = await shop.wait_accepted(2)
    assert confirmed["type"] == "order.status_changed"
    assert confirmed["order"]["status"] == "confirmed"
    assert confirmed["change"] == {
        "from": "placed",
        "to": "confirmed",
        "by": "shop:anna",
        "note": "звонила клиенту",
    }
    assert len(fake.notes_for(CLIENT)) == 1  # a note for placed and cancelled only


async def test_the_shop_down_for_a_while_gets_the_event_late_and_once(
    make_config: Callable[..., Config], shop: FakeShop, fake: FakeChat2Desk
) -> None:
    config = shop_config(make_config, shop)
    shop.fail_next(2, status=500)
    shop.hang_next(0)
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        with trio.fail_after(20):
            (event,) = await shop.wait_accepted(1)
    statuses = [r.status for r in shop.requests]
    assert statuses == [500, 500, 200]
    assert {r.event_id for r in shop.requests} == {event["id"]}  # one stable id for every try
    assert all(r.signature_ok for r in shop.requests)


async def test_an_event_the_shop_never_takes_is_dead_lettered_then_replayed(
    make_config: Callable[..., Config], shop: FakeShop, fake: FakeChat2Desk
) -> None:
    config = shop_config(make_config, shop, shop_webhook_max_attempts="2")
    shop.set_down(503)
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        assert running.shop is not None
        shop_stats = running.shop.stats
        await wait_until(lambda: shop_stats.dead_lettered == 1)
        assert [r.status for r in shop.requests] == [503, 503]
        env = subprocess_env(config)
        listed = await trio.run_process(
            [sys.executable, "-m", "botd", "dlq", "list"], env=env, capture_stdout=True
        )
        out = listed.stdout.decode()
        assert "shop_event" in out and "order.placed" in out and "503" in out, out
        shop.set_up()
        replayed = await trio.run_process(
            [sys.executable, "-m", "botd", "dlq", "replay", "--all"],
            env=env,
            capture_stdout=True,
        )
        assert "1 message(s) replayed" in replayed.stdout.decode()
        with trio.fail_after(15):
            (event,) = await shop.wait_accepted(1)
    (order,) = orders(config.postgres.dsn)
    assert event["order"]["id"] == order["id"] and event["type"] == "order.placed"


async def test_a_republished_event_changes_nothing(
    make_config: Callable[..., Config], shop: FakeShop, fake: FakeChat2Desk
) -> None:
    """The relay's crash window (published, not yet marked): the copies are dropped."""
    config = shop_config(make_config, shop)
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        with trio.fail_after(15):
            await shop.wait_accepted(1)
        await wait_notes(fake, 1)
        dsn = config.postgres.dsn
        await wait_until(lambda: all(e["published_at"] for e in events(dsn)))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE order_events SET published_at = NULL")
        assert running.relay is not None and running.notes is not None
        assert running.shop is not None
        running.relay.wake()
        notes, shop_side = running.notes.stats, running.shop.stats
        await wait_until(lambda: notes.duplicates == 1 and shop_side.duplicates == 1)
    assert len(shop.requests) == 1 and len(fake.notes_for(CLIENT)) == 1


async def test_without_a_shop_url_notes_still_go_and_no_webhook_runs(
    make_config: Callable[..., Config], fake: FakeChat2Desk
) -> None:
    config = make_config()
    async with running_daemon(config) as running:
        assert running.shop is None
        async with httpx.AsyncClient() as http:
            await order_one(http, running)
            (note,) = await wait_notes(fake, 1)
    assert note["type"] == "comment"


async def test_notes_can_be_turned_off(
    make_config: Callable[..., Config], shop: FakeShop, fake: FakeChat2Desk
) -> None:
    config = shop_config(make_config, shop, dialog_order_notes="false")
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        with trio.fail_after(15):
            await shop.wait_accepted(1)
    assert fake.notes_for(CLIENT) == []


def test_signature_verifies_and_refuses_tampering_and_old_timestamps() -> None:
    body = json.dumps({"id": "e1", "type": "order.placed"}).encode()
    now = int(time.time())
    header = sign(SECRET, body, now)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert verify(SECRET, header, body, now=now)
    assert not verify(SECRET, header, body + b" ", now=now)
    assert not verify("another-secret", header, body, now=now)
    assert not verify(SECRET, header, body, now=now + 301)
    assert not verify(SECRET, "v1=abc", body, now=now)
    # the documented recipe, by hand: HMAC-SHA256(secret, "<t>.<raw body>")
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={expected}"


async def test_a_shop_url_without_a_secret_stops_botd_at_start_up(
    make_config: Callable[..., Config],
) -> None:
    from botd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"shop_webhook.*secret"):
        make_config(shop_webhook_url="http://127.0.0.1:9/hook")
    result = subprocess.run(
        [sys.executable, "-m", "botd", "check-config"],
        env={**subprocess_env(), "BOTD_SHOP_WEBHOOK_URL": "http://127.0.0.1:9/hook"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "BOTD_SHOP_WEBHOOK_SECRET" in result.stderr


async def test_the_customer_hears_when_the_shop_sends_or_cancels_the_order(
    make_config: Callable[..., Config], shop: FakeShop, fake: FakeChat2Desk
) -> None:
    config = shop_config(make_config, shop)
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        order = await placed_and_sent(http, running, shop, config.postgres.dsn)
        before = len(fake.texts_for(CLIENT))
        with psycopg.connect(config.postgres.dsn) as conn:
            move(conn, order["id"], "confirmed", actor="shop:anna", note=None)
            move(conn, order["id"], "delivering", actor="shop:anna", note=None)
        with trio.fail_after(15):
            await shop.wait_accepted(3)
        await wait_until(lambda: len(fake.texts_for(CLIENT)) == before + 1)
        with psycopg.connect(config.postgres.dsn) as conn:
            move(conn, order["id"], "cancelled", actor="shop:anna", note="нет в наличии")
        with trio.fail_after(15):
            events_seen = await shop.wait_accepted(4)
        await wait_until(lambda: len(fake.texts_for(CLIENT)) == before + 2)
        notes = await wait_notes(fake, 2)
    told = fake.texts_for(CLIENT)[before:]
    assert f"№{order['id']}" in told[0] and "в пути" in told[0]  # delivering, not confirmed
    assert f"№{order['id']}" in told[1] and "отменил" in told[1]
    assert [e["type"] for e in events_seen] == [
        "order.placed",
        "order.status_changed",
        "order.status_changed",
        "order.cancelled",
    ]
    assert "магазином" in notes[1]["text"] and "нет в наличии" in notes[1]["text"]
    for seen in events_seen:
        jsonschema.validate(seen, SCHEMA)
    assert fake.duplicate_deliveries() == []


ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "order-event.schema.json").read_text(encoding="utf-8"))


def _documented_example() -> dict[str, Any]:
    text = (ROOT / "docs" / "orders.md").read_text(encoding="utf-8")
    block = text.split("<!-- order-event-example:start -->", 1)[1].split(
        "<!-- order-event-example:end -->", 1
    )[0]
    raw = block.strip().removeprefix("```json").removesuffix("```")
    example: dict[str, Any] = json.loads(raw)
    return example


def test_the_documented_example_and_real_events_match_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    validator.check_schema(SCHEMA)
    validator.validate(_documented_example())
    broken = {**_documented_example(), "type": "order.shipped"}
    assert not validator.is_valid(broken)
    # an event as botd encodes it, built from a row like the relay reads
    from botd.order_events import encode_event, pending_event

    created = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    row = (
        1, "6f1c2b8e-4d3a-4c5b-9e8f-1a2b3c4d5e6f", "order.placed", None, "placed", "customer",
        None, created, "ru", 5, "placed", "+996555123456", "ул. Ленина 5", 2, "42", created,
    )  # fmt: skip
    validator.validate(json.loads(encode_event(pending_event(row).event)))
