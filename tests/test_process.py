"""``botd run`` as a real process: readiness, SIGTERM/SIGINT drain under load, nothing lost;
a service down at start (the webhook serves anyway); a wrong schema (exit 1)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import trio

from botd.config import Config
from botd.dialog import Reply, render
from botd.migrate import latest_version
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.process import BotdProcess, start_botd
from tests.conftest import delete_queues
from tests.faults.support import match_blocks
from tests.helpers import inbox_payload, post_webhook, subprocess_env

# What the bot answers a first "Здравствуйте", from the message table.
GREETING_REPLIES = (render(Reply("greeting"), "ru"), render(Reply("ask_address"), "ru"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_and_exits_zero_and_nothing_is_lost(
    config: Config, fake: FakeChat2Desk, signum: int
) -> None:
    clients = range(700_001, 700_031)
    async with trio.open_nursery() as nursery:
        proc = await start_botd(nursery, config)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{proc.url}/ready")).status_code == 200
            fake.set_delay(0.02)  # keep messages in flight when the signal arrives
            for cid in clients:
                response = await post_webhook(client, proc.url, inbox_payload(cid, "Здравствуйте"))
                assert response.json() == {"status": "queued"}
            with trio.fail_after(10):
                await fake.wait_for_deliveries(3)
            proc.signal(signum)
            assert await proc.wait_exit(timeout=config.daemon.shutdown_timeout_seconds + 10) == 0
            assert any("stopping: draining" in line for line in proc.lines)
            assert not any("Traceback" in line for line in proc.lines), "\n".join(proc.lines)
            fake.set_delay(0)
            # Whatever was not finished is still queued: a new process answers every customer once.
            second = await start_botd(nursery, config)
            with trio.fail_after(30):
                while {r["client_id"] for r in fake.delivered()} < set(clients):
                    await fake.wait_for_deliveries(len(fake.delivered()) + 1)
            second.signal(signal.SIGTERM)
            assert await second.wait_exit() == 0
    for cid in clients:
        # Exactly the greeting turn's replies; a redelivery may re-send them once (at-least-once),
        # but never a different answer and never a second dialog step ("greeting_again").
        complete, resent = match_blocks(fake.texts_for(cid), [GREETING_REPLIES])
        assert complete and resent <= 1, (cid, fake.texts_for(cid))
    await delete_queues(config)


# ---- a service down at start: the webhook serves anyway (docs/design.md §2) ---------------------


class DownThenBack:
    """A loopback port that refuses connections (bound, not listening) — a service that is down —
    until :meth:`serve` starts forwarding each connection to the real service: it is back."""

    def __init__(self) -> None:
        self._sock = trio.socket.socket()

    def __enter__(self) -> DownThenBack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()

    async def bind(self) -> int:
        await self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    async def serve(
        self,
        target: tuple[str, int],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._sock.listen()
        await trio.serve_listeners(
            partial(_forward, target), [trio.SocketListener(self._sock)], task_status=task_status
        )


async def _forward(target: tuple[str, int], client: trio.SocketStream) -> None:
    async with client:
        try:
            upstream = await trio.open_tcp_stream(*target)
        except OSError:
            return
        async with upstream, trio.open_nursery() as nursery:

            async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    async for chunk in source:
                        await sink.send_all(chunk)
                nursery.cancel_scope.cancel()

            nursery.start_soon(pipe, client, upstream)
            nursery.start_soon(pipe, upstream, client)


def via_port(url: str, port: int) -> tuple[str, tuple[str, int]]:
    """``url`` pointed at 127.0.0.1:``port`` instead, and the host and port it had."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    user = f"{parts.username}@" if parts.username else ""
    moved = parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()
    return moved, (parts.hostname, parts.port)


def notify_fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.split("\n") if "=" in line)


async def wait_pings(proc: BotdProcess, more: int, timeout: float = 15) -> None:
    """Bounded polling until ``more`` WATCHDOG=1 datagrams beyond those seen so far arrive."""
    target = sum("WATCHDOG=1" in m for m in proc.notifications) + more
    with trio.fail_after(timeout):
        while sum("WATCHDOG=1" in m for m in proc.notifications) < target:
            assert proc.process.returncode is None, "\n".join(proc.lines[-30:])
            await trio.sleep(0.05)


