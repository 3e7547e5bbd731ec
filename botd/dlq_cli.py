"""``botd dlq list | show ID | replay (ID | --all) | purge [--yes]``: the dead-letter queue.

The DLQ holds three kinds of message, told apart by the ``x-botd-kind`` header and the broker's
``x-death`` headers:
- ``reply`` — a reply botd gave up on (permanent API error, max attempts, older than 7 days);
- ``message`` — a customer message dead-lettered by the broker (poison: over the delivery
  limit, rejected as malformed, or expired after 24 h in its shard queue);
- ``outbox`` — a parked batch of replies that expired in the outbox;
- ``shop_event`` — an order event the shop's webhook did not take (``shop_webhook``);
- ``order_note`` — an order note Chat2Desk did not take.

``replay`` publishes (confirmed) a message back where it can succeed — a customer message to its
shard (processing is idempotent by message_id), replies to the outbox, order events to their
queue (``shop_events`` or ``order_notes``: the receiver dedupes on the event id) — and only then
removes it from the DLQ. IDs are the AMQP message ids; any unique prefix works.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import trio

from botd.bridge import open_bridge
from botd.broker import Broker, Browsed, Browser, layout, open_broker
from botd.config import Config
from botd.errors import InvalidInput
from botd.inbound import decode_queued, shard_of
from botd.order_events import (
    ATTEMPTS_HEADER,
    NOTE_KIND,
    REASON_HEADER,
    SHOP_EVENT_KIND,
    decode_event,
)
from botd.outbox import KIND_HEADER, DeadReply, OutboxBatch

BROWSE_LIMIT = 10_000
# kind header → the Topology attribute naming the queue a replay goes back to
EVENT_QUEUES = {SHOP_EVENT_KIND: "shop_events", NOTE_KIND: "order_notes"}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Entry:
    """One DLQ message as the operator sees it."""

    message: Browsed
    kind: str
    client_id: str
    reason: str
    attempts: str
    age_seconds: float | None
    body: Any


def _death(headers: dict[str, Any]) -> tuple[str, str, float | None]:
    """(reason, source queue, time) of the first dead-lettering recorded by the broker."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        first: dict[str, Any] = deaths[0]
        when = first.get("time")
        stamp = when.timestamp() if isinstance(when, datetime) else None
        count = first.get("count")
        reason = str(first.get("reason", "?"))
        if count:
            reason += f" (×{count})"
        return reason, str(first.get("queue", "?")), stamp
    first_reason = headers.get("x-first-death-reason")
    first_queue = headers.get("x-first-death-queue")
    return (str(first_reason or "?"), str(first_queue or "?"), None)


def _decode_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def classify(message: Browsed, now: float) -> Entry:
    headers = message.headers
    body = _decode_body(message.body)
    kind = headers.get(KIND_HEADER)
    age = None if message.timestamp is None else max(0.0, now - message.timestamp)
    if isinstance(kind, bytes):
        kind = kind.decode()
    if kind in EVENT_QUEUES and isinstance(body, dict):
        found = body.get("order")
        order: dict[str, Any] = found if isinstance(found, dict) else {}
        return Entry(
            message,
            str(kind),
            str(order.get("client_id", "?")),
            f"{body.get('type', '?')} of order {order.get('id', '?')}: "
            + _text(headers.get(REASON_HEADER, "?")),
            _text(headers.get(ATTEMPTS_HEADER, "?")),
            age,
            body,
        )
    if kind == "reply" and isinstance(body, dict):
        return Entry(
            message,
            "reply",
            str(body.get("client_id", "?")),
            str(body.get("reason", "?")),
            str(body.get("attempts", "?")),
            age,
            body,
        )
    reason, queue, died_at = _death(headers)
    if died_at is not None:
        age = max(0.0, now - died_at)
    client = str(body.get("client_id", "?")) if isinstance(body, dict) else "?"
    if kind == "outbox":
        attempts = str(body.get("attempts", "?")) if isinstance(body, dict) else "?"
        return Entry(message, "outbox", client, f"{reason} in {queue}", attempts, age, body)
    return Entry(message, "message", client, f"{reason} in {queue}", "-", age, body)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(entries: list[Entry]) -> None:
    print(f"{'ID':<14} {'KIND':<10} {'CUSTOMER':<12} {'AGE':>6} {'ATTEMPTS':>8}  REASON")
    for e in entries:
        print(
            f"{e.message.id[:12]:<14} {e.kind:<10} {e.client_id:<12} {_age(e.age_seconds):>6} "
            f"{e.attempts:>8}  {_short(e.reason, 70)}"
        )
    print(f"{len(entries)} message(s) in the DLQ")


