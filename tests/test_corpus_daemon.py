"""A sample of the conversation corpus through the real daemon, against ``botd chat --script``.

Every sampled conversation is posted, line by line, to the webhook of an in-process daemon
(RabbitMQ → shard consumer → Redis → PostgreSQL, replies to the Chat2Desk fake), as a customer of
its own. The daemon must leave the same orders and send the same replies as the in-memory runner
that scores the whole corpus — so the corpus figures are the daemon's figures — and no wrong order.
Conversations with virtual time (``wait``), operators or raw webhook bodies are left to the
in-memory runner: real time cannot be skipped here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import trio

from botd.config import Config
from botd.daemon import Running
from botd.memory import OrderRow
from botd.script import Say, bot_settings, run_script
from botd.testing import corpus
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.helpers import next_message_id, orders, post_webhook

CORPUS = Path(__file__).resolve().parent / "conversations"
SAMPLE_EVERY = 40  # one conversation in this many, spread over sets, classes and languages
FIRST_CLIENT = 77_000_000


def sample() -> list[corpus.Conversation]:
    every = corpus.load_corpus(CORPUS)
    talk_only = [c for c in every if all(isinstance(i, Say) and _customer(i) for i in c.inputs)]
    return talk_only[::SAMPLE_EVERY]


def _customer(item: Say) -> bool:
    return set(item.source) <= {"text", "location", "contact", "media"}


def _numbers_out(text: str) -> str:
    """Order numbers differ between PostgreSQL and the memory store; the rest must not."""
    return re.sub(r"(№|#)\d+", r"\1N", text)


async def _say(
    client: httpx.AsyncClient, running: Running, body: dict[str, Any], client_id: int
) -> None:
    body = {**body, "client_id": client_id, "message_id": next_message_id()}
    handled = running.consumers.handled
    response = await post_webhook(client, running.url, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "queued"}
    with trio.fail_after(15):
        await running.consumers.wait_handled(handled + 1)


async def test_the_daemon_agrees_with_the_script_runner_on_a_corpus_sample(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    conversations = sample()
    assert len(conversations) >= 10, "the sample must cover a real part of the corpus"
    settings = bot_settings(config)
    async with httpx.AsyncClient() as client:
        for n, conversation in enumerate(conversations):
            client_id = FIRST_CLIENT + n
            for item in conversation.inputs:
                assert isinstance(item, Say)
                await _say(client, running, item.body, client_id)
            rows = [
                OrderRow(
                    id=row["id"],
                    key=row["idempotency_key"],
                    client_id=row["chat2desk_client_id"],
                    phone=row["client_phone"],
                    address=row["delivery_address"],
                    quantity=row["quantity"],
                    status=row["status"],
                )
                for row in orders(config.postgres.dsn)
                if row["chat2desk_client_id"] == str(client_id)
            ]
            memory = await run_script(conversation.inputs, settings)
            where = f"{conversation.path.relative_to(CORPUS)}"
            assert [(r.phone, r.address, r.quantity, r.status) for r in rows] == [
                (r.phone, r.address, r.quantity, r.status) for r in memory.orders
            ], where
            script_replies = [e["reply"] for e in memory.events if "reply" in e]
            assert [_numbers_out(t) for t in fake.texts_for(client_id)] == [
                _numbers_out(t) for t in script_replies
            ], where
            assert corpus.wrong_orders(rows, conversation.orders) == 0, where
