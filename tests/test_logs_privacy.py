"""Nothing personal or secret leaves botd through its logs or its CLI output.

- a whole dialog (three phone spellings, an address, a failed send that is retried) through the
  running daemon, logged at DEBUG both as production does (``logs.configure``, JSON to stderr)
  and as pytest captures every logger: no raw phone number or address anywhere;
- the webhook's path token (and wrong guesses at it) in no log line, also when the app reports
  an unexpected error for a request on the token path;
- ``botd check-config`` and its error output never print a token, secret or password, whatever
  form the password is written in; errors name the key, the bad value and the fix.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from botd import cli, daemon, logs
from botd.config import Config, WebhookConfig
from botd.daemon import Running, _hypercorn_config
from botd.logs import JsonFormatter, TextFormatter
from botd.metrics import Metrics
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.webapp import WEBHOOK_PATH, WebDeps, create_app
from tests.conftest import delete_queues
from tests.helpers import inbox_payload, orders, post_webhook

ADDRESS = "ул. Токтогула 125, кв. 4"
PERSONAL = (
    "+996555123456",
    "996555123456",
    "555123456",
    "0555 123 456",
    "555 123 456",
    "0555123456",
    "Токтогула",
)


@pytest.fixture
def production_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """``logs.configure("DEBUG", "json")`` as ``botd run`` does, its stderr an in-memory file;
    pytest's own handlers stay, and everything is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = ("aiormq", "httpx", "httpcore", "hypercorn.access", "psycopg.pool")
    levels = {name: logging.getLogger(name).level for name in noisy}
    stderr = io.StringIO()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", stderr)
        logs.configure("DEBUG", "json")
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield stderr
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)


async def _say(client: httpx.AsyncClient, running: Running, client_id: int, text: str) -> None:
    handled = running.consumers.handled
    response = await post_webhook(client, running.url, inbox_payload(client_id, text))
    assert response.json() == {"status": "queued"}
    with trio.fail_after(15):
        await running.consumers.wait_handled(handled + 1)


