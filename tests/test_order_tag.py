"""The order tag (``dialog.order_tag``): a placed order's Chat2Desk request gets the tag.

The whole daemon in-process against the real services and the Chat2Desk fake: an order gives
one note and the tag on the request the note's answer named; no key, no tag; a tag call that
fails is retried without sending the note again; a tag Chat2Desk does not know is logged and the
note stays (no DLQ). Then :class:`OrderNotes` alone (stub broker and marker store, the real
Sender over the fake) for the attempts that cannot know the request: the client is tagged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from botd import daemon
from botd.bridge import AsyncioBridge
from botd.chat_api import ChatApi, Sender, Sent, open_chat_api
from botd.config import Config, load_config
from botd.errors import ConfigError, PermanentError
from botd.order_events import Change, OrderEvent, OrderPayload
from botd.order_notes import NOTE_SENT, NOTE_TYPE, OrderNotes, note_external_id, note_text
from botd.ratelimit import TokenBucket
from botd.testing.fake_chat2desk import FakeChat2Desk, RecordedRequest
from tests.helpers import (
    complete_order,
    running_daemon,
    say_and_wait,
    wait_until,
)

CLIENT = 17_555_002

say = partial(say_and_wait, client=CLIENT)
order_one = partial(complete_order, client=CLIENT)
TAG = 7


async def notes_handled(running: daemon.Running, n: int) -> None:
    """Wait until ``n`` note events are finished (delivered or dead-lettered)."""
    assert running.notes is not None
    stats = running.notes.stats
    await wait_until(lambda: stats.delivered + stats.dead_lettered >= n)


def note_sends(fake: FakeChat2Desk) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.method == "POST" and r.message_type == NOTE_TYPE]


async def test_an_order_tags_the_request_its_note_went_into(
    make_config: Callable[..., Config], fake: FakeChat2Desk
) -> None:
    config = make_config(dialog_order_tag=str(TAG))
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        await notes_handled(running, 1)
        tagged_after_order = fake.tag_assignments
        await say(http, running, "отмена")  # a cancel gets its note, not another tag
        await notes_handled(running, 2)
        assert running.notes is not None
        dead = running.notes.stats.dead_lettered

    request_id = fake.request_id_for(CLIENT)
    assert request_id is not None
    assert tagged_after_order == [
        {"tag_ids": [TAG], "assignee_type": "request", "assignee_id": request_id}
    ]
    assert fake.tag_assignments == tagged_after_order and len(fake.tag_requests) == 1
    assert [n["text"][:1] for n in fake.notes_for(CLIENT)] == ["🛒", "❌"]
    assert len(note_sends(fake)) == 2 and dead == 0


async def test_without_the_key_nothing_is_tagged(
    make_config: Callable[..., Config], fake: FakeChat2Desk
) -> None:
    config = make_config()
    assert config.dialog.order_tag == ""
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        await notes_handled(running, 1)
    assert len(fake.notes_for(CLIENT)) == 1
    assert fake.tag_requests == [] and fake.tag_assignments == []


@pytest.mark.parametrize("status", [503, 500])  # nothing taken / it may have been taken
async def test_a_failed_tag_call_is_retried_without_sending_the_note_again(
    make_config: Callable[..., Config], fake: FakeChat2Desk, status: int
) -> None:
    config = make_config(dialog_order_tag=str(TAG))
    fake.tag_fail_next(status=status)
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        await notes_handled(running, 1)
        assert running.notes is not None
        stats = running.notes.stats

    assert [r.status for r in fake.tag_requests] == [status, 200]
    assert fake.tag_assignments == [
        {"tag_ids": [TAG], "assignee_type": "request", "assignee_id": fake.request_id_for(CLIENT)}
    ]
    assert len(note_sends(fake)) == 1 and len(fake.notes_for(CLIENT)) == 1
    assert not any(r.method == "GET" for r in fake.requests)  # no lookup either: it knew
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (1, 1, 0)


async def test_an_unknown_tag_is_logged_and_the_note_is_not_dead_lettered(
    make_config: Callable[..., Config], fake: FakeChat2Desk, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(dialog_order_tag="10001")  # beyond the fake's tags: "Tag not found"
    caplog.set_level(logging.ERROR, logger="botd.order_notes")
    async with running_daemon(config) as running, httpx.AsyncClient() as http:
        await order_one(http, running)
        await notes_handled(running, 1)
        assert running.notes is not None
        stats = running.notes.stats

    assert (stats.delivered, stats.dead_lettered, stats.retried) == (1, 0, 0)
    assert [r.status for r in fake.tag_requests] == [400] and fake.tag_assignments == []
    assert len(fake.notes_for(CLIENT)) == 1 and len(note_sends(fake)) == 1
    (record,) = [r for r in caplog.records if r.name == "botd.order_notes"]
    assert record.levelno == logging.ERROR
    assert "dialog.order_tag" in record.getMessage() and "Tag not found" in record.getMessage()


# ---- the key's check --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "7", "10001"])
def test_order_tag_accepts_empty_or_digits(value: str) -> None:
    assert load_config(None, env={"BOTD_DIALOG_ORDER_TAG": value}).dialog.order_tag == value


@pytest.mark.parametrize("value", ["vip", "-7", "7 ", "1.5", "٣"])
def test_order_tag_refuses_anything_but_digits_and_names_the_fix(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"BOTD_DIALOG_ORDER_TAG": value})
    (problem,) = info.value.problems
    assert problem.startswith("BOTD_DIALOG_ORDER_TAG")
    assert "digits only" in problem and "GET /v1/tags" in problem


# ---- OrderNotes alone: when the request is not known, the client is tagged ---------------------


class MarkerStore:
    """The two StateStore calls OrderNotes makes, in memory."""

    def __init__(self) -> None:
        self.done: set[tuple[str, str]] = set()

    async def event_done(self, destination: str, event_id: str) -> bool:
        return (destination, event_id) in self.done

    async def mark_event_done(self, destination: str, event_id: str) -> None:
        self.done.add((destination, event_id))


def stub_broker() -> Any:
    """Enough of a Broker to build an EventDestination whose deliver() is called directly."""
    return SimpleNamespace(topology=SimpleNamespace(order_notes="notes"))


def placed_event(event_id: str = "3f2c0d4e-0000-4000-8000-000000000001") -> OrderEvent:
    return OrderEvent(
        id=event_id,
        type="order.placed",
        created="2026-11-25T10:00:00.000Z",
        order=OrderPayload(
            id=1042,
            status="placed",
            phone="+996555123456",
            address="ул. Токтогула 125, кв. 4",
            quantity=3,
            client_id=str(CLIENT),
            created_at="2026-11-25T10:00:00.000Z",
        ),
        change=Change(from_status=None, to="placed", by="customer"),
    )


@asynccontextmanager
async def open_notes(
    fake: FakeChat2Desk, store: MarkerStore, bridge: AsyncioBridge
) -> AsyncIterator[tuple[OrderNotes, ChatApi]]:
    config = load_config(
        None,
        env={
            "BOTD_DIALOG_ORDER_TAG": str(TAG),
            "BOTD_CHAT2DESK_BASE_URL": fake.base_url,
            "BOTD_CHAT2DESK_TOKEN": fake.token,
        },
    )
    async with open_chat_api(config.chat2desk, bridge) as api:
        sender = Sender(api, TokenBucket(60_000, 1_000), config.chat2desk)
        yield OrderNotes(stub_broker(), cast(Any, store), sender, config), api


async def test_a_note_found_by_lookup_tags_the_client(
    fake: FakeChat2Desk, bridge: AsyncioBridge
) -> None:
    """An earlier attempt sent the note but its answer was lost (``unsure``): the lookup finds
    it, nothing is sent again, and with no answer naming the request the client is tagged."""
    event, store = placed_event(), MarkerStore()
    async with open_notes(fake, store, bridge) as (notes, api):
        text = note_text(event, "ru")
        external_id = note_external_id(event.id)
        await api.send_message(str(CLIENT), text, external_id=external_id, message_type="comment")
        assert await notes.deliver(event, unsure=True)

    assert len(note_sends(fake)) == 1 and len(fake.notes_for(CLIENT)) == 1
    assert fake.tag_assignments == [
        {"tag_ids": [TAG], "assignee_type": "client", "assignee_id": CLIENT}
    ]
    assert (NOTE_SENT, event.id) in store.done


async def test_a_note_marked_sent_is_not_sent_and_the_client_is_tagged(
    fake: FakeChat2Desk,
    bridge: AsyncioBridge,
) -> None:
    """The note marker says an attempt before a restart sent the note: no send, no lookup."""
    event, store = placed_event(), MarkerStore()
    store.done.add((NOTE_SENT, event.id))
    async with open_notes(fake, store, bridge) as (notes, _):
        assert await notes.deliver(event, unsure=True)

    assert fake.requests == []
    assert fake.tag_assignments == [
        {"tag_ids": [TAG], "assignee_type": "client", "assignee_id": CLIENT}
    ]


async def test_a_fresh_note_is_marked_sent_before_its_tag_is_tried(
    fake: FakeChat2Desk, bridge: AsyncioBridge
) -> None:
    event, store = placed_event(), MarkerStore()
    fake.tag_fail_next(status=503)
    async with open_notes(fake, store, bridge) as (notes, _):
        with pytest.raises(Exception, match="503"):
            await notes.deliver(event, unsure=False)
        marked = (NOTE_SENT, event.id) in store.done
        assert await notes.deliver(event, unsure=False)  # the retry: the tag only

    assert marked and len(note_sends(fake)) == 1
    assert [r.status for r in fake.tag_requests] == [503, 200]
    assert fake.tag_assignments[0]["assignee_type"] == "request"


# ---- ChatApi: the answer's request id, the tag call ------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"message_id": 5, "request_id": 8725095}, Sent("5", 8725095)),
        ({"message_id": 5, "request_id": "8725095"}, Sent("5", 8725095)),
        ({"message_id": 5, "request_id": None}, Sent("5", None)),
        ({"message_id": 5}, Sent("5", None)),
        ({"message_id": 5, "request_id": True}, Sent("5", None)),
    ],
)
async def test_send_message_sent_reads_the_request_id(data: dict[str, Any], expected: Sent) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "data": data})

    config = load_config(None, env={}).chat2desk
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        api = ChatApi(config, client)
        assert await api.send_message_sent("17", "hi", message_type="comment") == expected
        assert await api.send_message("17", "hi") == "5"  # unchanged: the message id


async def test_assign_tag_posts_the_documented_body_and_classifies_the_answer() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(200, json={"status": "success"}),
        httpx.Response(400, json={"status": "error", "message": "Tag not found"}),
    ]

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    config = load_config(None, env={"BOTD_CHAT2DESK_BASE_URL": "http://c2d.invalid/v1/"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sender = Sender(ChatApi(config.chat2desk, client), TokenBucket(60, 1), config.chat2desk)
        await sender.assign_tag(7, assignee_type="request", assignee_id=8725095)
        with pytest.raises(PermanentError, match="Tag not found"):
            await sender.assign_tag(99999, assignee_type="client", assignee_id=17)

    assert [str(r.url) for r in seen] == ["http://c2d.invalid/v1/tags/assign_to"] * 2
    assert httpx.Response(200, content=seen[0].content).json() == {
        "tag_ids": [7],
        "assignee_type": "request",
        "assignee_id": 8725095,
    }
