"""Hot standby (docs/design.md §7): two ``botd run`` on the same broker and prefix; kill -9 the
active one and the standby's single-active consumers take over every shard within seconds, without
loss or duplicate orders. The take-over time (kill → first reply sent by the standby) is
printed."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import trio

from botd.config import Config
from botd.inbound import shard_of
from tests.faults.support import Replies, Traffic, botds, outcomes, say

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
