"""Services restart under a running ``botd run`` while customers keep talking
(docs/design.md §3.1, §4).

RabbitMQ and PostgreSQL: botd stays alive and calm (bounded CPU time and log lines while the
service is away), reports not-ready, answers webhooks 503 while the broker is away, reconnects
with capped backoff and re-declares its queues; afterwards every dialog completes with exactly
its replies and its orders, and a message answered 200 before the restart is processed after it.

Redis runs without persistence here: its restart loses dialog state (customers in the middle of a
dialog start over, as documented) but never an order, and no message is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import trio

from botd.config import Config
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.faults.support import (
    Customer,
    Replies,
    Traffic,
    botds,
    cpu_seconds,
    dialog_texts,
    orders_by_client,
    say,
    service_down,
    wait_status,
)
from tests.helpers import inbox_payload, post_webhook

OUTAGE_SECONDS = 4.0  # how long the service stays away (a fault duration, not synchronisation)
MAX_CPU_DURING_OUTAGE = 0.35  # fraction of one core botd may burn while waiting for a service
MAX_LOG_LINES_DURING_OUTAGE = 120


async def _wait_total_replies(replies: Replies, n: int, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while sum(len(t) for t in replies.texts.values()) < n:
            await replies.any_changed.wait()


@pytest.mark.parametrize("service", ["rabbitmq", "postgres"])
async def test_service_restart_under_traffic_loses_and_doubles_nothing(
    service: str, make_config: Callable[..., Config], replies: Replies, fake: FakeChat2Desk
) -> None:
    config = make_config(
        rabbitmq_reconnect_max_seconds="2", rabbitmq_shards="4", chat2desk_timeout_seconds="5"
    )
    customers = list(range(830_001, 830_009))
    probe = 839_999  # types a whole dialog at once just before the restart
    async with botds(config) as group, httpx.AsyncClient() as http:
        proc = await group.start()
        traffic = Traffic(config, replies, proc.url, reply_timeout=90)
        async with trio.open_nursery() as nursery:
            for cid in customers:
                nursery.start_soon(traffic.dialogs, http, cid, 3)
            await _wait_total_replies(replies, 3 * len(customers))

            # Slow replies so the probe's burst is still being processed when the service stops.
            fake.set_delay(1.5)
            p: Customer = traffic.customer(probe)
            for text in dialog_texts(0, probe):
                body = inbox_payload(probe, text)
                p.blocks.append(p.model.turn(text, body["message_id"]))
                response = await post_webhook(http, proc.url, body)
                assert response.status_code == 200, response.text
                p.sent += 1
            last_queued_at = time.monotonic()

            async with service_down(service):
                stopped_at = time.monotonic()
                fake.set_delay(0)
                await wait_status(http, proc.url, "/ready", 503, timeout=30)
                ready = (await http.get(f"{proc.url}/ready")).json()
                assert ready["rabbitmq" if service == "rabbitmq" else "postgres"] == "down", ready
                if service == "rabbitmq":
                    refused = await post_webhook(http, proc.url, inbox_payload(probe + 1, "Привет"))
                    assert refused.status_code == 503, refused.text
                    assert refused.json()["status"] == "error"
                cpu_before, lines_before = cpu_seconds(proc.process.pid), len(proc.lines)
                await trio.sleep(OUTAGE_SECONDS)
                cpu_used = cpu_seconds(proc.process.pid) - cpu_before
                # one warning per refused webhook is expected (our customers retry 10/s)
                outage_lines = [x for x in proc.lines[lines_before:] if "botd.webhook" not in x]
                restarted_at = time.monotonic()  # the service is being started from here on
            assert proc.process.returncode is None, "botd died during the outage"
            assert cpu_used < MAX_CPU_DURING_OUTAGE * OUTAGE_SECONDS, (cpu_used, outage_lines[-20:])
            assert len(outage_lines) < MAX_LOG_LINES_DURING_OUTAGE, outage_lines[-30:]
            back_after = await wait_status(http, proc.url, "/ready", 200, timeout=60)
            await traffic.wait_replies(p)
        assert proc.process.returncode is None

    audit = traffic.audit()
    print(
        f"\n{service} restart: outage {restarted_at - stopped_at:.1f}s, botd CPU during "
        f"{OUTAGE_SECONDS:.0f}s of it {cpu_used:.2f}s, {len(outage_lines)} log lines, ready "
        f"again {back_after:.1f}s after the service, webhooks refused {traffic.refused}; {audit}"
    )
    assert audit["orders_expected"] == 3 * len(customers) + 1
    assert audit["orders_found"] == audit["orders_expected"]
    assert audit["orders_wrong"] == audit["orders_doubled"] == 0
    # The probe's last message was answered 200 before the service stopped; its reply (the
    # order number) went out only after the restart.
    assert last_queued_at < stopped_at
    assert replies.times[str(probe)][-1] > restarted_at, (replies.times[str(probe)], restarted_at)
    if service == "rabbitmq":
        assert sum("rabbitmq connected" in line for line in proc.lines) >= 2


async def test_redis_restart_loses_dialogs_in_progress_never_orders(
    make_config: Callable[..., Config], replies: Replies
) -> None:
    config = make_config(rabbitmq_shards="4")
    done = list(range(840_001, 840_005))  # complete their dialog before the restart
    midway = list(range(840_101, 840_105))  # at the confirmation question when Redis restarts
    during = list(range(840_201, 840_205))  # write while Redis is down
    async with botds(config) as group, httpx.AsyncClient() as http:
        proc = await group.start()
        traffic = Traffic(config, replies, proc.url, reply_timeout=60)

        async def to_confirmation(cid: int) -> None:
            c = traffic.customer(cid)
            for text in dialog_texts(0, cid)[:4]:
                await traffic.turn(http, c, text)

        async with trio.open_nursery() as nursery:
            for cid in done:
                nursery.start_soon(traffic.dialogs, http, cid, 1)
            for cid in midway:
                nursery.start_soon(to_confirmation, cid)
        orders_before = orders_by_client(config.postgres.dsn)
        assert sum(len(v) for v in orders_before.values()) == len(done)

        async with service_down("redis"):
            stopped_at = time.monotonic()
            await wait_status(http, proc.url, "/ready", 503, timeout=30)
            assert (await http.get(f"{proc.url}/ready")).json()["redis"] == "down"
            cpu_before, lines_before = cpu_seconds(proc.process.pid), len(proc.lines)
            for cid in during:  # the broker is up: accepted, processed once Redis is back
                await say(http, proc.url, cid, "Здравствуйте, хочу заказать воду")
            await trio.sleep(OUTAGE_SECONDS)
            cpu_used = cpu_seconds(proc.process.pid) - cpu_before
            outage_lines = proc.lines[lines_before:]
        assert proc.process.returncode is None, "botd died during the outage"
        assert cpu_used < MAX_CPU_DURING_OUTAGE * OUTAGE_SECONDS, (cpu_used, outage_lines[-20:])
        assert len(outage_lines) < MAX_LOG_LINES_DURING_OUTAGE, outage_lines[-30:]
        await wait_status(http, proc.url, "/ready", 200, timeout=60)

        # Messages accepted while Redis was down are processed now: a fresh dialog each.
        for cid in during:
            c = traffic.customer(cid)
            c.blocks.append(c.model.turn("Здравствуйте, хочу заказать воду"))
            c.sent += 1
            await traffic.wait_replies(c)
            assert replies.times[str(cid)][0] > stopped_at
        # The mid-way dialogs were lost with Redis: "да" now opens a new dialog, no order.
        for cid in midway:
            c = traffic.customer(cid)
            c.model.state = None  # what the customer sees after the documented loss
            await traffic.turn(http, c, "да")
            assert not c.model.orders
        # The new dialog then completes normally and orders once.
        for cid in midway:
            for text in dialog_texts(0, cid)[1:]:
                await traffic.turn(http, traffic.customer(cid), text)
        assert proc.process.returncode is None

    audit = traffic.audit()
    after = orders_by_client(config.postgres.dsn)
    print(f"\nredis restart: botd CPU during {OUTAGE_SECONDS:.0f}s outage {cpu_used:.2f}s; {audit}")
    for cid in done:  # orders placed before the restart are untouched, none doubled
        assert after[str(cid)] == orders_before[str(cid)]
    assert sum(len(v) for v in after.values()) == len(done) + len(midway)
    assert audit["orders_found"] == audit["orders_expected"] == len(done) + len(midway)
    assert audit["orders_wrong"] == audit["orders_doubled"] == 0
