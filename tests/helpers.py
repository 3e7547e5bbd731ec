"""Small helpers shared by the integration tests."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import psycopg

_ids = itertools.count(10_000_000)


def next_message_id() -> int:
    return next(_ids)


def inbox_payload(
    client_id: int | str, text: str | None, *, message_id: int | None = None, **extra: Any
) -> dict[str, Any]:
    """A Chat2Desk ``inbox`` webhook body as the real platform sends it."""
    body: dict[str, Any] = {
        "message_id": message_id if message_id is not None else next_message_id(),
        "type": "from_client",
        "text": text,
        "transport": "telegram",
        "client_id": client_id,
        "operator_id": None,
        "dialog_id": None,
        "channel_id": 17,
        "photo": None,
        "coordinates": None,
        "audio": None,
        "pdf": None,
        "client": {"id": client_id, "phone": "[tg] 807892", "client_phone": None, "name": "Peter"},
        "hook_type": "inbox",
        "request_id": 8725057,
        "attachments": [],
        "is_new_request": True,
        "is_new_client": False,
        "extra_data": {},
        "event_time": "2026-11-25T10:00:00Z",
    }
    body.update(extra)
    return body


async def post_webhook(
    client: httpx.AsyncClient, url: str, body: Any, **kwargs: Any
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return await client.post(f"{url}/webhook/chat2desk", content=content, headers=headers, **kwargs)


def orders(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM orders ORDER BY id")
        return list(cur.fetchall())


HAPPY_PATH = (
    "Здравствуйте, хочу заказать воду",
    "ул. Токтогула 125, кв. 4",
    "0555 123 456",
    "3",
    "да",
)
