"""The aiohttp reply client (botd.aio_http): its answers, and how its failures are classified.

Against the Chat2Desk fake over real HTTP, through a real bridge. Which httpx error a failure
becomes decides whether a reply may be sent again at once (nothing reached Chat2Desk) or must be
looked up first (it may have gone out): the cases here are the ones that matter for that.
"""

from __future__ import annotations

import socket

import httpx
import pytest
import trio

from botd.aio_http import AioClient
from botd.bridge import AsyncioBridge
from botd.chat_api import ChatApi
from botd.errors import DeliveryUnknown, TransientError
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.test_sender import CLIENT, c2d_config


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def open_client(bridge: AsyncioBridge, fake: FakeChat2Desk, timeout: float) -> AioClient:
    client = AioClient(bridge, headers={"Authorization": fake.token}, timeout_seconds=timeout)
    await client.open()
    return client


async def test_post_and_get_answer_status_headers_and_json(
    bridge: AsyncioBridge, fake: FakeChat2Desk
) -> None:
    client = await open_client(bridge, fake, 5)
    try:
        body = {"client_id": int(CLIENT), "text": "привет", "type": "to_client"}
        sent = await client.post(fake.base_url + "/messages", json=body)
        assert sent.status_code == 200
        assert sent.headers.get("Content-Type", "").startswith("application/json")
        assert sent.json()["status"] == "success"
        page = await client.get(fake.base_url + "/messages", params={"client_id": CLIENT})
        assert page.status_code == 200
        assert [m["text"] for m in page.json()["data"]] == ["привет"]
    finally:
        await client.aclose()
    assert fake.texts_for(CLIENT) == ["привет"]
    assert [r.method for r in fake.requests] == ["POST", "GET"]


async def test_refused_connection_is_unreachable_not_unknown(
    bridge: AsyncioBridge, fake: FakeChat2Desk
) -> None:
    client = await open_client(bridge, fake, 2)
    try:
        url = f"http://127.0.0.1:{closed_port()}/v1/messages"
        with pytest.raises(httpx.ConnectError):
            await client.post(url, json={"text": "x"})
        api = ChatApi(c2d_config(f"http://127.0.0.1:{closed_port()}/v1"), client)
        with pytest.raises(TransientError) as caught:
            await api.send_message(CLIENT, "hello")
        assert not isinstance(caught.value, DeliveryUnknown)  # nothing went out: resend at once
    finally:
        await client.aclose()


async def test_no_answer_in_time_is_unknown(bridge: AsyncioBridge, fake: FakeChat2Desk) -> None:
    client = await open_client(bridge, fake, 0.3)
    fake.hang_next(1)
    try:
        api = ChatApi(c2d_config(fake.base_url, timeout_seconds=0.3), client)
        with pytest.raises(DeliveryUnknown, match="timed out"):
            await api.send_message(CLIENT, "hello")
        assert await api.send_message(CLIENT, "again")  # the pool still works
    finally:
        await client.aclose()
    assert [r.status for r in fake.requests] == [None, 200]


async def test_a_cancelled_call_unwinds_and_the_next_call_is_answered_its_own(
    bridge: AsyncioBridge, fake: FakeChat2Desk
) -> None:
    client = await open_client(bridge, fake, 5)
    fake.accept_slowly_next(1, seconds=1.0)  # stored at once, answered late
    try:
        with trio.move_on_after(0.2) as scope:
            await client.post(fake.base_url + "/messages", json={"client_id": 1, "text": "a"})
        assert scope.cancelled_caught
        # the next call must not read the late answer of the cancelled one
        answer = await client.post(
            fake.base_url + "/messages", json={"client_id": 2, "text": "b", "type": "to_client"}
        )
        stored = fake.stored_messages(2)
        assert answer.json()["data"]["message_id"] == stored[0]["id"]
    finally:
        await client.aclose()


async def test_a_closed_client_reaches_nothing(bridge: AsyncioBridge, fake: FakeChat2Desk) -> None:
    client = await open_client(bridge, fake, 5)
    await client.aclose()
    with pytest.raises(httpx.ConnectError, match="closed"):
        await client.post(fake.base_url + "/messages", json={"client_id": 1, "text": "a"})
    assert fake.requests == []
