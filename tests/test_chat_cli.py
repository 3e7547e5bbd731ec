"""``botd chat``: a terminal customer talking to the whole pipeline (real services)."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import trio

from botd.chat_cli import chat
from botd.config import Config
from botd.testing.process import config_env
from tests.helpers import HAPPY_PATH, orders

CLIENT = 930_000_017
ADDRESS = HAPPY_PATH[1]


def lines_of(texts: tuple[str, ...]) -> Callable[[], str]:
    """``readline`` over ``texts``: one line each, then '' (end of input)."""
    feed = iter([f"{t}\n" for t in texts])
    return lambda: next(feed, "")


def turns(output: str) -> list[list[str]]:
    """The bot's replies after each prompt (a reply may span lines; the banner is skipped)."""
    out: list[list[str]] = []
    for chunk in output.split("you> ")[1:]:
        replies: list[str] = []
        for line in chunk.splitlines():
            if line.startswith("bot> "):
                replies.append(line[5:])
            elif replies:
                replies[-1] += "\n" + line
        out.append(replies)
    return out


def order_rows(output: str) -> list[dict[str, Any]]:
    _, _, tail = output.partition("Orders created in this session:\n")
    return [json.loads(line) for line in tail.splitlines() if line.startswith("  {")]


async def test_chat_in_process_full_dialog(config: Config) -> None:
    out = io.StringIO()
    with trio.fail_after(60):
        code = await chat(config, read_line=lines_of(HAPPY_PATH), out=out, client_id=CLIENT)
    assert code == 0
    output = out.getvalue()
    assert output.startswith(f"botd chat — you are customer {CLIENT}.")
    replies = turns(output)
    assert len(replies) == len(HAPPY_PATH) + 1  # and the last prompt, answered by end of input
    assert all(replies[: len(HAPPY_PATH)]), replies
    assert replies[-1] == []
    summary = replies[3]  # after the quantity: the order to confirm
    assert any(ADDRESS in r and "+996555123456" in r for r in summary), summary
    (row,) = order_rows(output)
    assert any(f"№{row['id']}" in r for r in replies[4]), replies[4]
    assert row["client_phone"] == "+996555123456"
    assert row["delivery_address"] == ADDRESS
    assert row["quantity"] == 3
    assert row["chat2desk_client_id"] == str(CLIENT)
    assert [r["id"] for r in orders(config.postgres.dsn)] == [row["id"]]  # a real row


async def test_chat_subprocess_reads_stdin(config: Config) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTD_")}
    env.update(config_env(config))
    stdin = "".join(f"{t}\n" for t in (*HAPPY_PATH, "/quit", "never read"))
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "botd", "--config", os.devnull, "chat"],
            stdin=stdin.encode(),
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
    output, errors = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, errors
    assert "Traceback" not in errors, errors
    replies = turns(output)
    assert len(replies) == len(HAPPY_PATH) + 1 and all(replies[:-1]), output
    # piped input is echoed after each prompt, so the output reads as a transcript
    assert [c.splitlines()[0] for c in output.split("you> ")[1:-1]] == list(HAPPY_PATH)
    assert "never read" not in output  # /quit ended the session
    (row,) = order_rows(output)
    assert re.search(rf"№{row['id']}\b", "\n".join(replies[4])), replies[4]
    assert (row["client_phone"], row["delivery_address"], row["quantity"]) == (
        "+996555123456",
        ADDRESS,
        3,
    )
    assert [r["id"] for r in orders(config.postgres.dsn)] == [row["id"]]
