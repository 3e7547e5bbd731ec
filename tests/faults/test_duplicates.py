"""Duplicates have no effect (docs/design.md §3.3): the same webhook twice, ten times, concurrently,
through two botd processes, and late retries of old messages after the dialog moved on.

(Redeliveries after a crash are proven in test_crash_points: replies re-sent at most once.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import trio

from botd.config import Config
from tests.faults.support import (
    DialogModel,
    Replies,
    botds,
    dialog_texts,
    fill_order_ids,
    orders_by_client,
    outcomes,
    wait_outcomes,
)
from tests.helpers import inbox_payload, post_webhook

# copies of each turn's webhook, and whether they are posted concurrently
PLAN = [(2, False), (10, False), (10, True), (10, True), (10, True)]


async def test_duplicate_webhooks_change_state_once_and_order_once(
    make_config: Callable[..., Config], replies: Replies
) -> None:
    config = make_config(log_level="DEBUG")
    cid = 850_001
    model = DialogModel(config, cid)
    expected: list[str] = []
    bodies: list[dict[str, Any]] = []
    posts = 0
    async with botds(config) as group, httpx.AsyncClient() as http:
        procs = [await group.start(), await group.start()]

        async def post(body: dict[str, Any], via: int) -> None:
            response = await post_webhook(http, procs[via % 2].url, body)
            assert response.json() == {"status": "queued"}, response.text

        for text, (copies, concurrent) in zip(dialog_texts(0, cid), PLAN, strict=True):
            body = inbox_payload(cid, text)
            bodies.append(body)
            expected += model.turn(text, body["message_id"])
            if concurrent:
                async with trio.open_nursery() as nursery:
                    for k in range(copies):
                        nursery.start_soon(post, body, k)
            else:
                for k in range(copies):
                    await post(body, k)
            posts += copies
            await replies.wait(cid, len(expected))
        # Late Chat2Desk retries of old turns, after the dialog moved on: no effect at all.
        async with trio.open_nursery() as nursery:
            for body in (bodies[0], bodies[2], bodies[4]):
                for k in range(5):
                    nursery.start_soon(post, body, k)
        posts += 15
        await wait_outcomes(procs, posts)
        handled = outcomes(procs)

    rows = orders_by_client(config.postgres.dsn)[str(cid)]
    assert len(rows) == 1
    assert replies.texts[str(cid)] == fill_order_ids(expected, [rows[0]["id"]])
    assert len(handled) == posts
    assert sum(h[3] == "processed" for h in handled) == len(bodies)  # one state change per turn
    assert sum(h[3] == "duplicate" for h in handled) == posts - len(bodies)
    assert not any(h[3] == "resent" for h in handled)
    # Each message's first outcome is "processed"; every later copy is a duplicate.
    first: dict[str, str] = {}
    for h in handled:
        first.setdefault(h[1], h[3])
    assert set(first.values()) == {"processed"}
