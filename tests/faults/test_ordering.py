"""Per-customer order under concurrency (docs/design.md §3.2) and throughput that scales with
shards.

Many customers each type whole dialogs in bursts (faster than botd processes them), alternating
between the webhooks of TWO ``botd run`` processes; halfway the active one is stopped so the
other takes the shards over. Every customer's messages must be handled one at a time in arrival
order: their replies are exactly the model's sequence (any reordering or overlap would change
the answers), the DEBUG outcome lines list their message ids in posting order, every dialog step
ran exactly once (no compare-and-set conflict made one run again: counted by the reminder timers
the steps scheduled), and the orders carry the right values — while different customers'
dialogs overlap in time.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import pytest
import trio

from botd.config import Config
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.process import BotdProcess
from tests.faults.support import (
    Replies,
    Traffic,
    botds,
    dialog_texts,
    outcomes,
    post_until_queued,
    wait_outcomes,
)
from tests.helpers import inbox_payload

CUSTOMERS = 24


def steps_run_again(procs: list[BotdProcess]) -> int:
    """Steps run again because the dialog changed under them (a compare-and-set conflict: two of
    a customer's messages in processing at once), from the processes' logs."""
    return sum(
        "changed concurrently; running the step again" in line for p in procs for line in p.lines
    )


async def burst(
    traffic: Traffic, http: httpx.AsyncClient, urls: list[str], cid: int, dialogs: range
) -> list[str]:
    """Post the turns of ``dialogs`` back to back (no waiting for replies); return message ids."""
    c = traffic.customer(cid)
    ids = []
    for n in dialogs:
        for k, text in enumerate(dialog_texts(n, cid)):
            body = inbox_payload(cid, text)
            c.blocks.append(c.model.turn(text, body["message_id"]))
            await post_until_queued(http, urls[(cid + k) % len(urls)], body, timeout=30)
            c.sent += 1
            ids.append(str(body["message_id"]))
    return ids


async def test_each_customer_in_arrival_order_one_at_a_time_across_two_processes(
    make_config: Callable[..., Config], replies: Replies, fake: FakeChat2Desk
) -> None:
    config = make_config(rabbitmq_shards="4", log_level="DEBUG", rabbitmq_prefetch="50")
    customers = [880_001 + i * 7 for i in range(CUSTOMERS)]
    posted: dict[int, list[str]] = {c: [] for c in customers}
    fake.set_delay(0.005)
    async with botds(config) as group, httpx.AsyncClient() as http:
        a, b = await group.start(), await group.start()
        traffic = Traffic(config, replies, b.url)

        async def first_half(cid: int) -> None:
            posted[cid] += await burst(traffic, http, [a.url, b.url], cid, range(2))

        async with trio.open_nursery() as nursery:
            for cid in customers:
                nursery.start_soon(first_half, cid)
        a.signal(signal.SIGTERM)  # graceful: in-flight finish, the rest moves to b in order

        async def second_half(cid: int) -> None:
            posted[cid] += await burst(traffic, http, [b.url], cid, range(2, 4))
            await traffic.wait_replies(traffic.customer(cid))

        async with trio.open_nursery() as nursery:
            for cid in customers:
                nursery.start_soon(second_half, cid)
        assert await a.wait_exit() == 0
        await wait_outcomes([a, b], sum(len(ids) for ids in posted.values()))
        handled = outcomes([a, b])

    audit = traffic.audit()
    assert audit["resent_blocks"] == 0 and audit["orders_doubled"] == audit["orders_wrong"] == 0
    assert audit["orders_found"] == audit["orders_expected"] == 4 * CUSTOMERS
    # No step ran twice: no conflict (below), no redo (every delivery was 'processed' once).
    assert steps_run_again([a, b]) == 0
    assert {h[4] for h in handled} == {0, 1}, "both processes consumed"
    for cid in customers:
        mine = [h for h in handled if h[2] == str(cid)]
        assert [h[3] for h in mine] == ["processed"] * len(posted[cid])
        # a's lines come before b's (b took over after a stopped): arrival order end to end
        assert [h[1] for h in mine] == posted[cid], cid
    # Different customers ran in parallel: their reply streams overlap in time.
    spans = sorted((replies.times[str(c)][0], replies.times[str(c)][-1]) for c in customers)
    overlapping = max(sum(s <= t <= e for s, e in spans) for t, _ in spans)
    assert overlapping > 1


async def _throughput(
    make_config: Callable[..., Config], replies: Replies, shards: int, base: int
) -> float:
    config = make_config(rabbitmq_shards=str(shards), rabbitmq_queue_prefix=f"tp{base}x{shards}")
    customers = [base + i for i in range(16)]
    async with botds(config) as group, httpx.AsyncClient() as http:
        proc = await group.start()
        traffic = Traffic(config, replies, proc.url)
        started = time.monotonic()

        async def one(cid: int) -> None:
            await burst(traffic, http, [proc.url], cid, range(1))
            await traffic.wait_replies(traffic.customer(cid))

        async with trio.open_nursery() as nursery:
            for cid in customers:
                nursery.start_soon(one, cid)
        elapsed = time.monotonic() - started
    assert traffic.audit()["orders_found"] == len(customers)
    return 5 * len(customers) / elapsed


@pytest.mark.slow  # a measurement more than a guarantee: run with `scripts/chaos pytest`
async def test_throughput_scales_with_shards(
    make_config: Callable[..., Config], replies: Replies, fake: FakeChat2Desk
) -> None:
    fake.set_delay(0.05)  # a slow Chat2Desk: each reply takes 50 ms
    one = await _throughput(make_config, replies, 1, 890_000)
    four = await _throughput(make_config, replies, 4, 891_000)
    print(f"\nthroughput, 50 ms Chat2Desk: 1 shard {one:.1f} msg/s, 4 shards {four:.1f} msg/s")
    assert four > 2.2 * one