async def _replay(broker: Broker, browser: Browser, entry: Entry, config: Config) -> None:
    topology = broker.topology
    raw = entry.message.body
    if entry.kind in EVENT_QUEUES:
        decode_event(raw)  # refuses what is not an order event (left in the DLQ)
        queue = getattr(topology, EVENT_QUEUES[entry.kind])
        await broker.publish(
            queue, raw, timeout=broker.publish_timeout, headers={KIND_HEADER: entry.kind}
        )
    elif entry.kind == "reply":
        dead = msgspec.json.decode(raw, type=DeadReply)
        batch = OutboxBatch(
            id=f"replay.{entry.message.id}",
            client_id=dead.client_id,
            texts=(dead.text,),
            attempts=0,
            first_failed_at=time.time(),
            origin_message_id=dead.origin_message_id,
            reason=f"replayed from the DLQ (was: {dead.reason})",
        )
        await broker.publish(
            topology.outbox,
            msgspec.json.encode(batch),
            timeout=broker.publish_timeout,
            headers={KIND_HEADER: "outbox"},
        )
    elif entry.kind == "outbox":
        batch = msgspec.json.decode(raw, type=OutboxBatch)
        batch = msgspec.structs.replace(batch, attempts=0, first_failed_at=time.time())
        await broker.publish(
            topology.outbox,
            msgspec.json.encode(batch),
            timeout=broker.publish_timeout,
            headers={KIND_HEADER: "outbox"},
        )
    else:
        msg = decode_queued(raw)
        shard = shard_of(msg.client_id, config.rabbitmq.shards)
        await broker.publish(topology.shard(shard), raw, timeout=broker.publish_timeout)
    await browser.ack(entry.message)


def _pick(entries: list[Entry], ident: str) -> Entry:
    found = [e for e in entries if e.message.id.startswith(ident)]
    if not found:
        raise LookupError(f"no DLQ message with id {ident!r}")
    if len(found) > 1:
        raise LookupError(
            f"id {ident!r} is ambiguous ({len(found)} messages); give more characters"
        )
    return found[0]


async def _with_dlq(
    config: Config, action: Callable[[Broker, Browser, list[Entry]], Awaitable[int]]
) -> int:
    async with (
        open_bridge() as bridge,
        open_broker(bridge, config.rabbitmq, **layout(config)) as broker,
    ):
        await broker.connect_once()
        async with broker.browse(broker.topology.dlq, limit=BROWSE_LIMIT) as browser:
            now = time.time()
            entries = [classify(m, now) for m in browser.messages]
            return await action(broker, browser, entries)


def main(config: Config, args: argparse.Namespace) -> int:
    command = args.dlq_command

    async def act(broker: Broker, browser: Browser, entries: list[Entry]) -> int:
        if command == "list":
            print_table(entries)
            return 0
        if command == "show":
            entry = _pick(entries, args.id)
            print(
                json.dumps(
                    {
                        "id": entry.message.id,
                        "kind": entry.kind,
                        "customer": entry.client_id,
                        "reason": entry.reason,
                        "attempts": entry.attempts,
                        "age": _age(entry.age_seconds),
                        "headers": entry.message.headers,
                        "body": entry.body,
                    },
                    ensure_ascii=False,
                    indent=2,
                    default=str,
                )
            )
            return 0
        if command == "replay":
            chosen = entries if args.all else [_pick(entries, args.id)]
            replayed = 0
            for entry in chosen:
                try:
                    await _replay(broker, browser, entry, config)
                except (InvalidInput, msgspec.MsgspecError) as exc:
                    # Not replayable (e.g. a malformed customer message): say so, leave it in
                    # the DLQ and go on with the others.
                    print(
                        f"botd dlq: cannot replay {entry.message.id[:12]} ({entry.kind}): {exc}; "
                        "left in the DLQ",
                        file=sys.stderr,
                    )
                    continue
                replayed += 1
                print(
                    f"replayed {entry.message.id[:12]} ({entry.kind}, customer {entry.client_id})"
                )
            print(f"{replayed} message(s) replayed")
            return 0 if replayed == len(chosen) else 1
        raise AssertionError(command)

    if command == "purge":
        return _purge(config, yes=args.yes)
    try:
        return trio.run(_with_dlq, config, act)
    except LookupError as exc:
        print(f"botd dlq: {exc.args[0]}", file=sys.stderr)
        return 1


def _purge(config: Config, *, yes: bool) -> int:
    if not yes:
        if not sys.stdin.isatty():
            print(
                "botd dlq purge: refusing without --yes (stdin is not a terminal)", file=sys.stderr
            )
            return 2
        answer = input(f"Delete every message in {config.rabbitmq.queue_prefix}.dlq? Type 'yes': ")
        if answer.strip().lower() != "yes":
            print("not purged")
            return 1

    async def purge() -> int:
        async with (
            open_bridge() as bridge,
            open_broker(bridge, config.rabbitmq, **layout(config)) as broker,
        ):
            await broker.connect_once()
            return await broker.purge(broker.topology.dlq)

    print(f"purged {trio.run(purge)} message(s)")
    return 0
