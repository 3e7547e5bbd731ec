"""Sends are idempotent in effect, and a refused token pauses sending (docs/design.md §3.5).

Against the Chat2Desk fake over real HTTP: a send that Chat2Desk took but answered too late, or
answered with a proxy's 502, is looked up by its external id (``GET /messages``) before it is
sent again, so the customer gets it once. Under ``autojump_clock`` with a scripted transport: a
401/403 (or an auth error with HTTP 200) pauses every send except one probe per interval.
"""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from botd.chat_api import ChatApi, Sender
from botd.errors import AuthRejected, DeliveryUnknown
from botd.ports import Route
from botd.ratelimit import TokenBucket
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.conftest import OpenApi
from tests.test_sender import CLIENT, OK_BODY, c2d_config


async def test_a_reply_accepted_too_slowly_is_looked_up_not_sent_again(
    fake: FakeChat2Desk, open_api: OpenApi
) -> None:
    config = c2d_config(fake.base_url, timeout_seconds=0.5)
    fake.accept_slowly_next(1, seconds=1.5)  # taken at once, answered after botd gave up
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        mid = await sender.send(CLIENT, "hello", external_id="botd-9-0")
    stored = fake.stored_messages(CLIENT)
    assert [(m["text"], m["external_id"]) for m in stored] == [("hello", "botd-9-0")]
    assert fake.duplicate_deliveries() == []
    assert mid == str(stored[0]["id"])  # the id of the message that did go out
    stats = sender.statistics()
    assert (stats.reconciled, stats.sent_ok, stats.lookups) == (1, 0, 1)
    assert [r.method for r in fake.requests] == ["POST", "GET"]


async def test_a_502_after_the_accept_is_looked_up_not_sent_again(
    fake: FakeChat2Desk, open_api: OpenApi
) -> None:
    config = c2d_config(fake.base_url)
    fake.accept_then_fail_next(1, status=502)
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        await sender.send(CLIENT, "hello", external_id="botd-10-0")
    assert [m["external_id"] for m in fake.stored_messages(CLIENT)] == ["botd-10-0"]
    assert sender.statistics().reconciled == 1


async def test_a_500_that_took_nothing_is_sent_again_after_the_lookup(
    fake: FakeChat2Desk, open_api: OpenApi
) -> None:
    config = c2d_config(fake.base_url)
    fake.fail_next(1, status=500)  # nothing stored, but botd can't know that
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        await sender.send(CLIENT, "hello", external_id="botd-11-0")
    assert [m["external_id"] for m in fake.stored_messages(CLIENT)] == ["botd-11-0"]
    assert [r.method for r in fake.requests] == ["POST", "GET", "POST"]
    assert sender.statistics().reconciled == 0


async def test_unsure_after_every_attempt_is_reported_as_delivery_unknown(
    fake: FakeChat2Desk, open_api: OpenApi
) -> None:
    config = c2d_config(fake.base_url, attempts=2)
    fake.accept_then_fail_next(1, status=502)
    fake.lookup_fail_next(1, status=503)  # the lookup that would tell fails too
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        with pytest.raises(DeliveryUnknown):
            await sender.send(CLIENT, "hello", external_id="botd-12-0")
        # the next try (the outbox's) looks first and finds it
        assert await sender.send(CLIENT, "hello", external_id="botd-12-0", unsure=True)
    assert fake.duplicate_deliveries() == []
    assert len(fake.stored_messages(CLIENT)) == 1


async def test_the_lookup_reads_the_last_page_too(fake: FakeChat2Desk, open_api: OpenApi) -> None:
    config = c2d_config(fake.base_url)
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        for i in range(230):  # more than one page (200), oldest first in the fake
            await api.send_message(CLIENT, f"m{i}", external_id=f"botd-{i}-0")
        found = await sender.find_sent(CLIENT, ("botd-3-0", "botd-229-0", "botd-999-0"))
    ids = {m["external_id"]: str(m["id"]) for m in fake.stored_messages(CLIENT)}
    assert found == {"botd-3-0": ids["botd-3-0"], "botd-229-0": ids["botd-229-0"]}
    assert sender.statistics().lookups == 2


async def test_the_reply_goes_out_on_the_customers_channel(
    fake: FakeChat2Desk, open_api: OpenApi
) -> None:
    config = c2d_config(fake.base_url)
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        await sender.send(CLIENT, "hi", external_id="botd-1-0", route=Route("whatsapp", 55))
        await sender.send(CLIENT, "hi again", external_id="botd-1-1")
    bodies = [r.body for r in fake.requests]
    assert (bodies[0]["transport"], bodies[0]["channel_id"]) == ("whatsapp", 55)
    assert "transport" not in bodies[1] and "channel_id" not in bodies[1]
    assert bodies[0]["external_id"] == "botd-1-0"


# ---- a refused token: paused, one probe per interval (simulated time) ----------------------


@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(401, json={"status": "error", "message": "You need to auth"}),
        httpx.Response(403, text="forbidden"),
        httpx.Response(200, json={"status": "error", "message": "You need to auth"}),
    ],
)
async def test_a_refused_token_pauses_sending_until_a_probe_succeeds(
    autojump_clock: trio.testing.MockClock, refusal: httpx.Response
) -> None:
    calls: list[float] = []
    refusing = True

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        return refusal if refusing else httpx.Response(200, json=OK_BODY)

    config = c2d_config()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sender = Sender(ChatApi(config, client), TokenBucket(60000, 1000), config)
        with pytest.raises(AuthRejected):
            await sender.send(CLIENT, "a")
        assert len(calls) == 1  # not retried: no point until the token works
        assert sender.statistics().auth_failing and "refused the token" in sender.auth_failure
        for _ in range(5):  # every other send meanwhile fails at once, without a call
            with pytest.raises(AuthRejected, match="paused"):
                await sender.send(CLIENT, "b")
        assert len(calls) == 1
        await trio.sleep(config.auth_retry_seconds)
        refusing = False
        assert await sender.send(CLIENT, "c") == "777"  # the probe works: sending resumes
        assert len(calls) == 2 and calls[1] - calls[0] >= config.auth_retry_seconds
        assert sender.auth_failure == "" and not sender.statistics().auth_failing
        assert await sender.send(CLIENT, "d") == "777"
        assert len(calls) == 3
