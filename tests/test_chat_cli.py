"""``botd chat``: a terminal customer talking to the bot — in memory (no services), as a script
(JSON lines in, JSON lines out), or through the whole pipeline (``--live``, real services)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from botd import cli, dialog
from botd.chat_cli import chat, chat_live, chat_script
from botd.config import Config
from botd.dialog import Step
from botd.script import (
    CLIENT_ID,
    START_AT,
    Bot,
    BotSettings,
    Say,
    ScriptError,
    parse_script,
    run_script,
)
from tests.helpers import HAPPY_PATH, orders, subprocess_env

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


async def test_live_chat_in_process_full_dialog(config: Config) -> None:
    out = io.StringIO()
    with trio.fail_after(60):
        code = await chat_live(config, read_line=lines_of(HAPPY_PATH), out=out, client_id=CLIENT)
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


async def test_live_chat_subprocess_reads_stdin(config: Config) -> None:
    env = subprocess_env(config)
    stdin = "".join(f"{t}\n" for t in (*HAPPY_PATH, "/quit", "never read"))
    code, output, errors = await run_chat("--live", env=env, stdin=stdin, seconds=60)
    assert code == 0, errors
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


# -- in memory: no service at all ----------------------------------------------------------

NO_SERVICES = Config()
SCRIPT_HAPPY = [
    '{"meta": {"id": "t-ru-happy", "lang": "ru", "classes": ["happy"], '
    '"expect": {"orders": [], "step": "idle"}}}',
    *(json.dumps({"text": t}, ensure_ascii=False) for t in HAPPY_PATH),
]


def script_file(tmp_path: Path, lines: list[str], name: str = "script.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def events_of(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def botd_exe() -> str:
    return str(Path(sys.executable).parent / "botd")


async def run_chat(
    *args: str, env: dict[str, str], stdin: str = "", seconds: float = 30
) -> tuple[int, str, str]:
    """``botd --config /dev/null chat *args`` as a subprocess: (exit code, stdout, stderr)."""
    with trio.fail_after(seconds):
        done = await trio.run_process(
            [botd_exe(), "--config", os.devnull, "chat", *args],
            stdin=stdin.encode(),
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_chat_in_memory_full_dialog() -> None:
    out = io.StringIO()
    code = await chat(NO_SERVICES, read_line=lines_of(HAPPY_PATH), out=out, client_id=CLIENT)
    assert code == 0
    output = out.getvalue()
    assert output.startswith(f"botd chat — you are customer {CLIENT}.")
    replies = turns(output)
    assert len(replies) == len(HAPPY_PATH) + 1 and all(replies[:-1]), output
    assert any(ADDRESS in r and "+996555123456" in r for r in replies[3]), replies[3]
    (row,) = order_rows(output)
    assert row == {
        "id": 1,
        "phone": "+996555123456",
        "address": ADDRESS,
        "quantity": 3,
        "status": "placed",
    }
    assert any("№1" in r for r in replies[4]), replies[4]


async def test_chat_in_memory_subprocess_needs_no_service(tmp_path: Path) -> None:
    stdin = "".join(f"{t}\n" for t in (*HAPPY_PATH, "/quit", "never read"))
    env = subprocess_env()
    # Every service points at a closed port: nothing may be contacted.
    env.update(
        BOTD_RABBITMQ_URL="amqp://guest:guest@127.0.0.1:9/%2F",
        BOTD_REDIS_URL="redis://127.0.0.1:9/0",
        BOTD_POSTGRES_DSN="postgresql://nobody@127.0.0.1:9/none",
    )
    code, output, errors = await run_chat(env=env, stdin=stdin)
    assert code == 0, errors
    assert "Traceback" not in errors, errors
    assert [c.splitlines()[0] for c in output.split("you> ")[1:-1]] == list(HAPPY_PATH)
    assert "never read" not in output
    (row,) = order_rows(output)
    assert (row["phone"], row["address"], row["quantity"]) == ("+996555123456", ADDRESS, 3)


async def test_script_in_process_prints_one_json_line_per_event(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    path = script_file(tmp_path, SCRIPT_HAPPY)
    assert await chat_script(NO_SERVICES, str(path), out=out, err=err) == 0, err.getvalue()
    events = events_of(out.getvalue())
    orders_placed = [e["order"] for e in events if "order" in e]
    assert orders_placed == [
        {"id": 1, "phone": "+996555123456", "address": ADDRESS, "quantity": 3, "status": "placed"}
    ]
    replies = [e for e in events if "reply" in e]
    assert replies and all(set(e) == {"reply", "locale", "step"} for e in replies)
    assert all(e["locale"] == "ru" for e in replies)
    assert replies[0]["step"] == "waiting_address"
    assert replies[-1]["step"] == "idle" and "№1" in replies[-1]["reply"]
    # the order is reported before the reply that announces it
    order_at = next(i for i, e in enumerate(events) if "order" in e)
    assert events[order_at + 1] == replies[-1]


async def test_script_as_a_subprocess_prints_what_the_in_process_run_prints(
    tmp_path: Path,
) -> None:
    path = script_file(tmp_path, SCRIPT_HAPPY)
    in_process = io.StringIO()
    await chat_script(NO_SERVICES, str(path), out=in_process, err=io.StringIO())
    code, output, errors = await run_chat("--script", str(path), env=subprocess_env())
    assert code == 0, errors
    assert output == in_process.getvalue()  # same virtual clock: same run


async def test_script_reads_the_dialog_settings_of_the_config(tmp_path: Path) -> None:
    path = script_file(tmp_path, [json.dumps({"text": "Hello"}), json.dumps({"wait": 70})])
    quick = dataclasses.replace(
        NO_SERVICES,
        dialog=dataclasses.replace(
            NO_SERVICES.dialog, reminder_after_seconds=60, state_ttl_seconds=600
        ),
    )
    default_out, quick_out = io.StringIO(), io.StringIO()
    await chat_script(NO_SERVICES, str(path), out=default_out, err=io.StringIO())
    await chat_script(quick, str(path), out=quick_out, err=io.StringIO())
    # The reminder comes after 60 s with the quick config, not within 70 s by default.
    assert len(events_of(quick_out.getvalue())) > len(events_of(default_out.getvalue()))


async def test_timers_fire_on_wait_in_due_order() -> None:
    settings = BotSettings(reminder_after_seconds=1800, expire_after_seconds=84600)
    inputs = parse_script(
        [
            json.dumps({"text": HAPPY_PATH[0]}, ensure_ascii=False),
            json.dumps({"text": HAPPY_PATH[1]}, ensure_ascii=False),
            json.dumps({"wait": 1000}),  # not yet
            json.dumps({"wait": 900}),  # the reminder (due 1800 s after the last message)
            json.dumps({"wait": 90_000}),  # the close (due 84600 s after the reminder)
        ]
    )
    bot = Bot(settings)
    run = await run_script(inputs, bot=bot)
    _, (_, second), (_, nothing), (_, reminder), (_, close) = run.transcript
    assert nothing == ()
    assert reminder and all(e["step"] == second[-1]["step"] for e in reminder)
    assert close and close[-1]["step"] == "idle"
    assert run.step is Step.IDLE
    fired = [(t.due - START_AT, t.event.kind) for t in bot.timers.scheduled]
    assert fired == [
        (1.0 + 1800, "reminder"),  # after the first message (stale once the second came)
        (2.0 + 1800, "reminder"),
        (2.0 + 1800 + 84600, "expire"),  # scheduled when the reminder fired, at its due time
    ]
    assert bot.now == START_AT + 2 + 1000 + 900 + 90_000
    assert bot.timers.pending == ()


async def test_script_webhook_lines_go_through_the_webhook_validation() -> None:
    body = {
        "message_id": 77,
        "type": "from_client",
        "hook_type": "inbox",
        "client_id": int(CLIENT_ID),
        "text": "  Здравствуйте\u0000  ",
    }
    inputs = parse_script(
        [
            json.dumps({"webhook": body}),
            json.dumps({"webhook": body}),  # a Chat2Desk retry: no effect
            json.dumps({"webhook": {**body, "message_id": 78, "type": "system"}}),
            json.dumps({"webhook": {**body, "message_id": None}}),
        ]
    )
    run = await run_script(inputs)
    (_, greeted), (_, retried), (_, ignored), (_, rejected) = run.transcript
    assert greeted and greeted[0]["step"] == "waiting_address"
    assert retried == ()
    assert [set(e) for e in ignored] == [{"ignored"}]
    assert rejected == ({"rejected": "message_id: required"},)


async def test_script_reports_orders_cancellations_and_handoffs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_handle = dialog.handle
    placed_keys: list[str] = []

    def handle(
        state: dialog.DialogState | None, event: dialog.Event, now: float, s: dialog.DialogSettings
    ) -> dialog.Transition | None:
        """The real dialog, which cancels the last order on "CANCEL-IT" and flags a hand-off
        whenever the dialog enters HANDOFF (independent of how far the dialog rewrite is)."""
        if isinstance(event, dialog.Turn) and event.text == "CANCEL-IT" and state is not None:
            cancel = dialog.OrderCancel(placed_keys[-1], event.client_id)
            return dialog.Transition(state, (), cancel=cancel)
        transition = real_handle(state, event, now, s)
        if transition is None:
            return None
        if transition.order is not None:
            placed_keys.append(transition.order.idempotency_key)
        entered = transition.state.step is Step.HANDOFF and (
            state is None or state.step is not Step.HANDOFF
        )
        return dataclasses.replace(transition, handoff_started=entered)

    monkeypatch.setattr(dialog, "handle", handle)
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in HAPPY_PATH]
    lines += [json.dumps({"text": "CANCEL-IT"}), json.dumps({"operator": "Добрый день!"})]
    run = await run_script(parse_script(lines))
    events = run.events
    placed = [e["order"] for e in events if "order" in e]
    cancelled = [e["cancelled"] for e in events if "cancelled" in e]
    assert [o["status"] for o in placed] == ["placed"]
    assert cancelled == [{**placed[0], "status": "cancelled"}]
    assert events[-1] == {"handoff": True}
    assert [row.status for row in run.orders] == ["cancelled"]
    assert run.step is Step.HANDOFF


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"txt": "hi"}', "unknown key"),
        ("{}", "expected one of"),
        ('{"text": "hi", "operator": "x"}', "one input per line"),
        ('{"text": 5}', "'text' must be a string"),
        ('{"location": [42.8]}', "[latitude, longitude]"),
        ('{"contact": 996555123456}', "'contact'"),
        ('{"media": "hologram"}', "'media' must be one of"),
        ('{"operator": null}', "'operator'"),
        ('{"wait": -1}', "'wait'"),
        ('{"wait": true}', "'wait'"),
        ('{"webhook": "body"}', "'webhook'"),
    ],
)
def test_bad_script_lines_are_named(line: str, problem: str) -> None:
    with pytest.raises(ScriptError) as caught:
        parse_script(['{"meta": {}}', "", '{"text": "hi"}', line])
    assert caught.value.line_no == 4
    assert str(caught.value).startswith("line 4: ") and problem in str(caught.value)


def test_good_script_lines_of_every_kind() -> None:
    inputs = parse_script(
        [
            '{"text": "hi"}',
            '{"location": [42.87, 74.59], "text": "here"}',
            '{"contact": "+996 555 123 456"}',
            '{"media": "voice"}',
            '{"operator": "Здравствуйте"}',
            '{"wait": 1.5}',
            '{"webhook": {"type": "from_client"}}',
        ]
    )
    assert [type(i).__name__ for i in inputs] == ["Say"] * 5 + ["Wait", "Say"]
    say = [i for i in inputs if isinstance(i, Say)]
    assert say[1].body["coordinates"] == [42.87, 74.59] and say[1].body["text"] == "here"
    assert say[2].body["contact"] == {"phone": "+996 555 123 456"}
    assert "audio" in say[3].body
    assert (say[4].body["hook_type"], say[4].body["type"]) == ("outbox", "to_client")
    assert say[5].body == {"type": "from_client"}


async def test_a_bad_script_line_exits_2_naming_it(tmp_path: Path) -> None:
    path = script_file(tmp_path, [*SCRIPT_HAPPY[:3], '{"txt": "typo"}', *SCRIPT_HAPPY[3:]])
    out, err = io.StringIO(), io.StringIO()
    assert await chat_script(NO_SERVICES, str(path), out=out, err=err) == 2
    assert "line 4" in err.getvalue() and out.getvalue() == ""  # nothing ran
    code, output, errors = await run_chat("--script", str(path), env=subprocess_env())
    assert code == 2
    assert "line 4" in errors and output == ""
    missing = io.StringIO()
    code = await chat_script(NO_SERVICES, str(tmp_path / "nope.jsonl"), out=out, err=missing)
    assert code == 2 and "nope.jsonl" in missing.getvalue()


def test_chat_modes_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", os.devnull, "chat", "--live", "--script", "x.jsonl"]) == 2
    assert "not allowed with" in capsys.readouterr().err