@pytest.mark.parametrize("service", ["postgres", "redis"])
async def test_with_postgres_or_redis_down_at_start_the_webhook_queues_and_botd_catches_up(
    make_config: Callable[..., Config], config: Config, fake: FakeChat2Desk, service: str
) -> None:
    """botd starts while the service refuses connections: the webhook answers "queued" (RabbitMQ
    is up), /ready names the service, the watchdog keeps pinging; once the service is back the
    queued message is answered and botd is ready."""
    key, url = {
        "postgres": ("postgres_dsn", config.postgres.dsn),
        "redis": ("redis_url", config.redis.url),
    }[service]
    client_id = 700_101
    with DownThenBack() as down:
        moved, target = via_port(url, await down.bind())
        cfg = make_config(**{key: moved}, daemon_ready_wait_seconds="1")
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            launched = trio.current_time()
            proc = await start_botd(nursery, cfg, extra_env={"WATCHDOG_USEC": "2000000"})
            ready = notify_fields(next(m for m in proc.notifications if "READY=1" in m))
            assert ready["STATUS"].startswith("degraded (") and service in ready["STATUS"], ready
            response = await post_webhook(
                client, proc.url, inbox_payload(client_id, "Здравствуйте")
            )
            assert response.status_code == 200 and response.json() == {"status": "queued"}
            assert trio.current_time() - launched < 15  # seconds after start, not "when it is back"
            answer = await client.get(f"{proc.url}/ready")
            assert answer.status_code == 503 and answer.json()[service] == "down", answer.text
            await wait_pings(proc, 3)  # an outage is no hang: the watchdog keeps pinging
            assert fake.texts_for(client_id) == []

            await nursery.start(down.serve, target)  # the service is back
            with trio.fail_after(30):
                while len(fake.texts_for(client_id)) < len(GREETING_REPLIES):
                    await fake.wait_for_deliveries(len(fake.delivered()) + 1)
            assert fake.texts_for(client_id) == list(GREETING_REPLIES)
            with trio.fail_after(15):
                while (answer := await client.get(f"{proc.url}/ready")).status_code != 200:
                    await trio.sleep(0.2)
            proc.signal(signal.SIGTERM)
            assert await proc.wait_exit() == 0
            assert not any("Traceback" in line for line in proc.lines), "\n".join(proc.lines)
            nursery.cancel_scope.cancel()
    await delete_queues(config)


async def test_with_rabbitmq_down_at_start_the_webhook_answers_503_not_refused(
    make_config: Callable[..., Config], fake: FakeChat2Desk
) -> None:
    """botd starts while RabbitMQ refuses connections: the webhook listens from the start and
    answers 503 (Chat2Desk retries later) instead of a refused connection; READY=1 follows after
    ``daemon.ready_wait_seconds`` naming what is down; the watchdog keeps pinging; SIGTERM
    drains and exits 0."""
    with DownThenBack() as down:
        port = await down.bind()
        cfg = make_config(
            rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F", daemon_ready_wait_seconds="1"
        )
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            proc = await start_botd(nursery, cfg, extra_env={"WATCHDOG_USEC": "2000000"})
            starting, ready = (notify_fields(m) for m in proc.notifications[:2])
            assert starting == {"STATUS": f"starting: webhook {proc.url}"}, proc.notifications
            down_status = "degraded (rabbitmq, consumers): 2 shards, outbox ?, dlq ?"
            assert ready == {"READY": "1", "STATUS": f"{down_status}, webhook {proc.url}"}
            assert (await client.get(f"{proc.url}/health")).status_code == 200
            response = await post_webhook(client, proc.url, inbox_payload(700_201, "Здравствуйте"))
            assert response.status_code == 503
            assert response.json() == {
                "status": "error",
                "reason": "message broker unavailable; retry later",
            }
            answer = await client.get(f"{proc.url}/ready")
            assert answer.status_code == 503 and answer.json()["rabbitmq"] == "down", answer.text
            await wait_pings(proc, 3)
            proc.signal(signal.SIGTERM)
            assert await proc.wait_exit() == 0
            assert not any("Traceback" in line for line in proc.lines), "\n".join(proc.lines)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("DROP TABLE order_events, orders, schema_migrations", "no botd schema"),
        ("INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_the_future')", "newer"),
    ],
)
async def test_run_refuses_a_schema_it_does_not_know_with_exit_1(
    config: Config, change: str, says: str
) -> None:
    """PostgreSQL reachable, the schema wrong: ``botd run`` logs why and exits 1 — no READY=1,
    no traceback — however early the webhook listened."""
    with psycopg.connect(config.postgres.dsn, autocommit=True) as conn:
        conn.execute(change, (latest_version() + 1,) if "%s" in change else None)
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "botd", "--config", os.devnull, "run"],
            env=subprocess_env(config),
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert says in err, err
    assert "Traceback" not in err and "botd ready on" not in err, err
