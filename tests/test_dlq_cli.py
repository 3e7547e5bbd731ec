"""``botd dlq list | show ID | replay (ID | --all) | purge [--yes]`` (docs/design.md §3.5, §8).

The CLI runs as a real subprocess (``python -m botd --config /dev/null dlq …``) with the test's
config in its environment, against the test's queues, while the daemon runs in-process: what a
replay puts back is processed and delivered to the Chat2Desk fake.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import msgspec
import trio

from botd.config import Config
from botd.daemon import Running
from botd.dialog import Reply, render
from botd.inbound import QueuedMessage, shard_of
from botd.outbox import KIND_HEADER, OutboxBatch
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.helpers import inbox_payload, post_webhook, subprocess_env

GREETING = "Привет"
REJECTED_400, REJECTED_404, POISON_CLIENT, EXPIRED_CLIENT = 6101, 6102, 6103, 6104
BOT_GREETING = render(Reply("greeting"), "ru")  # the bot's first reply of every dialog


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


async def botd_dlq(config: Config, *args: str, stdin: bytes = b"") -> Result:
    """Run ``botd dlq ARGS`` as a subprocess (stdin is a pipe, i.e. not a terminal)."""
    env = subprocess_env(config)
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "botd", "--config", os.devnull, "dlq", *args],
            env=env,
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return Result(result.returncode, result.stdout.decode(), result.stderr.decode())


async def eventually_depth(running: Running, queue: str, n: int, timeout: float = 15) -> None:
    with trio.fail_after(timeout):
        while await running.broker.queue_depth(queue) != n:
            await trio.sleep(0.05)


async def dlq_depth(running: Running) -> int:
    return await running.broker.queue_depth(running.broker.topology.dlq)


async def populate(running: Running, fake: FakeChat2Desk) -> None:
    """Four DLQ messages, one of each origin:

    - two replies the API refused for good (400, 404) — dead-lettered by botd;
    - a malformed customer message, rejected by the consumer — dead-lettered by the broker;
    - a parked batch that expired in the outbox (as the broker dead-letters it).
    """
    broker = running.broker
    async with httpx.AsyncClient() as http:
        for client, status in ((REJECTED_400, 400), (REJECTED_404, 404)):
            fake.reject_next(1, status=status)
            handled = running.consumers.handled
            response = await post_webhook(http, running.url, inbox_payload(client, GREETING))
            assert response.json() == {"status": "queued"}
            with trio.fail_after(15):
                await running.consumers.wait_handled(handled + 1)
    poison = json.dumps({"client_id": str(POISON_CLIENT), "text": "no message_id"}).encode()
    await broker.publish(broker.topology.shard(shard_of(str(POISON_CLIENT), 2)), poison, timeout=5)
    expired = OutboxBatch(
        id="expired.1",
        client_id=str(EXPIRED_CLIENT),
        texts=("expired reply one", "expired reply two"),
        attempts=50,
        first_failed_at=time.time() - 8 * 86400,
        origin_message_id="900",
        reason="chat2desk answered 503",
    )
    await broker.publish(
        broker.topology.dlq,
        msgspec.json.encode(expired),
        timeout=5,
        headers={
            KIND_HEADER: "outbox",
            "x-first-death-reason": "expired",
            "x-first-death-queue": broker.topology.outbox,
        },
    )
    await eventually_depth(running, broker.topology.dlq, 4)


ROW = re.compile(
    r"^(?P<id>\S+)\s+(?P<kind>reply|message|outbox)\s+(?P<customer>\S+)\s+(?P<age>\S+)\s+"
    r"(?P<attempts>\S+)\s+(?P<reason>.+)$"
)


def rows(out: str) -> dict[str, dict[str, str]]:
    """The table of ``dlq list`` by customer."""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "CUSTOMER", "AGE", "ATTEMPTS", "REASON"]
    table = {}
    for line in lines[1:-1]:
        m = ROW.match(line)
        assert m, line
        table[m["customer"]] = m.groupdict()
    return table


def ids_by_customer(table: dict[str, dict[str, str]]) -> dict[str, str]:
    return {customer: row["id"] for customer, row in table.items()}


async def listed(config: Config) -> dict[str, dict[str, str]]:
    result = await botd_dlq(config, "list")
    assert result.code == 0, result.err
    return rows(result.out)


async def test_list_shows_id_customer_age_reason_attempts(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    await populate(running, fake)
    result = await botd_dlq(config, "list")
    assert result.code == 0, result.err
    print("\n" + result.out)
    assert result.out.splitlines()[-1] == "4 message(s) in the DLQ"
    table = rows(result.out)
    prefix = config.rabbitmq.queue_prefix
    poison_shard = f"{prefix}.shard.{shard_of(str(POISON_CLIENT), 2)}"
    expected = {
        str(REJECTED_400): ("reply", "1", "chat2desk answered 400: Validation failed"),
        str(REJECTED_404): ("reply", "1", "chat2desk answered 404: Page not found"),
        str(POISON_CLIENT): ("message", "-", f"rejected (×1) in {poison_shard}"),
        str(EXPIRED_CLIENT): ("outbox", "50", f"expired in {prefix}.outbox"),
    }  # fmt: skip
    assert {c: (r["kind"], r["attempts"], r["reason"]) for c, r in table.items()} == expected
    assert all(re.fullmatch(r"\d+s", r["age"]) for r in table.values())  # seconds old
    assert len({r["id"] for r in table.values()}) == 4  # distinct ids
    assert await dlq_depth(running) == 4  # listing removes nothing


async def test_list_of_an_empty_dlq(running: Running, config: Config) -> None:
    result = await botd_dlq(config, "list")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1:] == ["0 message(s) in the DLQ"]


async def test_show_prints_one_message_whole_as_json(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    await populate(running, fake)
    ids = ids_by_customer(await listed(config))
    result = await botd_dlq(config, "show", ids[str(REJECTED_400)][:6])  # a prefix is enough
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["id"].startswith(ids[str(REJECTED_400)])
    assert shown["kind"] == "reply" and shown["customer"] == str(REJECTED_400)
    assert shown["reason"] == "chat2desk answered 400: Validation failed"
    assert shown["attempts"] == "1" and shown["age"].endswith("s")
    assert shown["headers"][KIND_HEADER] == "reply"
    body = shown["body"]
    assert body["client_id"] == str(REJECTED_400) and body["attempts"] == 1
    assert body["text"] == BOT_GREETING
    assert body["reason"] == shown["reason"] and body["dead_at"] >= body["first_failed_at"]

    poison = json.loads((await botd_dlq(config, "show", ids[str(POISON_CLIENT)])).out)
    assert poison["kind"] == "message" and poison["body"]["text"] == "no message_id"
    assert poison["headers"]["x-first-death-reason"] == "rejected"
    assert await dlq_depth(running) == 4


async def test_unknown_or_ambiguous_id_exits_1(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    await populate(running, fake)
    for action in ("show", "replay"):
        result = await botd_dlq(config, action, "nosuchid")
        assert result.code == 1
        assert "no DLQ message with id 'nosuchid'" in result.err
    ids = list(ids_by_customer(await listed(config)).values())
    # the shortest prefix two ids share is ambiguous (exit 1, nothing replayed)
    shared = next(
        (a[:n] for n in range(8, 0, -1) for a in ids for b in ids if a != b and a[:n] == b[:n]),
        None,
    )
    if shared is not None:
        result = await botd_dlq(config, "replay", shared)
        assert result.code == 1 and "ambiguous" in result.err
    assert await dlq_depth(running) == 4


async def test_replay_one_by_id_prefix_delivers_it_once(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    await populate(running, fake)
    ids = ids_by_customer(await listed(config))
    reply_id = ids[str(REJECTED_400)]
    result = await botd_dlq(config, "replay", reply_id[:8])
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"replayed {reply_id} (reply, customer {REJECTED_400})",
        "1 message(s) replayed",
    ]
    want = BOT_GREETING
    with trio.fail_after(15):
        while want not in fake.texts_for(REJECTED_400):
            await fake.wait_for_deliveries(len(fake.delivered()) + 1)
    assert await dlq_depth(running) == 3
    assert str(REJECTED_400) not in await listed(config)
    # replaying the same id again finds nothing: no second copy
    again = await botd_dlq(config, "replay", reply_id[:8])
    assert again.code == 1 and "no DLQ message" in again.err
    await eventually_depth(running, running.broker.topology.outbox, 0)
    assert fake.texts_for(REJECTED_400).count(want) == 1


async def test_replay_all(running: Running, fake: FakeChat2Desk, config: Config) -> None:
    await populate(running, fake)
    ids = ids_by_customer(await listed(config))
    result = await botd_dlq(config, "replay", "--all")
    # the malformed customer message cannot be replayed: reported, kept, exit 1; the rest go
    assert result.code == 1
    assert f"cannot replay {ids[str(POISON_CLIENT)]} (message)" in result.err
    assert result.out.splitlines()[-1] == "3 message(s) replayed"
    assert "Traceback" not in result.err
    with trio.fail_after(15):
        while len(fake.texts_for(EXPIRED_CLIENT)) < 2 or len(fake.delivered()) < 6:
            await fake.wait_for_deliveries(len(fake.delivered()) + 1)
    greeting = BOT_GREETING
    assert fake.texts_for(REJECTED_400).count(greeting) == 1
    assert fake.texts_for(REJECTED_404).count(greeting) == 1
    assert fake.texts_for(EXPIRED_CLIENT) == ["expired reply one", "expired reply two"]
    assert (await listed(config)).keys() == {str(POISON_CLIENT)}


async def test_replay_of_a_dead_lettered_customer_message_processes_it(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    broker = running.broker
    client = 6201
    message = QueuedMessage(
        message_id="77001", client_id=str(client), text=GREETING, received_at=time.time()
    )
    await broker.publish(
        broker.topology.dlq,
        msgspec.json.encode(message),
        timeout=5,
        headers={"x-first-death-reason": "delivery_limit", "x-first-death-queue": "shard"},
    )
    await eventually_depth(running, broker.topology.dlq, 1)
    (row,) = (await listed(config)).values()
    assert row["kind"] == "message" and row["customer"] == str(client)
    handled = running.consumers.handled
    result = await botd_dlq(config, "replay", row["id"])
    assert result.code == 0, result.err
    with trio.fail_after(15):
        await running.consumers.wait_handled(handled + 1)
    assert len(fake.texts_for(client)) == 2  # the dialog's answer to it
    # a second replay of the same message is deduplicated by its message_id
    await broker.publish(broker.topology.dlq, msgspec.json.encode(message), timeout=5)
    await eventually_depth(running, broker.topology.dlq, 1)
    assert (await botd_dlq(config, "replay", "--all")).code == 0
    with trio.fail_after(15):
        await running.consumers.wait_handled(handled + 2)
    assert len(fake.texts_for(client)) == 2
    assert running.consumers.stats.duplicates == 1


async def test_purge_with_yes(running: Running, fake: FakeChat2Desk, config: Config) -> None:
    await populate(running, fake)
    result = await botd_dlq(config, "purge", "--yes")
    assert result.code == 0, result.err
    assert result.out.strip() == "purged 4 message(s)"
    assert await dlq_depth(running) == 0


async def test_purge_without_yes_refuses_on_a_non_terminal(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    await populate(running, fake)
    result = await botd_dlq(config, "purge", stdin=b"yes\n")
    assert result.code == 2
    assert "refusing without --yes" in result.err
    assert await dlq_depth(running) == 4


async def purge_on_a_terminal(config: Config, answer: bytes) -> Result:
    """``botd dlq purge`` with a pseudo-terminal as stdin, answering the question."""
    env = subprocess_env(config)
    controller, terminal = pty.openpty()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "botd", "--config", os.devnull, "dlq", "purge"],
            env=env,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.write(controller, answer)
        stdout, stderr = process.stdout, process.stderr
        assert stdout is not None and stderr is not None
        out, err = b"", b""
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:

                async def read_err() -> None:
                    nonlocal err
                    async for chunk in stderr:
                        err += chunk

                nursery.start_soon(read_err)
                async for chunk in stdout:
                    out += chunk
            code = await process.wait()
    finally:
        os.close(controller)
        os.close(terminal)
    return Result(code, out.decode(), err.decode())


async def test_purge_asks_on_a_terminal(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    await populate(running, fake)
    declined = await purge_on_a_terminal(config, b"no\n")
    assert declined.code == 1, declined.err
    assert f"Delete every message in {config.rabbitmq.queue_prefix}.dlq?" in declined.out
    assert "not purged" in declined.out
    assert await dlq_depth(running) == 4
    accepted = await purge_on_a_terminal(config, b"yes\n")
    assert accepted.code == 0, accepted.err
    assert "purged 4 message(s)" in accepted.out
    assert await dlq_depth(running) == 0


async def test_usage_errors_exit_2(config: Config) -> None:
    for args in (["replay"], ["replay", "abc", "--all"], ["show"], ["frobnicate"], []):
        result = await botd_dlq(config, *args)
        assert result.code == 2, (args, result)
        assert "usage:" in result.err
