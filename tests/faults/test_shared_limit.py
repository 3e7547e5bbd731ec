"""One Chat2Desk rate limit per account across processes (docs/design.md §3.6, §7).

Two ``botd run`` processes hold the shard queues between them and both have more replies to send
than the account's limit allows. The fake Chat2Desk enforces the limit per token over 60 s: it
must never see it broken. With a limiter per process each would send at the full limit, about
twice the account's rate (``2 × (burst + 20 s / 3 s)`` ≈ 22 > 20 in the 22 s observed).

The split is deterministic: B runs with ``rabbitmq.shards = 2`` and starts first, so it is the
single active consumer of shards 0 and 1; A runs with 4 shards and starts second, so it gets
shards 2 and 3 (and stands by on 0 and 1). Every message is posted to A's webhook (A shards by 4).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import trio

from botd.config import Config
from botd.inbound import shard_of
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.faults.support import botds, outcomes, say
from tests.helpers import max_in_any_window

LIMIT, BURST = 20, 5  # per minute: one call every 3 s after a burst of 5
OBSERVE_SECONDS = 22.0
CUSTOMERS_PER_PAIR = 12  # greetings (2 replies each) per shard pair: 48 replies wanted


async def test_two_processes_share_one_rate_limit(
    make_config: Callable[..., Config], fake: FakeChat2Desk
) -> None:
    common = {
        "chat2desk_requests_per_minute": str(LIMIT),
        "chat2desk_burst": str(BURST),
        "log_level": "DEBUG",
    }
    config_a = make_config(rabbitmq_shards="4", **common)
    config_b = make_config(rabbitmq_shards="2", **common)
    low = [c for c in range(930_000, 931_000) if shard_of(str(c), 4) < 2][:CUSTOMERS_PER_PAIR]
    high = [c for c in range(930_000, 931_000) if shard_of(str(c), 4) >= 2][:CUSTOMERS_PER_PAIR]
    fake.enforce_rate_limit(LIMIT)
    async with botds(config_a) as group, httpx.AsyncClient() as http:
        b = await group.start(config_b)  # active on shards 0 and 1
        a = await group.start(config_a)  # active on shards 2 and 3
        for low_cid, high_cid in zip(low, high, strict=True):
            await say(http, a.url, low_cid, "Привет")
            await say(http, a.url, high_cid, "Привет")
        with trio.fail_after(10):
            first = (await fake.wait_for_requests(1))[0].monotonic
        # the observation period (not a synchronisation); request times are time.monotonic()
        await trio.sleep(first + OBSERVE_SECONDS - time.monotonic())
        requests = fake.requests
        handled = outcomes([a, b])
    times = [r.monotonic for r in requests if r.monotonic < first + OBSERVE_SECONDS]
    by_process = {n: {h[0] for h in handled if h[4] == n} for n in (0, 1)}
    worst = max_in_any_window(times, 60.0)
    print(
        f"\ntwo processes, limit {LIMIT}/min burst {BURST}: {len(times)} requests in "
        f"{OBSERVE_SECONDS:g}s, worst 60 s window {worst}, violations {fake.limit_violations}, "
        f"shards handled by A {sorted(by_process[0])}, by B {sorted(by_process[1])}"
    )
    assert by_process[0] and by_process[0] <= {2, 3}, "A sent for its shards"
    assert by_process[1] and by_process[1] <= {0, 1}, "B sent for its shards"
    assert fake.limit_violations == 0
    assert worst <= LIMIT
    # ...and the shared limit is used: the burst, then one call every 3 s
    assert len(times) >= BURST + int(OBSERVE_SECONDS // 3) - 1
