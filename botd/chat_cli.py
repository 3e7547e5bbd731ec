"""``botd chat``: talk to the bot in a terminal, as a customer would.

Three modes:

- ``botd chat``: each line you type goes to the bot running in this process over the in-memory
  adapters (:mod:`botd.script`) — the real webhook validation, processor and dialog, no service
  at all; timers fire on the wall clock. Nothing is saved.
- ``botd chat --script FILE``: runs a conversation script (``tests/conversations/README.md``)
  on a virtual clock and prints one JSON line per event; exit 2 names a bad line.
- ``botd chat --live``: each line is posted to a private botd's webhook as a Chat2Desk ``inbox``
  event and goes the whole way — webhook → RabbitMQ → shard consumer → dialog → Redis →
  PostgreSQL — with the Chat2Desk API replaced by a local sink that prints the replies. The
  session uses the configured services but its own queue and key prefixes (so a running botd is
  not disturbed) and deletes its queues when it ends. Orders are real rows in the configured
  database (source 'chat2desk', customer id shown at the start).

The interactive modes end with Ctrl-D or ``/quit``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import httpx
import trio

from botd import daemon, logs
from botd.bridge import open_bridge
from botd.broker import layout, open_broker
from botd.config import Config
from botd.script import Bot, ScriptError, bot_settings, inbox_body, parse_script, run_script
from botd.testing.fake_chat2desk import open_fake_chat2desk

TOKEN = "botd-chat"  # noqa: S105 - the local sink's token, not a secret


def _session_config(config: Config, session: str) -> Config:
    return dataclasses.replace(
        config,
        webhook=dataclasses.replace(
            config.webhook, host="127.0.0.1", port=0, path_token="", hmac_secret=""
        ),
        rabbitmq=dataclasses.replace(
            config.rabbitmq, queue_prefix=f"{config.rabbitmq.queue_prefix}.chat-{session}", shards=1
        ),
        redis=dataclasses.replace(
            config.redis, key_prefix=f"{config.redis.key_prefix}chat-{session}:"
        ),
        chat2desk=dataclasses.replace(config.chat2desk, token=TOKEN, attempts=1),
        daemon=dataclasses.replace(config.daemon, shutdown_timeout_seconds=2),
    )


async def _next_line(read_line: Callable[[], str], out: TextIO, *, echo: bool) -> str | None:
    """Prompt and read one line; None at end of input or ``/quit``. With ``echo`` (input from
    a file or pipe) the line is shown, so the output reads as a transcript."""
    print("you> ", end="", file=out, flush=True)
    line = await trio.to_thread.run_sync(read_line, abandon_on_cancel=True)
    if not line or line.strip() == "/quit":
        print(file=out)
        return None
    if echo:
        print(line.rstrip("\n"), file=out)
    return line


async def chat_live(
    config: Config,
    *,
    read_line: Callable[[], str],
    out: TextIO,
    client_id: int | None = None,
    echo: bool = False,
) -> int:
    """Run one console session against the real services; ``read_line`` returns '' at the end."""
    session = secrets.token_hex(4)
    client_id = client_id or 900_000_000 + secrets.randbelow(99_999_999)
    ids = itertools.count(int(time.time() * 1000))
    async with open_fake_chat2desk(token=TOKEN) as sink:
        cfg = _session_config(config, session)
        cfg = dataclasses.replace(
            cfg, chat2desk=dataclasses.replace(cfg.chat2desk, base_url=sink.base_url)
        )
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            running: daemon.Running = await nursery.start(
                lambda task_status: daemon.serve(cfg, stop=stop, task_status=task_status)
            )
            print(
                f"botd chat — you are customer {client_id}. "
                "Type your messages; Ctrl-D or /quit ends.",
                file=out,
            )
            shown = 0
            async with httpx.AsyncClient(timeout=10) as http:
                while (line := await _next_line(read_line, out, echo=echo)) is not None:
                    handled_before = running.consumers.handled
                    body = {
                        "message_id": next(ids),
                        "type": "from_client",
                        "hook_type": "inbox",
                        "client_id": client_id,
                        "text": line.rstrip("\n"),
                        "transport": "telegram",
                    }
                    answer = await http.post(f"{running.url}/webhook/chat2desk", json=body)
                    if answer.status_code != 200 or answer.json().get("status") != "queued":
                        print(f"(webhook answered {answer.status_code}: {answer.text})", file=out)
                        continue
                    with trio.fail_after(30):
                        await running.consumers.wait_handled(handled_before + 1)
                    texts = sink.texts_for(client_id)
                    for text in texts[shown:]:
                        print(f"bot> {text}", file=out)
                    shown = len(texts)
            orders = await running.orders.find_by_client(str(client_id))
            if orders:
                print("Orders created in this session:", file=out)
                for row in orders:
                    print("  " + json.dumps(row, ensure_ascii=False, default=str), file=out)
            else:
                print("No order was created in this session.", file=out)
            stop.set()
    # The session's queues go away with it (orders stay in PostgreSQL).
    async with (
        open_bridge() as bridge,
        open_broker(bridge, cfg.rabbitmq, **layout(cfg)) as broker,
    ):
        await broker.connect_once()
        await broker.delete_queues()
    return 0


async def chat(
    config: Config,
    *,
    read_line: Callable[[], str],
    out: TextIO,
    client_id: int | None = None,
    echo: bool = False,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run one console session with the bot in memory; ``read_line`` returns '' at the end."""
    client_id = client_id or 900_000_000 + secrets.randbelow(99_999_999)
    bot = Bot(bot_settings(config), start=clock())
    ids = itertools.count(int(clock() * 1000))

    def show(events: list[dict[str, Any]]) -> None:
        for event in events:
            if "reply" in event:
                print(f"bot> {event['reply']}", file=out, flush=True)

    async def fire_timers() -> None:
        while True:
            await trio.sleep(1)
            show(await bot.advance_to(clock()))

    print(
        f"botd chat — you are customer {client_id}. Type your messages; Ctrl-D or /quit ends. "
        "(The bot runs in memory: nothing is saved; `botd chat --live` uses the services.)",
        file=out,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fire_timers)
        while (line := await _next_line(read_line, out, echo=echo)) is not None:
            show(await bot.advance_to(clock()))
            show(await bot.post(inbox_body(next(ids), str(client_id), line.rstrip("\n"))))
        nursery.cancel_scope.cancel()
    if bot.orders.rows:
        print("Orders created in this session:", file=out)
        for row in bot.orders.rows:
            print("  " + json.dumps(row.public(), ensure_ascii=False), file=out)
    else:
        print("No order was created in this session.", file=out)
    return 0


