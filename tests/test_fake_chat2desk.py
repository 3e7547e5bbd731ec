"""The Chat2Desk fake: success shape, errors, every fault kind, the control API, process mode."""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
import trio.testing

from botd.testing.fake_chat2desk import ECHO_ATTEMPTS, FakeChat2Desk, open_fake_chat2desk

TOKEN = "test-token"
REPO_ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": TOKEN}


def message(client_id: int | str = 17340089, text: str = "hello") -> dict[str, Any]:
    return {"client_id": client_id, "text": text, "type": "to_client"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeChat2Desk]:
    async with open_fake_chat2desk(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def client(fake: FakeChat2Desk) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=10) as client:
        yield client


async def send(client: httpx.AsyncClient, body: object = None, **headers: str) -> httpx.Response:
    return await client.post(
        "/messages", json=message() if body is None else body, headers={**AUTH, **headers}
    )


def mock_clock_client(fake: FakeChat2Desk) -> httpx.AsyncClient:
    # No client timeout under autojump_clock: a deadline would let the clock jump past it while
    # the reply is still travelling through the (real) loopback socket.
    return httpx.AsyncClient(base_url=fake.base_url, timeout=None)  # noqa: S113


def control_url(fake: FakeChat2Desk, path: str) -> str:
    return fake.base_url.removesuffix("/v1") + path


# -- normal answers -------------------------------------------------------------------------------


async def test_success_shape_and_increasing_message_ids(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    first = await send(client, {**message(text="one"), "transport": "whatsapp", "channel_id": 5})
    second = await send(client, message(client_id="17340089", text="two"))

    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "success"
    data = body["data"]
    assert set(data) == {
        "message_id",
        "channel_id",
        "operator_id",
        "transport",
        "type",
        "client_id",
        "dialog_id",
        "request_id",
    }
    assert (data["client_id"], data["transport"], data["channel_id"], data["type"]) == (
        17340089,
        "whatsapp",
        5,
        "to_client",
    )
    assert second.json()["data"]["client_id"] == "17340089"
    assert second.json()["data"]["message_id"] > data["message_id"]
    assert second.json()["data"]["dialog_id"] == data["dialog_id"]
    assert fake.texts_for(17340089) == ["one", "two"]
    assert fake.texts_for("17340089") == ["one", "two"]
    assert [b["text"] for b in fake.delivered()] == ["one", "two"]
    recorded = fake.requests
    assert [r.seq for r in recorded] == [1, 2]
    assert all(r.method == "POST" and r.path == "/v1/messages" for r in recorded)
    assert all(r.authorization == TOKEN and r.status == 200 and r.delivered for r in recorded)
    assert recorded[0].at <= recorded[1].at and recorded[0].monotonic <= recorded[1].monotonic


async def test_per_client_lookup_separates_clients(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    await send(client, message(1, "to one"))
    await send(client, message(2, "to two"))
    await send(client, message(1, "again one"))

    assert fake.texts_for(1) == ["to one", "again one"]
    assert [r.body["text"] for r in fake.requests_for(2)] == ["to two"]
    assert fake.texts_for(3) == []


async def test_wrong_or_missing_authorization_is_401(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    bearer = await send(client, Authorization=f"Bearer {TOKEN}")
    missing = await client.post("/messages", json=message())

    for response in (bearer, missing):
        assert response.status_code == 401
        assert response.json() == {"status": "error", "message": "You need to auth"}
    assert [r.authorization for r in fake.requests] == [f"Bearer {TOKEN}", None]
    assert fake.delivered() == []


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"{not json", "client_id"),
        (json.dumps({"text": "no client"}).encode(), "client_id"),
        (json.dumps({"client_id": "abc", "text": "x"}).encode(), "client_id"),
        (json.dumps({"client_id": 1}).encode(), "text"),
        (json.dumps({"client_id": 1, "text": "x", "type": "bogus"}).encode(), "type"),
    ],
)
async def test_invalid_body_is_400_validation_failed(
    fake: FakeChat2Desk, client: httpx.AsyncClient, content: bytes, field: str
) -> None:
    response = await client.post("/messages", content=content, headers=AUTH)

    assert response.status_code == 400
    body = response.json()
    assert (body["status"], body["message"]) == ("error", "Validation failed")
    assert field in body["errors"]
    assert fake.requests[0].status == 400
    assert fake.requests[0].raw_body == content
    if content.startswith(b"{not"):
        assert fake.requests[0].body is None


async def test_unknown_path_is_404_json(fake: FakeChat2Desk, client: httpx.AsyncClient) -> None:
    response = await client.get("/clients/1", headers=AUTH)

    assert response.status_code == 404
    assert response.json() == {"status": "error", "message": "Page not found"}
    assert fake.requests == []


