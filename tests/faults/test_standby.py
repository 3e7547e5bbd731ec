"""Hot standby (docs/design.md §7): two ``botd run`` on the same broker and prefix; kill -9 the
active one and the standby's single-active consumers take over every shard within seconds, without
loss or duplicate orders. The take-over time (kill → first reply sent by the standby) is
printed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from urllib.parse import unquote

import httpx
import trio

from botd.config import Config
from botd.inbound import shard_of
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.faults.support import DialogModel, Replies, Traffic, botds, outcomes, say

SHARDS = 4
MAX_TAKEOVER_SECONDS = 5.0


async def test_kill9_active_standby_takes_over_every_shard(
    make_config: Callable[..., Config], replies: Replies
) -> None:
    config = make_config(rabbitmq_shards=str(SHARDS), log_level="DEBUG")
    customers = list(range(860_001, 860_011))
    # one probe customer per shard, posted right after the kill
    probes: dict[int, int] = {}
    cid = 869_000
    while len(probes) < SHARDS:
        probes.setdefault(shard_of(str(cid), SHARDS), cid)
        cid += 1
    async with botds(config) as group, httpx.AsyncClient() as http:
        active = await group.start()
        standby = await group.start()
        traffic = Traffic(config, replies, standby.url, reply_timeout=30)
        async with trio.open_nursery() as nursery:
            for c in customers:
                nursery.start_soon(traffic.dialogs, http, c, 3)
            with trio.fail_after(30):
                while sum(len(t) for t in replies.texts.values()) < 40:
                    await replies.any_changed.wait()
            before = outcomes([active, standby])
            assert before and all(o[4] == 0 for o in before), "the first process is the active one"
            active.kill9()
            killed_at = time.monotonic()
            assert await active.wait_exit() == -9
            reaped_at = time.monotonic()  # from here on every reply comes from the standby
            for probe in probes.values():
                p = traffic.customer(probe)
                p.blocks.append(p.model.turn("Здравствуйте"))
                await say(http, standby.url, probe, "Здравствуйте")
                p.sent += 1
            for probe in probes.values():
                await traffic.wait_replies(traffic.customer(probe))
            all_shards_at = max(replies.times[str(p)][-1] for p in probes.values())
        after = outcomes([active, standby])[len(before) :]
    first_reply = min(t for times in replies.times.values() for t in times if t > reaped_at)
    takeover = first_reply - killed_at
    every_shard = all_shards_at - killed_at
    audit = traffic.audit()
    print(
        f"\nstandby take-over: first reply by the standby {takeover * 1000:.0f} ms after "
        f"kill -9 (process reaped after {(reaped_at - killed_at) * 1000:.0f} ms), "
        f"all {SHARDS} shards answered within {every_shard * 1000:.0f} ms; {audit}"
    )
    assert takeover < MAX_TAKEOVER_SECONDS
    assert every_shard < MAX_TAKEOVER_SECONDS
    assert {o[0] for o in after if o[4] == 1} == set(range(SHARDS))  # the standby has them all
    assert audit["orders_expected"] == 3 * len(customers)
    assert audit["orders_found"] == audit["orders_expected"]
    assert audit["orders_wrong"] == audit["orders_doubled"] == 0


def close_broker_connection_of(pid: int, vhost: str) -> None:
    """Have RabbitMQ close the AMQP connection of botd process ``pid`` (as a failover would)."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "-p", vhost, "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    mine = [line.split("\t")[0] for line in listing.splitlines() if f"botd pid {pid}" in line]
    assert mine, listing
    for conn in mine:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", conn, "fence test"],
            capture_output=True,
            timeout=60,
            check=True,
        )


async def test_a_connection_closed_mid_message_never_lets_two_processes_send(
    make_config: Callable[..., Config],
    replies: Replies,
    fake: FakeChat2Desk,
    amqp_vhost_url: str,
) -> None:
    """The broker closes the active process's connection while it is sending a turn's replies;
    the shard and the unacked message go to the hot standby at once. The first process finishes
    only the call it had in flight (the fence stops the rest), the standby waits for that call
    (the send lease), finds the reply that went out and sends the others: each reply once, in
    order."""
    config = make_config(rabbitmq_shards="1", chat2desk_timeout_seconds="8", log_level="DEBUG")
    cid = 870_001
    model = DialogModel(config, cid)
    expected = model.turn("Здравствуйте")
    assert len(expected) >= 2
    async with botds(config) as group, httpx.AsyncClient() as http:
        active = await group.start()
        standby = await group.start()
        # each reply is taken at once and answered after 5 s: the first is still in flight when
        # the (slow) rabbitmqctl is done
        fake.set_accept_slowly(5)
        body = await say(http, active.url, cid, "Здравствуйте")
        await fake.wait_for_requests(1)  # the first reply is in flight from the active one
        close_broker_connection_of(active.process.pid, unquote(amqp_vhost_url.rsplit("/", 1)[1]))
        await active.wait_for_line(r"channel that delivered .* is gone")
        fake.set_accept_slowly(None)
        await standby.wait_for_line(rf"message {body['message_id']} client {cid}: resent")
        await replies.wait(cid, len(expected), timeout=30)
        # the active one, reconnected, is the standby now: the customer's next turn works
        nxt = model.turn("ул. Токтогула 125, кв. 4")
        await say(http, standby.url, cid, "ул. Токтогула 125, кв. 4")
        await replies.wait(cid, len(expected) + len(nxt), timeout=30)
    assert replies.texts[str(cid)] == [*expected, *nxt]  # once each, in order
    assert fake.duplicate_deliveries() == []