async def chat_script(config: Config, path: str, *, out: TextIO, err: TextIO) -> int:
    """Run the script at ``path`` ('-': standard input); print its events as JSON lines.

    Returns 0, or 2 (naming the line) when the file cannot be read or a line is not an input.
    """
    try:
        if path == "-":
            text = await trio.to_thread.run_sync(sys.stdin.read)
        else:
            text = await trio.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"botd chat: cannot read the script {path}: {exc}", file=err)
        return 2
    try:
        inputs = parse_script(text.splitlines())
    except ScriptError as exc:
        print(f"botd chat: {path}: {exc}", file=err)
        return 2

    def emit(event: dict[str, Any]) -> None:
        print(json.dumps(event, ensure_ascii=False), file=out, flush=True)

    await run_script(inputs, bot_settings(config), emit=emit)
    return 0


def main(config: Config, *, live: bool = False, script: str | None = None) -> int:
    if config.log.level in ("DEBUG", "INFO"):
        logs.configure("WARNING", config.log.format)  # keep the conversation readable
    if script is not None:
        return trio.run(lambda: chat_script(config, script, out=sys.stdout, err=sys.stderr))
    echo = not sys.stdin.isatty()
    session = chat_live if live else chat
    return trio.run(
        lambda: session(config, read_line=sys.stdin.readline, out=sys.stdout, echo=echo)
    )
