"""The Chat2Desk fake: success shape, errors, every fault kind, the control API, process mode."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from botd.testing.fake_chat2desk import FakeChat2Desk, open_fake_chat2desk

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


# -- normal answers ----------------------------------------------------------------------------


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


# -- faults --------------------------------------------------------------------------------------


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


# -- separate process ---------------------------------------------------------------------------


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
