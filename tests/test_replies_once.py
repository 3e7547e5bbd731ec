"""No customer spammed, none silenced by botd's own words (docs/design.md §3.5, §3.9).

The whole daemon in-process against the Chat2Desk fake: a Chat2Desk that takes messages but
answers after botd's timeout (or with a proxy's 502) gets each reply once; ``outbox`` echoes of
every reply, some overtaking the send's answer and none with an id botd learnt, never start a
hand-off; a refused token keeps the replies until it works; replies go out on the customer's
transport and channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from botd.config import Config
from botd.daemon import Running
from botd.testing.fake_chat2desk import TEST_TOKEN, FakeChat2Desk
from tests.helpers import HAPPY_PATH, inbox_payload, orders, post_webhook
from tests.test_outbox import GREETING, GREETING_REPLIES, dead_replies, eventually


def with_overrides(**overrides: str) -> pytest.MarkDecorator:
    label = ",".join(f"{k}={v}" for k, v in overrides.items())
    return pytest.mark.parametrize("config", [overrides], indirect=True, ids=[label])


@pytest.fixture
def config(make_config: Callable[..., Config], request: pytest.FixtureRequest) -> Config:
    return make_config(**getattr(request, "param", {}))


async def say(running: Running, client: int, text: str, **kw: Any) -> dict[str, Any]:
    """Post one message and wait until the daemon has handled it; the body posted."""
    handled = running.consumers.handled
    body = inbox_payload(client, text, **kw)
    async with httpx.AsyncClient() as http:
        response = await post_webhook(http, running.url, body)
    assert response.json() == {"status": "queued"}
    with trio.fail_after(20):
        await running.consumers.wait_handled(handled + 1)
    return body


SLOW = {"chat2desk_timeout_seconds": "0.5", "chat2desk_attempts": "3"}


@with_overrides(**SLOW)
async def test_a_chat2desk_answering_after_the_timeout_gets_each_reply_once(
    running: Running, fake: FakeChat2Desk
) -> None:
    client = 6101
    fake.set_accept_slowly(1.5)  # every send is taken at once and answered after botd gave up
    await say(running, client, GREETING)
    assert fake.texts_for(client) == GREETING_REPLIES  # once each, in order
    assert fake.duplicate_deliveries() == []
    stats = running.sender.statistics()
    assert stats.reconciled == len(GREETING_REPLIES) and stats.sent_ok == 0
    assert running.outbox.statistics().parked == 0


@with_overrides(chat2desk_attempts="2")
async def test_a_502_after_the_accept_and_a_failed_lookup_still_reach_the_customer_once(
    running: Running, fake: FakeChat2Desk
) -> None:
    client = 6102
    fake.accept_then_fail_next(1, status=502)  # the first reply is taken, the answer is lost
    fake.lookup_fail_next(1, status=500)  # and the inline lookup fails: the outbox must look
    await say(running, client, GREETING)
    await eventually(lambda: len(fake.texts_for(client)) >= len(GREETING_REPLIES))
    await eventually(lambda: running.outbox.statistics().delivered >= len(GREETING_REPLIES))
    assert fake.texts_for(client) == GREETING_REPLIES
    assert fake.duplicate_deliveries() == []
    assert running.outbox.statistics().parked == 1


@with_overrides(**SLOW)
async def test_echoes_of_every_reply_never_silence_the_bot(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    """Each echo is posted before the send is answered, and the answer comes too late to learn
    the id: botd knows its own words by what it committed, so the dialog goes on to the order."""
    client = 6103
    fake.echo_to(f"{running.url}/webhook/chat2desk", before_answer=True)
    fake.set_accept_slowly(1.0)

    def replies() -> list[dict[str, Any]]:  # the order's internal note is no reply
        return [m for m in fake.stored_messages(client) if m["type"] != "comment"]

    for text in HAPPY_PATH:
        before = len(replies())
        await say(running, client, text)
        # the echoes of this turn's replies are handled before the next customer message
        assert len(replies()) > before, text
        await eventually(lambda: running.consumers.stats.own_echoes >= len(replies()))
    rows = orders(config.postgres.dsn)
    assert [r["quantity"] for r in rows] == [3]
    assert running.consumers.stats.own_echoes == len(replies())
    loaded = await running.store.load(str(client), "0")
    assert loaded.state is None or loaded.state.get("step") != "handoff"
    assert fake.duplicate_deliveries() == []


@with_overrides(chat2desk_auth_retry_seconds="1")
async def test_a_refused_token_keeps_the_replies_until_it_works(
    running: Running, fake: FakeChat2Desk
) -> None:
    client = 6104
    fake.set_token("rotated-elsewhere", reject_status=401)
    await say(running, client, GREETING)
    assert fake.texts_for(client) == []
    assert running.outbox.statistics().parked == 1
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{running.url}/ready")
        assert ready.status_code == 503 and ready.json()["chat2desk"] == "down", ready.text
        metrics = (await http.get(f"{running.url}/metrics")).text
        assert "botd_chat2desk_auth_failing 1.0" in metrics
        # a while of probing: nothing is given up on, no attempt is used
        await eventually(lambda: len(fake.requests_for(client)) >= 3, timeout=20)
        assert await dead_replies(running.broker) == []
        assert running.outbox.statistics().retried == 0
        fake.set_token(TEST_TOKEN)
        await eventually(lambda: fake.texts_for(client) == GREETING_REPLIES, timeout=20)
        await eventually(lambda: running.sender.auth_failure == "")
        assert (await http.get(f"{running.url}/ready")).status_code == 200
    assert await dead_replies(running.broker) == []


async def test_replies_go_out_on_the_customers_transport_and_channel(
    running: Running, fake: FakeChat2Desk
) -> None:
    client = 6105
    posted = await say(running, client, GREETING, transport="whatsapp", channel_id=4242)
    bodies = [r.body for r in fake.requests_for(client)]
    assert len(bodies) == len(GREETING_REPLIES)
    assert all((b["transport"], b["channel_id"]) == ("whatsapp", 4242) for b in bodies)
    origin = posted["message_id"]
    assert [b["external_id"] for b in bodies] == [f"botd-{origin}-{i}" for i in range(len(bodies))]