async def test_keep_alive_serves_many_requests_on_one_connection(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    for i in range(20):
        assert (await send(client, message(7, str(i)))).status_code == 200

    assert fake.texts_for(7) == [str(i) for i in range(20)]
    assert fake.statistics().delivered == 20


# -- faults ---------------------------------------------------------------------------------------


async def test_fail_next_answers_non_json_then_recovers(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.fail_next(2)
    fake.fail_next(1, status=502, body="oops", content_type="text/plain")

    answers = [await send(client) for _ in range(4)]

    assert [a.status_code for a in answers] == [503, 503, 502, 200]
    assert answers[0].text == "<html>Bad gateway</html>"
    assert answers[0].headers["content-type"] == "text/html"
    assert answers[2].text == "oops"
    assert [r.status for r in fake.requests] == [503, 503, 502, 200]
    assert len(fake.delivered()) == 1


async def test_set_down_fails_everything_until_set_up(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.set_down(status=502)
    down = [(await send(client)).status_code for _ in range(3)]
    fake.set_up()
    up = await send(client)

    assert down == [502, 502, 502]
    assert up.status_code == 200
    assert fake.statistics().down_status is None


async def test_rate_limit_next_with_429_and_retry_after(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.rate_limit_next(1, retry_after=2)
    fake.rate_limit_next(1, retry_after=None)

    limited, no_header, ok = [await send(client) for _ in range(3)]

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.json() == {"status": "error", "message": "Number of API requests exceeded"}
    assert no_header.status_code == 429 and "retry-after" not in no_header.headers
    assert ok.status_code == 200


async def test_rate_limit_next_can_answer_200_with_error_body(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.rate_limit_next(1, exceeded_with_200=True)

    response = await send(client)

    assert response.status_code == 200
    assert response.json()["status"] == "error"
    assert fake.requests[0].status == 200
    assert not fake.requests[0].delivered
    assert fake.delivered() == []


@pytest.mark.parametrize(
    ("status", "message_text"),
    [(400, "Validation failed"), (401, "You need to auth"), (404, "Page not found")],
)
async def test_reject_next_answers_permanent_errors(
    fake: FakeChat2Desk, client: httpx.AsyncClient, status: int, message_text: str
) -> None:
    fake.reject_next(1, status=status)
    fake.reject_next(1, status=400, message="Client not found")

    default, custom, ok = [await send(client) for _ in range(3)]

    assert default.status_code == status
    assert default.json() == {"status": "error", "message": message_text}
    assert custom.json()["message"] == "Client not found"
    assert ok.status_code == 200


async def test_hang_next_never_answers_and_records_it(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.hang_next(1)
    answered: list[httpx.Response] = []

    async def hanging_send() -> None:
        answered.append(await send(client, message(1, "lost?")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hanging_send)
        (hung,) = await fake.wait_for_requests(1)
        # a second connection is served normally while the first one hangs
        assert (await send(client, message(2, "fine"))).status_code == 200
        nursery.cancel_scope.cancel()

    assert answered == []
    assert hung.status is None and not hung.delivered
    assert hung.body["text"] == "lost?"
    assert fake.texts_for(2) == ["fine"]


async def test_delay_follows_the_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fake_chat2desk(token=TOKEN) as fake:
        fake.set_delay(30)
        async with mock_clock_client(fake) as client:
            start = trio.current_time()
            response = await send(client)
            elapsed = trio.current_time() - start

    assert response.status_code == 200
    assert 30 <= elapsed < 31
    assert fake.statistics().delay_seconds == 30


async def test_enforced_rate_limit_counts_violations_in_a_sliding_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fake_chat2desk(token=TOKEN) as fake:
        fake.enforce_rate_limit(2)
        async with mock_clock_client(fake) as client:
            first = await send(client)
            await trio.sleep(30)
            second = await send(client)
            third = await send(client)
            await trio.sleep(31)  # the first request leaves the window
            fourth = await send(client)

    assert [r.status_code for r in (first, second, third, fourth)] == [200, 200, 429, 429]
    # the third request counts too: the window held [t=30, t=30] when the fourth arrived
    assert third.json()["message"] == "Number of API requests exceeded"
    assert third.headers["retry-after"] == "30"
    assert fake.limit_violations == 2


async def test_enforced_rate_limit_allows_traffic_at_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fake_chat2desk(token=TOKEN) as fake:
        fake.enforce_rate_limit(60, key="client_id")
        async with mock_clock_client(fake) as client:
            for i in range(120):
                assert (await send(client, message(1, str(i)))).status_code == 200
                await trio.sleep(1)
            other_client = await send(client, message(2, "x"))

    assert other_client.status_code == 200
    assert fake.limit_violations == 0
    assert len(fake.texts_for(1)) == 120


async def test_wait_for_deliveries_wakes_when_enough_arrive(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    got: list[list[dict[str, Any]]] = []

    async def waiter() -> None:
        got.append(await fake.wait_for_deliveries(2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        fake.fail_next(1)
        await send(client, message(1, "failed"))
        await send(client, message(1, "a"))
        assert got == []
        await send(client, message(1, "b"))

    assert [b["text"] for b in got[0]] == ["a", "b"]


def test_fault_arguments_are_validated() -> None:
    fake = FakeChat2Desk(token=TOKEN)

    with pytest.raises(ValueError, match="n must be"):
        fake.fail_next(-1)
    with pytest.raises(ValueError, match="seconds"):
        fake.set_delay(-1)
    with pytest.raises(ValueError, match="fault"):
        fake.apply_faults({"fault": "explode"})
    with pytest.raises(ValueError, match="hang_next"):
        fake.apply_faults({"fault": "hang_next", "bogus": 1})
    with pytest.raises(RuntimeError, match="not listening"):
        _ = fake.base_url
    assert fake.statistics().pending_faults == 0


# -- control API over HTTP ------------------------------------------------------------------------


async def test_control_api_switches_faults_reads_requests_and_resets(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    switched = await client.post(
        control_url(fake, "/_fake/faults"),
        json=[
            {"fault": "fail_next", "n": 1, "status": 502},
            {"fault": "rate_limit_next", "n": 1, "retry_after": 1.5},
            {"fault": "reject_next", "status": 401},
        ],
    )
    answers = [(await send(client)).status_code for _ in range(4)]
    listed = (await client.get(control_url(fake, "/_fake/requests"))).json()
    bad = await client.post(control_url(fake, "/_fake/faults"), json={"fault": "nope"})
    stats = (await client.get(control_url(fake, "/_fake/statistics"))).json()
    reset = await client.post(control_url(fake, "/_fake/reset"))
    after_reset = (await client.get(control_url(fake, "/_fake/requests"))).json()

    assert switched.status_code == 200
    assert switched.json()["statistics"]["pending_faults"] == 3
    assert answers == [502, 429, 401, 200]
    assert [r["status"] for r in listed["requests"]] == answers
    first = listed["requests"][0]
    assert first["authorization"] == TOKEN and first["body"] == message()
    assert json.loads(first["raw_body"]) == message()
    assert listed["limit_violations"] == 0
    assert bad.status_code == 400 and bad.json()["status"] == "error"
    assert (stats["requests"], stats["delivered"]) == (4, 1)
    assert reset.status_code == 200
    assert after_reset["requests"] == []


async def test_control_api_down_delay_and_limit(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    faults = control_url(fake, "/_fake/faults")
    await client.post(faults, json={"fault": "set_down", "status": 500})
    down = await send(client)
    await client.post(faults, json={"fault": "set_up"})
    await client.post(faults, json={"fault": "enforce_rate_limit", "per_minute": 1})
    await client.post(faults, json={"fault": "set_delay", "seconds": 0.01})
    ok, limited = await send(client), await send(client)
    await client.post(faults, json={"fault": "clear_faults"})

    assert (down.status_code, ok.status_code, limited.status_code) == (500, 200, 429)
    assert fake.limit_violations == 1
    assert fake.statistics() == fake.statistics().__class__(
        requests=3,
        delivered=1,
        limit_violations=1,
        pending_faults=0,
        down_status=None,
        delay_seconds=0.0,
        rate_limit_per_minute=None,
        pending_lookup_faults=0,
        accept_slowly_seconds=0.0,
        stored_messages=1,
        echo_url=None,
        echoes_posted=0,
        echo_failures=0,
        last_echo_error=None,
    )


async def test_control_api_long_polls_for_deliveries(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    wait_url = control_url(fake, "/_fake/wait_for_deliveries")
    timed_out = await client.get(wait_url, params={"n": 1, "timeout_seconds": 0})
    answers: list[httpx.Response] = []

    async def long_poll() -> None:
        answers.append(await client.get(wait_url, params={"n": 1, "timeout_seconds": 10}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await send(client, message(3, "awaited"))

    assert timed_out.status_code == 408
    assert answers[0].status_code == 200
    assert [b["text"] for b in answers[0].json()["delivered"]] == ["awaited"]


# -- stored messages and lookups (GET /v1/messages) -----------------------------------------------


def tagged(client_id: int | str, text: str, external_id: str | None) -> dict[str, Any]:
    body = message(client_id, text)
    if external_id is not None:
        body["external_id"] = external_id
    return body


async def lookup(client: httpx.AsyncClient, token: str = TOKEN, **params: Any) -> httpx.Response:
    return await client.get("/messages", params=params, headers={"Authorization": token})


async def test_delivered_messages_are_stored_with_their_ids(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    before = time.time()
    sent = await send(client, {**tagged("5", "hi", "ext-1"), "transport": "whatsapp"})
    await send(client, {"client_id": 5, "text": "nope", "type": "bogus"})  # 400: not stored
    fake.fail_next(1)
    await send(client, tagged(5, "failed", "ext-2"))  # 503: not stored
    await send(client, message(6, "plain"))

    stored = fake.stored_messages()
    assert stored[0] == {
        "id": sent.json()["data"]["message_id"],
        "text": "hi",
        "type": "to_client",
        "client_id": 5,
        "external_id": "ext-1",
        "transport": "whatsapp",
        "channel_id": 17,
        "created": stored[0]["created"],
    }
    created = calendar.timegm(time.strptime(stored[0]["created"], "%Y-%m-%dT%H:%M:%SZ"))
    assert int(before) <= created <= time.time()
    assert [m["text"] for m in stored] == ["hi", "plain"]
    assert stored[1]["external_id"] is None
    assert fake.stored_messages(client_id="6") == [stored[1]]
    assert [r.external_id for r in fake.requests] == ["ext-1", None, "ext-2", None]
    assert fake.statistics().stored_messages == 2


async def test_lookup_filters_pages_and_counts_oldest_first(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    for i in range(5):
        await send(client, message(1, f"one-{i}"))
    await send(client, {**message(2, "two"), "type": "autoreply"})

    everything = await lookup(client)
    page = await lookup(client, client_id=1, limit=2, offset=1)
    typed = await lookup(client, type="autoreply")
    past_the_end = await lookup(client, client_id=1, offset=10)
    slash = await client.get("/messages/", params={"client_id": 2}, headers=AUTH)

    assert everything.status_code == 200
    body = everything.json()
    assert body["status"] == "success"
    assert [m["text"] for m in body["data"]] == [f"one-{i}" for i in range(5)] + ["two"]
    assert body["data"] == fake.stored_messages()
    assert body["meta"] == {"total": 6, "limit": 20, "offset": 0}
    assert [m["text"] for m in page.json()["data"]] == ["one-1", "one-2"]
    assert page.json()["meta"] == {"total": 5, "limit": 2, "offset": 1}
    assert [(m["text"], m["type"]) for m in typed.json()["data"]] == [("two", "autoreply")]
    assert past_the_end.json()["data"] == [] and past_the_end.json()["meta"]["total"] == 5
    assert [m["text"] for m in slash.json()["data"]] == ["two"]


async def test_lookup_limit_defaults_to_20_and_is_clamped_to_200(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    for i in range(205):
        await send(client, message(3, str(i)))

    default, clamped = await lookup(client), await lookup(client, limit=1000)

    assert len(default.json()["data"]) == 20
    assert len(clamped.json()["data"]) == 200
    assert clamped.json()["meta"] == {"total": 205, "limit": 200, "offset": 0}
    assert clamped.json()["data"][-1]["text"] == "199"


@pytest.mark.parametrize(
    "params", [{"limit": "ten"}, {"offset": "1.5"}, {"limit": "-1"}, {"client_id": "abc"}]
)
async def test_lookup_with_bad_paging_is_400(
    fake: FakeChat2Desk, client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await lookup(client, **params)

    assert response.status_code == 400
    body = response.json()
    assert (body["status"], body["message"]) == ("error", "Validation failed")


async def test_lookups_are_recorded_as_gets_but_are_not_sends(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    await send(client, message(4, "sent"))
    await lookup(client, client_id=4, type="to_client")
    wrong = await lookup(client, token="wrong", client_id=4)

    assert wrong.status_code == 401
    assert wrong.json() == {"status": "error", "message": "You need to auth"}
    post, get, rejected = fake.requests
    assert (post.method, post.query) == ("POST", "")
    assert (get.method, get.path, get.status) == ("GET", "/v1/messages", 200)
    assert get.query == "client_id=4&type=to_client"
    assert (get.body, get.raw_body, get.delivered, get.client_id) == (None, b"", False, None)
    assert rejected.status == 401 and rejected.authorization == "wrong"
    assert fake.requests_for(4) == [post]
    assert fake.texts_for(4) == ["sent"]
    assert fake.delivered() == [message(4, "sent")]
    assert fake.statistics().requests == 3 and fake.statistics().delivered == 1


async def test_one_shot_faults_hit_sends_and_lookup_faults_hit_lookups(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.fail_next(1, status=502)
    fake.reject_next(1)
    fake.hang_next(1)
    fake.rate_limit_next(1)
    fake.accept_then_fail_next(1)
    fake.lookup_fail_next(1)
    fake.lookup_fail_next(1, status=500, body="oops", content_type="text/plain")

    first, second, third = [await lookup(client) for _ in range(3)]
    sends = [(await send(client)).status_code for _ in range(2)]

    assert (first.status_code, first.text) == (503, "<html>Bad gateway</html>")
    assert (second.status_code, second.text) == (500, "oops")
    assert third.status_code == 200
    assert sends == [502, 400]  # the send faults were still queued
    assert fake.statistics().pending_faults == 3
    assert fake.statistics().pending_lookup_faults == 0


async def test_lookups_obey_outage_and_count_against_the_rate_limit(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.set_down(status=502)
    down = await lookup(client)
    fake.set_up()
    fake.enforce_rate_limit(2)
    sent, looked, limited = await send(client), await lookup(client), await lookup(client)
    limited_send = await send(client)

    assert down.status_code == 502
    assert (sent.status_code, looked.status_code) == (200, 200)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert limited.json()["message"] == "Number of API requests exceeded"
    assert limited_send.status_code == 429
    assert fake.limit_violations == 2


async def test_lookup_rate_limit_by_client_id_uses_the_query(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.enforce_rate_limit(1, key="client_id")

    answers = [
        (await send(client, message(8))).status_code,
        (await lookup(client, client_id=8)).status_code,
        (await lookup(client, client_id=9)).status_code,
    ]

    assert answers == [200, 429, 200]


async def test_lookup_delay_follows_the_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fake_chat2desk(token=TOKEN) as fake:
        fake.set_delay(12)
        async with mock_clock_client(fake) as client:
            start = trio.current_time()
            response = await lookup(client)
            elapsed = trio.current_time() - start

    assert response.status_code == 200
    assert 12 <= elapsed < 13


# -- accept-but-answer-badly faults ---------------------------------------------------------------


async def test_accept_slowly_next_stores_at_once_and_answers_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fake_chat2desk(token=TOKEN) as fake, mock_clock_client(fake) as client:
        fake.accept_slowly_next(1, seconds=30)
        answers: list[tuple[float, httpx.Response]] = []
        start = trio.current_time()

        async def slow_send() -> None:
            response = await send(client, tagged(1, "slow", "e-1"))
            answers.append((trio.current_time() - start, response))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_send)
            await fake.wait_for_deliveries(1)
            stored_after = trio.current_time() - start
            assert answers == []
            assert [m["text"] for m in fake.stored_messages()] == ["slow"]
        fast = await send(client, message(1, "fast"))

    ((elapsed, slow),) = answers
    assert stored_after < 1 and 30 <= elapsed < 31
    assert slow.status_code == 200 and slow.json()["status"] == "success"
    assert slow.json()["data"]["message_id"] == fake.stored_messages()[0]["id"]
    assert fast.status_code == 200
    assert fake.texts_for(1) == ["slow", "fast"]


async def test_accept_slowly_outlasts_a_client_timeout_but_the_message_is_delivered(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.accept_slowly_next(seconds=0.5)

    with pytest.raises(httpx.ReadTimeout):
        await client.post("/messages", json=tagged(2, "lost id", "e-9"), headers=AUTH, timeout=0.1)
    again = await send(client, tagged(2, "lost id", "e-9"))

    assert again.status_code == 200
    assert fake.texts_for(2) == ["lost id", "lost id"]
    assert fake.duplicate_deliveries() == [("e-9", 2)]
    assert [r.status for r in fake.requests] == [200, 200]


async def test_set_accept_slowly_delays_every_delivery_until_turned_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fake_chat2desk(token=TOKEN) as fake, mock_clock_client(fake) as client:
        fake.set_accept_slowly(5)
        assert fake.statistics().accept_slowly_seconds == 5
        took = []
        for _ in range(2):
            start = trio.current_time()
            assert (await send(client)).status_code == 200
            took.append(trio.current_time() - start)
        start = trio.current_time()
        rejected = await send(client, message(text=""))  # not delivered: answered at once
        rejected_took = trio.current_time() - start
        fake.set_accept_slowly(None)
        start = trio.current_time()
        await send(client)
        took.append(trio.current_time() - start)

    assert [5 <= t < 6 for t in took] == [True, True, False]
    assert took[2] < 1
    assert rejected.status_code == 400 and rejected_took < 1
    assert len(fake.stored_messages()) == 3


async def test_accept_then_fail_delivers_but_answers_html_502(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.accept_then_fail_next(1)
    fake.accept_then_fail_next(1, status=504, body="<html>Gateway timeout</html>")

    first, second, third = [await send(client, message(3, str(i))) for i in range(3)]

    assert (first.status_code, first.text) == (502, "<html>Bad gateway</html>")
    assert first.headers["content-type"] == "text/html"
    assert (second.status_code, second.text) == (504, "<html>Gateway timeout</html>")
    assert third.status_code == 200
    assert fake.texts_for(3) == ["0", "1", "2"]
    assert [(r.status, r.delivered) for r in fake.requests] == [
        (502, True),
        (504, True),
        (200, True),
    ]
    assert [m["text"] for m in fake.stored_messages()] == ["0", "1", "2"]


async def test_accept_faults_wait_for_a_deliverable_send(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.accept_then_fail_next(1)
    fake.fail_next(1)

    invalid = await send(client, {"client_id": "x", "text": "t"})
    unauthorised = await send(client, Authorization="wrong")
    accepted = await send(client)
    failed = await send(client)

    assert [r.status_code for r in (invalid, unauthorised, accepted, failed)] == [
        400,
        401,
        502,
        503,
    ]
    assert len(fake.stored_messages()) == 1


# -- auth faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reject_status", [401, 403, 200])
async def test_set_token_rotates_the_accepted_token(
    fake: FakeChat2Desk, client: httpx.AsyncClient, reject_status: int
) -> None:
    fake.set_token("rotated", reject_status=reject_status)

    old_send = await send(client)
    old_lookup = await lookup(client)
    new_send = await send(client, Authorization="rotated")
    new_lookup = await lookup(client, token="rotated")
    fake.clear_faults()
    original_again = await send(client)

    for response in (old_send, old_lookup):
        assert response.status_code == reject_status
        assert response.json() == {"status": "error", "message": "You need to auth"}
    assert (new_send.status_code, new_lookup.status_code) == (200, 200)
    assert original_again.status_code == 200
    assert [r.delivered for r in fake.requests if r.method == "POST"] == [False, True, True]


async def test_reject_next_can_answer_an_auth_error_with_http_200(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.reject_next(status=200, message="You need to auth")
    fake.reject_next(status=403)

    first, second = await send(client), await send(client)

    assert first.status_code == 200
    assert first.json() == {"status": "error", "message": "You need to auth"}
    assert second.status_code == 403 and second.json()["message"] == "You need to auth"
    assert fake.delivered() == [] and fake.stored_messages() == []


# -- outbox echoes --------------------------------------------------------------------------------


class EchoReceiver:
    """A tiny HTTP/1.1 server on loopback standing in for botd's webhook: records every POST and
    answers the next status from ``statuses`` (then 200), after ``hold`` is set when given."""

    def __init__(self, statuses: Sequence[int] = ()) -> None:
        self.statuses = deque(statuses)
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.hold: trio.Event | None = None
        self.url = ""
        self._changed = trio.Event()

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]

    async def wait_for_posts(self, n: int) -> None:
        with trio.fail_after(10):
            while len(self.posts) < n:
                await self._changed.wait()

    async def _next_event(self, conn: h11.Connection, stream: trio.SocketStream) -> Any:
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        return event

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
            while isinstance(request := await self._next_event(conn, stream), h11.Request):
                body = b""
                while isinstance(event := await self._next_event(conn, stream), h11.Data):
                    body += event.data
                headers = {k.decode(): v.decode() for k, v in request.headers}
                self.posts.append((headers, body))
                self._changed.set()
                self._changed = trio.Event()
                if self.hold is not None:
                    await self.hold.wait()
                status = self.statuses.popleft() if self.statuses else 200
                response = h11.Response(status_code=status, headers=[("content-length", "0")])
                await stream.send_all(conn.send(response) + conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()


@asynccontextmanager
async def echo_receiver(statuses: Sequence[int] = ()) -> AsyncIterator[EchoReceiver]:
    receiver = EchoReceiver(statuses)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), receiver.handle, 0
        )
        receiver.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/webhook/chat2desk"
        try:
            yield receiver
        finally:
            nursery.cancel_scope.cancel()


async def refused_url() -> str:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    return f"http://127.0.0.1:{port}/webhook"


async def test_echo_posts_an_outbox_event_for_every_delivery(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    async with echo_receiver() as receiver:
        fake.echo_to(receiver.url)
        sent = await send(client, {**tagged(7, "hello", "x-1"), "transport": "whatsapp"})
        await send(client, message(7, ""))  # 400: no echo
        fake.accept_then_fail_next(1)
        await send(client, message(8, "accepted, 502"))
        await receiver.wait_for_posts(2)
        await fake.wait_for_echoes(2)

    first, second = sorted(receiver.payloads, key=lambda p: p["message_id"])
    assert first == {
        "hook_type": "outbox",
        "type": "to_client",
        "message_id": sent.json()["data"]["message_id"],
        "client_id": 7,
        "text": "hello",
        "transport": "whatsapp",
        "channel_id": 17,
        "operator_id": 41164,
        "external_id": "x-1",
        "event_time": first["event_time"],
    }
    assert time.strptime(first["event_time"], "%Y-%m-%dT%H:%M:%SZ")
    assert (second["client_id"], second["text"], second["external_id"]) == (
        8,
        "accepted, 502",
        None,
    )
    headers, _ = receiver.posts[0]
    assert headers["content-type"] == "application/json"
    assert "x-chat2desk-signature" not in headers
    stats = fake.statistics()
    assert (stats.echoes_posted, stats.echo_failures, stats.echo_url) == (2, 0, receiver.url)


async def test_echo_is_signed_with_hmac_sha256_of_the_raw_body(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    async with echo_receiver() as receiver:
        fake.echo_to(receiver.url, hmac_secret="s3cret", hmac_header="X-Sig")
        await send(client)
        await receiver.wait_for_posts(1)

    headers, raw = receiver.posts[0]
    assert headers["x-sig"] == hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()


async def test_echo_after_the_answer_does_not_hold_the_send(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    async with echo_receiver() as receiver:
        receiver.hold = trio.Event()
        fake.echo_to(receiver.url)
        with trio.fail_after(5):
            answered = await send(client)  # answered while the echo is still unanswered
            await receiver.wait_for_posts(1)
        assert fake.statistics().echoes_posted == 0
        receiver.hold.set()
        await fake.wait_for_echoes(1)

    assert answered.status_code == 200
    assert fake.statistics().echoes_posted == 1


async def test_echo_before_the_answer_overtakes_it(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    answers: list[httpx.Response] = []

    async def send_it() -> None:
        answers.append(await send(client, message(9, "overtaken")))

    async with echo_receiver() as receiver:
        receiver.hold = trio.Event()
        fake.echo_to(receiver.url, before_answer=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_it)
            await receiver.wait_for_posts(1)
            await trio.sleep(0.2)
            assert answers == []  # the send waits for the bot to answer the echo
            receiver.hold.set()

    (answer,) = answers
    assert answer.status_code == 200
    assert receiver.payloads[0]["message_id"] == answer.json()["data"]["message_id"]
    assert fake.statistics().echoes_posted == 1


async def test_failed_echoes_are_retried_then_counted_and_never_break_the_fake(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.echo_to(await refused_url())
    refused = await send(client, message(1, "a"))
    await fake.wait_for_echoes(1)
    assert fake.statistics().echo_failures == 1
    assert "ConnectError" in str(fake.statistics().last_echo_error)

    async with (
        echo_receiver(statuses=[500, 503]) as flaky,
        echo_receiver(statuses=[500] * 10) as broken,
    ):
        fake.echo_to(flaky.url)
        await send(client, message(1, "b"))
        await fake.wait_for_echoes(2)
        fake.echo_to(broken.url, before_answer=True)
        before = await send(client, message(1, "c"))
        fake.echo_to(None)
        quiet = await send(client, message(1, "d"))

    assert [r.status_code for r in (refused, before, quiet)] == [200, 200, 200]
    assert len(flaky.posts) == 3 and len(broken.posts) == ECHO_ATTEMPTS
    stats = fake.statistics()
    assert (stats.echoes_posted, stats.echo_failures) == (1, 2)
    assert stats.last_echo_error == "HTTP 500" and stats.echo_url is None
    assert fake.texts_for(1) == ["a", "b", "c", "d"]


async def test_echo_timeout_counts_as_a_failure(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    async with echo_receiver() as receiver:
        receiver.hold = trio.Event()  # never answers
        fake.echo_to(receiver.url, timeout_seconds=0.1)
        await send(client)
        with trio.fail_after(5):
            await fake.wait_for_echoes(1)

    assert len(receiver.posts) == ECHO_ATTEMPTS
    assert fake.statistics().echo_failures == 1
    assert "Timeout" in str(fake.statistics().last_echo_error)


async def test_pending_echoes_stop_with_the_server() -> None:
    async with echo_receiver() as receiver:
        receiver.hold = trio.Event()  # the echo would wait for ever
        with trio.fail_after(5):
            async with open_fake_chat2desk(token=TOKEN) as fake:
                fake.echo_to(receiver.url)
                async with httpx.AsyncClient(base_url=fake.base_url) as client:
                    assert (await send(client)).status_code == 200
                await receiver.wait_for_posts(1)
        # leaving the block cancelled the echo task instead of hanging or leaking it

    assert fake.statistics().echoes_posted == 0


async def test_operator_says_stores_and_echoes_an_operator_message(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    async with echo_receiver() as receiver:
        fake.echo_to(receiver.url)
        await send(client, {**message(11, "from the bot"), "transport": "viber", "channel_id": 3})
        await receiver.wait_for_posts(1)
        said = await fake.operator_says(11, "a human here")
        assert len(receiver.posts) == 2  # awaited: the echo is already in
        said_remotely = await client.post(
            control_url(fake, "/_fake/operator_says"), json={"client_id": "11", "text": "again"}
        )
        assert len(receiver.posts) == 3
        bad = await client.post(control_url(fake, "/_fake/operator_says"), json={"text": "x"})

    operator = receiver.payloads[1]
    assert operator["message_id"] == said
    assert (operator["hook_type"], operator["type"], operator["operator_id"]) == (
        "outbox",
        "to_client",
        41164,
    )
    assert (operator["client_id"], operator["text"], operator["external_id"]) == (
        11,
        "a human here",
        None,
    )
    assert (operator["transport"], operator["channel_id"]) == ("viber", 3)
    assert said_remotely.json() == {"status": "success", "message_id": said + 1}
    assert bad.status_code == 400 and bad.json()["status"] == "error"
    assert [m["text"] for m in fake.stored_messages(11)] == [
        "from the bot",
        "a human here",
        "again",
    ]
    assert fake.texts_for(11) == ["from the bot"]  # sends only
    assert fake.duplicate_deliveries() == []


async def test_operator_says_without_echo_target_only_stores() -> None:
    fake = FakeChat2Desk(token=TOKEN)  # not even listening

    first = await fake.operator_says("12", "hi")

    assert fake.stored_messages() == [
        {
            "id": first,
            "text": "hi",
            "type": "to_client",
            "client_id": 12,
            "external_id": None,
            "transport": "telegram",
            "channel_id": 17,
            "created": fake.stored_messages()[0]["created"],
        }
    ]
    with pytest.raises(ValueError, match="client_id"):
        await fake.operator_says("abc", "x")


# -- audits ---------------------------------------------------------------------------------------


async def test_duplicate_deliveries_and_the_messages_endpoint(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    for client_id, text, external_id in [
        (1, "a", "k-1"),
        (1, "a", "k-1"),
        (2, "b", "k-2"),
        (1, "c", None),
        (1, "c", None),
        (2, "b", "k-2"),
        (2, "b", "k-2"),
        (3, "d", "k-3"),
    ]:
        await send(client, tagged(client_id, text, external_id))
    fake.fail_next(1)
    await send(client, tagged(3, "d", "k-3"))  # not delivered: not a duplicate

    listed = (await client.get(control_url(fake, "/_fake/messages"))).json()
    for_two = (
        await client.get(control_url(fake, "/_fake/messages"), params={"client_id": 2})
    ).json()

    assert fake.duplicate_deliveries() == [("k-1", 2), ("k-2", 3)]
    assert listed["duplicates"] == [["k-1", 2], ["k-2", 3]]
    assert listed["messages"] == fake.stored_messages()
    assert len(listed["messages"]) == 8
    assert [m["external_id"] for m in for_two["messages"]] == ["k-2"] * 3
    await client.post(control_url(fake, "/_fake/reset"))
    assert fake.stored_messages() == [] and fake.duplicate_deliveries() == []


# -- tags (POST /v1/tags/assign_to) ---------------------------------------------------------------


def tag_body(
    tag_id: object = 7, assignee_type: object = "request", assignee_id: object = 99
) -> Any:
    return {"tag_ids": [tag_id], "assignee_type": assignee_type, "assignee_id": assignee_id}


async def assign(client: httpx.AsyncClient, body: object = None, **headers: str) -> httpx.Response:
    return await client.post(
        "/tags/assign_to", json=tag_body() if body is None else body, headers={**AUTH, **headers}
    )


async def test_a_tag_is_assigned_recorded_and_is_not_a_send(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    request = await assign(client)
    on_client = await assign(client, tag_body(3, "client", 17340089))

    assert (request.status_code, request.json()) == (200, {"status": "success"})
    assert on_client.status_code == 200
    assert fake.tag_assignments == [
        {"tag_ids": [7], "assignee_type": "request", "assignee_id": 99},
        {"tag_ids": [3], "assignee_type": "client", "assignee_id": 17340089},
    ]
    assert [(r.method, r.path, r.status, r.delivered) for r in fake.tag_requests] == [
        ("POST", "/v1/tags/assign_to", 200, True),
        ("POST", "/v1/tags/assign_to", 200, True),
    ]
    assert fake.requests == [] and fake.stored_messages() == []  # not a message
    assert fake.statistics().tag_assignments == 2


async def test_request_id_for_is_what_the_clients_sends_are_answered_with(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    assert fake.request_id_for(17340089) is None
    first = (await send(client, message(17340089))).json()["data"]
    other = (await send(client, message(5))).json()["data"]
    again = (await send(client, message("17340089"))).json()["data"]

    assert fake.request_id_for(17340089) == first["request_id"] == again["request_id"]
    assert fake.request_id_for("5") == other["request_id"] != first["request_id"]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"assignee_type": "request", "assignee_id": 1}, {"tag_ids"}),
        (tag_body(tag_id="7"), {"tag_ids"}),
        ({**tag_body(), "tag_ids": []}, {"tag_ids"}),
        (tag_body(assignee_type="dialog"), {"assignee_type"}),
        (tag_body(assignee_id="99"), {"assignee_id"}),
        (tag_body(assignee_id=True), {"assignee_id"}),
        (["not", "an", "object"], {"tag_ids"}),
    ],
)
async def test_a_malformed_tag_call_is_a_validation_error(
    fake: FakeChat2Desk, client: httpx.AsyncClient, body: object, errors: set[str]
) -> None:
    answer = await assign(client, body)

    assert answer.status_code == 400
    assert answer.json()["message"] == "Validation failed"
    assert set(answer.json()["errors"]) == errors
    assert fake.tag_assignments == [] and fake.tag_requests[0].status == 400


async def test_an_unknown_tag_or_a_wrong_token_assigns_nothing(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    unknown = await assign(client, tag_body(10_001))
    zero = await assign(client, tag_body(0))
    wrong_token = await assign(client, Authorization="nope")
    get = await client.get("/tags/assign_to", headers=AUTH)

    assert (unknown.status_code, unknown.json()) == (
        400,
        {"status": "error", "message": "Tag not found"},
    )
    assert zero.status_code == 400
    assert wrong_token.status_code == 401 and wrong_token.json()["message"] == "You need to auth"
    assert get.status_code == 404
    assert fake.tag_assignments == []
    assert [r.status for r in fake.tag_requests] == [400, 400, 401, 404]


async def test_tag_fail_next_hits_tag_calls_only_and_send_faults_skip_them(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.tag_fail_next(status=500)
    fake.fail_next()
    assert fake.statistics().pending_tag_faults == 1
    failed, tagged, sent = await assign(client), await assign(client), await send(client)

    assert (failed.status_code, failed.headers["content-type"]) == (500, "text/html")
    assert (tagged.status_code, sent.status_code) == (200, 503)
    assert fake.tag_assignments == [tag_body()]
    assert fake.statistics().pending_tag_faults == 0


async def test_tag_calls_obey_outage_and_count_against_the_rate_limit(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    fake.set_down(status=502)
    down = await assign(client)
    fake.set_up()
    fake.enforce_rate_limit(2)
    sent, tagged, limited = await send(client), await assign(client), await assign(client)

    assert down.status_code == 502
    assert (sent.status_code, tagged.status_code) == (200, 200)
    assert (
        limited.status_code == 429
        and limited.json()["message"] == "Number of API requests exceeded"
    )
    assert fake.limit_violations == 1 and len(fake.tag_assignments) == 1


async def test_tag_faults_and_assignments_over_the_control_api(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    faults = control_url(fake, "/_fake/faults")
    switched = await client.post(faults, json={"fault": "tag_fail_next", "n": 2})
    answers = [(await assign(client)).status_code for _ in range(3)]
    listed = (await client.get(control_url(fake, "/_fake/requests"))).json()
    await client.post(faults, json={"fault": "tag_fail_next"})
    await client.post(faults, json={"fault": "clear_faults"})
    after_clear = (await assign(client)).status_code
    await client.post(control_url(fake, "/_fake/reset"))

    assert switched.json()["statistics"]["pending_tag_faults"] == 2
    assert answers == [503, 503, 200]
    assert listed["tag_assignments"] == [tag_body()] and listed["requests"] == []
    assert after_clear == 200
    assert fake.tag_assignments == [] and fake.tag_requests == []
    with pytest.raises(ValueError, match="status"):
        fake.tag_fail_next(status=99)


# -- the new switches over the control API --------------------------------------------------------


async def test_every_switch_is_a_method_of_the_same_name(fake: FakeChat2Desk) -> None:
    for name, switch in fake._switches().items():
        assert switch == getattr(fake, name)


async def test_control_api_sets_the_new_faults(
    fake: FakeChat2Desk, client: httpx.AsyncClient
) -> None:
    faults = control_url(fake, "/_fake/faults")
    async with echo_receiver() as receiver:
        switched = await client.post(
            faults,
            json=[
                {"fault": "accept_slowly_next", "n": 1, "seconds": 0.01},
                {"fault": "accept_then_fail_next", "status": 502},
                {"fault": "lookup_fail_next", "n": 1, "status": 503},
                {"fault": "set_accept_slowly", "seconds": 0.01},
                {"fault": "echo_to", "url": receiver.url, "before_answer": True},
            ],
        )
        answers = [(await send(client, message(1, str(i)))).status_code for i in range(3)]
        looked = [(await lookup(client)).status_code for _ in range(2)]
        await client.post(faults, json={"fault": "set_token", "token": "T2", "reject_status": 403})
        rotated = [
            (await send(client)).status_code,
            (await send(client, Authorization="T2")).status_code,
        ]
        await client.post(faults, json={"fault": "clear_faults"})
        await client.post(faults, json={"fault": "echo_to", "url": None})
        said = await client.post(
            control_url(fake, "/_fake/operator_says"), json={"client_id": 1, "text": "op"}
        )
        bad = await client.post(faults, json={"fault": "set_token"})
        stats = (await client.get(control_url(fake, "/_fake/statistics"))).json()

    assert switched.status_code == 200
    switched_stats = switched.json()["statistics"]
    assert (switched_stats["pending_faults"], switched_stats["pending_lookup_faults"]) == (2, 1)
    assert switched_stats["accept_slowly_seconds"] == 0.01
    assert switched_stats["echo_url"] == receiver.url
    assert answers == [200, 502, 200]
    assert looked == [503, 200]
    assert rotated == [403, 200]
    assert said.status_code == 200
    assert bad.status_code == 400 and "set_token" in bad.json()["message"]
    assert len(receiver.posts) == 4  # 3 sends + T2's send, all echoed before their answers
    assert stats["echoes_posted"] == 4 and stats["echo_url"] is None
    assert stats["accept_slowly_seconds"] == 0.0 and stats["stored_messages"] == 5


def test_new_fault_arguments_are_validated() -> None:
    fake = FakeChat2Desk(token=TOKEN)

    with pytest.raises(ValueError, match="seconds"):
        fake.accept_slowly_next(seconds=-1)
    with pytest.raises(ValueError, match="seconds"):
        fake.set_accept_slowly(-0.5)
    with pytest.raises(ValueError, match="status"):
        fake.accept_then_fail_next(status=99)
    with pytest.raises(ValueError, match="reject_status"):
        fake.set_token("x", reject_status=700)
    with pytest.raises(ValueError, match="url"):
        fake.echo_to("ftp://example.invalid/")
    with pytest.raises(ValueError, match="n must be"):
        fake.lookup_fail_next(-1)
    with pytest.raises(ValueError, match="accept_slowly_next"):
        fake.apply_faults({"fault": "accept_slowly_next"})  # seconds is required
    assert fake.statistics().pending_faults == 0


# -- separate process -----------------------------------------------------------------------------


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            raise EOFError(f"process ended before printing a line; got {line!r}")
        line += chunk
    return line


async def test_process_mode_serves_records_and_exits_0_on_sigterm() -> None:
    command = [sys.executable, "-m", "botd.testing.fake_chat2desk"]
    command += ["--host", "127.0.0.1", "--port", "0", "--token", "T"]
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            run = partial(trio.run_process, command, cwd=REPO_ROOT, stdout=subprocess.PIPE)
            process: trio.Process = await nursery.start(partial(run, check=False))
            assert process.stdout is not None
            line = (await read_line(process.stdout)).decode()
            assert line.startswith("listening http://127.0.0.1:") and line.endswith("/v1\n")
            base_url = line.split()[1]
            async with httpx.AsyncClient(timeout=5) as client:
                sent = await client.post(
                    f"{base_url}/messages", json=message(5, "hi"), headers={"Authorization": "T"}
                )
                listed = await client.get(base_url.removesuffix("/v1") + "/_fake/requests")
            process.send_signal(signal.SIGTERM)
            code = await process.wait()

    assert sent.status_code == 200
    assert [r["body"]["text"] for r in listed.json()["requests"]] == ["hi"]
    assert code == 0
