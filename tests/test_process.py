"""``botd run`` as a real process: readiness, SIGTERM/SIGINT drain under load, nothing lost."""

from __future__ import annotations

import signal

import httpx
import pytest
import trio

from botd.config import Config
from botd.dialog import Reply, render
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.testing.process import start_botd
from tests.conftest import delete_queues
from tests.faults.support import match_blocks
from tests.helpers import inbox_payload, post_webhook

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