async def test_a_whole_dialog_logs_no_phone_and_no_address(
    running: Running,
    fake: FakeChat2Desk,
    config: Config,
    production_log: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient() as client:
        for client_id, phone in (
            (9101, "0555 123 456"),
            (9102, "+996555123456"),
            (9103, "555123456"),
        ):
            await _say(client, running, client_id, "Здравствуйте, хочу заказать воду")
            await _say(client, running, client_id, ADDRESS)
            await _say(client, running, client_id, "555 12")  # too short: re-asked
            fake.fail_next(1)  # the summary (address + phone) fails once and is retried
            await _say(client, running, client_id, phone)
            await _say(client, running, client_id, "3")
            await _say(client, running, client_id, "да")
    placed = orders(config.postgres.dsn)
    assert len(placed) == 3
    assert {o["client_phone"] for o in placed} == {"+996555123456"}
    assert running.sender.statistics().retried >= 3

    json_lines = production_log.getvalue().splitlines()
    events = [json.loads(line) for line in json_lines if line.startswith("{")]
    assert any("placed" in e["event"] for e in events), "production logging captured nothing"
    json_fmt, text_fmt = JsonFormatter(), TextFormatter()
    rendered = [
        *json_lines,
        *(json_fmt.format(r) for r in caplog.records),
        *(text_fmt.format(r) for r in caplog.records),
        *(repr(r.args) for r in caplog.records),
    ]
    assert any("+996*******56" in line for line in rendered), "the masked phone is logged"
    assert any("send to client 9101 failed" in line for line in rendered)
    for needle in PERSONAL:
        leaked = [line for line in rendered if needle in line]
        assert leaked == [], (needle, leaked[:3])


# ---- the webhook's path token --------------------------------------------------------------

PATH_TOKEN = "pAtH-t0ken_" + "q7" * 8
WRONG_TOKENS = (PATH_TOKEN[:-1] + "X", "guessed-token-0123456789", PATH_TOKEN + "extra")


def rendered_lines(production_log: io.StringIO, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every log line as production writes it (JSON on stderr) and as both formatters render
    each captured record."""
    json_fmt, text_fmt = JsonFormatter(), TextFormatter()
    return [
        *production_log.getvalue().splitlines(),
        *(json_fmt.format(r) for r in caplog.records),
        *(text_fmt.format(r) for r in caplog.records),
        *(repr(r.args) for r in caplog.records),
    ]


async def test_the_path_token_is_in_no_log_line(
    make_config: Callable[..., Config],
    production_log: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The right path, wrong tokens, and refusals on the token path (405, 413, 431): neither
    the token nor a guess at it reaches a log line, whatever logs (the access log included)."""
    caplog.set_level(logging.DEBUG)
    for name in ("hypercorn.access", "hypercorn.error", "quart.app"):
        caplog.set_level(logging.DEBUG, logger=name)
    cfg = make_config(webhook_path_token=PATH_TOKEN, webhook_max_body_bytes="1024")
    assert _hypercorn_config(cfg).accesslog is None  # Hypercorn's access log prints the path
    url = f"{WEBHOOK_PATH}/{PATH_TOKEN}"
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        running: Running = await nursery.start(partial(daemon.serve, cfg, stop=stop))
        try:
            async with httpx.AsyncClient(base_url=running.url) as client:
                body = inbox_payload(9201, "Здравствуйте")
                ok = await client.post(url, json=body)
                assert ok.json() == {"status": "queued"}
                with trio.fail_after(15):
                    await running.consumers.wait_handled(1)
                for wrong in WRONG_TOKENS:
                    answer = await client.post(f"{WEBHOOK_PATH}/{wrong}", json=body)
                    assert answer.status_code == 404
                assert (await client.get(url)).status_code == 405
                assert (await client.post(url, content=b" " * 2000)).status_code == 413
                big_head = {"X-Pad": "p" * 20000}
                assert (await client.post(url, json=body, headers=big_head)).status_code == 431
        finally:
            stop.set()
    await delete_queues(cfg)
    rendered = rendered_lines(production_log, caplog)
    assert any("ready" in line for line in rendered), "nothing was logged"
    for secret in (PATH_TOKEN, *WRONG_TOKENS, PATH_TOKEN[:12]):
        leaked = [line for line in rendered if secret in line]
        assert leaked == [], (secret, leaked[:3])


async def test_an_unexpected_error_names_the_webhook_path_without_its_token(
    production_log: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    async def publish(shard: int, body: bytes) -> None:
        raise RuntimeError("a bug")

    async def readiness() -> dict[str, bool]:
        return {}

    app = create_app(
        WebDeps(
            config=WebhookConfig(path_token=PATH_TOKEN),
            shards=1,
            publish=publish,
            readiness=readiness,
            is_draining=lambda: False,
            metrics=Metrics(),
        )
    )
    caplog.set_level(logging.DEBUG)
    path = f"{WEBHOOK_PATH}/{PATH_TOKEN}"
    response = await app.test_client().post(path, json=inbox_payload(9202, "hi"))
    assert response.status_code == 500
    # Quart's own report of an exception no handler took (e.g. in an after-request function)
    async with app.test_request_context(path, method="POST"):
        try:
            raise RuntimeError("another bug")
        except RuntimeError:
            app.log_exception(sys.exc_info())
    rendered = rendered_lines(production_log, caplog)
    logged = [line for line in rendered if f"POST {WEBHOOK_PATH}/***" in line]
    assert len(logged) >= 2, rendered  # both errors name the request, the token masked
    leaked = [line for line in rendered if PATH_TOKEN in line]
    assert leaked == [], leaked[:3]


# ---- secrets in the CLI's output -----------------------------------------------------------


SECRETS = {
    "BOTD_CHAT2DESK_TOKEN": ("tok-5f3e91-very-secret", "tok-5f3e91-very-secret"),
    "BOTD_WEBHOOK_HMAC_SECRET": ("hmac-77a0-very-secret", "hmac-77a0-very-secret"),
    "BOTD_WEBHOOK_PATH_TOKEN": ("path-token-8c1d2e3f4a5b", "path-token-8c1d2e3f4a5b"),
    "BOTD_RABBITMQ_URL": ("amqp://botd:amqp-pw-31337@127.0.0.1:5672/%2F", "amqp-pw-31337"),
    "BOTD_REDIS_URL": ("redis://:redis-pw-4242@127.0.0.1:6379/0", "redis-pw-4242"),
    "BOTD_POSTGRES_DSN": (
        "postgresql://botd@127.0.0.1/botd?password=pg-query-pw-99&sslmode=disable",
        "pg-query-pw-99",
    ),
}


def test_check_config_prints_no_secret(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (value, _secret) in SECRETS.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["check-config"]) == 0
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    for name, (_value, secret) in SECRETS.items():
        assert secret not in shown, name
    assert "token = '***'" in shown and "hmac_secret = '***'" in shown
    assert "path_token = '***'" in shown
    assert "amqp://botd:***@127.0.0.1:5672/%2F" in shown
    assert "password=***&sslmode=disable" in shown


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        # libpq keyword DSNs are common; botd wants a URL but must not echo the password
        ("BOTD_POSTGRES_DSN", "host=127.0.0.1 user=botd password=kw-pw-123", "kw-pw-123"),
        ("BOTD_POSTGRES_DSN", "host=db password='quoted pw' user=botd", "quoted pw"),
        ("BOTD_RABBITMQ_URL", "amqp//botd:typo-pw-456@127.0.0.1/", "typo-pw-456"),
        ("BOTD_RABBITMQ_URL", "http://botd:wrong-scheme-pw@127.0.0.1/", "wrong-scheme-pw"),
        ("BOTD_REDIS_URL", "redis:/:slash-pw-789@127.0.0.1:6379", "slash-pw-789"),
        ("BOTD_WEBHOOK_PATH_TOKEN", "short-s3cr3t", "short-s3cr3t"),
        ("BOTD_WEBHOOK_HMAC_TOLERANCE_SECONDS", "many", None),
    ],
)
def test_config_errors_print_no_secret(
    name: str,
    value: str,
    secret: str | None,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for other, (good, _secret) in SECRETS.items():
        monkeypatch.setenv(other, good)
    monkeypatch.setenv(name, value)
    assert cli.main(["check-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert name in captured.err and "default is" in captured.err
    for _other, (_good, other_secret) in SECRETS.items():
        assert other_secret not in captured.err
    if secret is not None:
        assert secret not in captured.err
        assert "***" in captured.err


@pytest.mark.parametrize(
    ("name", "value", "fix"),
    [
        ("BOTD_WEBHOOK_HMAC_TOLERANCE_SECONDS", "0", "between 1 and 86400"),
        ("BOTD_WEBHOOK_HMAC_TOLERANCE_SECONDS", "5m", "whole number"),
        ("BOTD_WEBHOOK_READ_TIMEOUT_SECONDS", "0.5", "between 1 and 600"),
        ("BOTD_WEBHOOK_MAX_HEADER_BYTES", "512", "between 1024 and 1048576"),
        ("BOTD_WEBHOOK_MAX_BODY_BYTES", "64k", "whole number"),
        ("BOTD_WEBHOOK_PUBLISH_TIMEOUT_SECONDS", "soon", "number"),
        ("BOTD_WEBHOOK_KEEP_ALIVE_TIMEOUT_SECONDS", "0", "between 1 and 3600"),
    ],
)
def test_webhook_config_errors_name_the_key_the_value_and_the_fix(
    name: str,
    value: str,
    fix: str,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    assert cli.main(["check-config"]) == 2
    (problem,) = [line for line in capsys.readouterr().err.splitlines() if name in line]
    shown = problem.split(" = ", 1)[1].split(": ", 1)[0]  # the bad value, as given or as read
    assert shown in (repr(value), value, repr(float(value)) if _is_number(value) else value)
    assert fix in problem
    assert "default is" in problem


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
