"""Active-active (docs/design.md §7): two botd processes share the shards, each the active
consumer of its home shards and the stand-by of the other's; a process that leaves hands its
shards over, and gets them back when it returns — also on RabbitMQ 3.x, which ignores consumer
priorities for single active consumers (botd releases the shard itself).

Two whole daemons in this process (each its own bridge, connections and metrics) on the real
services, sharing the test's queues, keys and schema; the timings are shortened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio

from botd import daemon, home_shards
from botd.config import Config
from botd.errors import ConfigError
from botd.inbound import shard_of
from tests.conftest import delete_queues
from tests.helpers import inbox_payload, post_webhook


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(home_shards, "STANDBY_DELAY_SECONDS", 0.5)
    monkeypatch.setattr(home_shards, "CHECK_SECONDS", 0.2)
    monkeypatch.setattr(home_shards, "RELEASE_SECONDS", 0.5)
    monkeypatch.setattr(home_shards, "PRESENCE_TTL_SECONDS", 1.0)


def test_home_shards_and_instance_numbers() -> None:
    assert home_shards.home_shards(0, 2, 8) == {0, 2, 4, 6}
    assert home_shards.home_shards(1, 2, 8) == {1, 3, 5, 7}
    assert home_shards.home_shards(0, 1, 3) == {0, 1, 2}
    assert home_shards.resolve_instance(1, 3) == 1
    by_name = home_shards.resolve_instance(-1, 3, "botd-a.example")
    assert by_name == home_shards.resolve_instance(-1, 3, "botd-a.example") and 0 <= by_name < 3


async def test_an_instance_beyond_the_count_stops_botd(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"instance = 2: must be below instances \(2\)"):
        make_config(rabbitmq_instances="2", rabbitmq_instance="2")


@asynccontextmanager
async def botd_instance(config: Config) -> AsyncIterator[daemon.Running]:
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        handle: daemon.Running = await nursery.start(partial(daemon.serve, config, stop=stop))
        try:
            yield handle
        finally:
            stop.set()


def client_on(shard: int, shards: int, start: int) -> int:
    return next(c for c in range(start, start + 1000) if shard_of(str(c), shards) == shard)


async def send(http: httpx.AsyncClient, url: str, client: int) -> None:
    response = await post_webhook(http, url, inbox_payload(client, "Здравствуйте"))
    assert response.status_code == 200, response.text


async def processed_by(
    http: httpx.AsyncClient, via: daemon.Running, client: int, daemons: list[daemon.Running]
) -> daemon.Running:
    """Post one message for ``client``; return the daemon whose consumer handled it."""
    before = [d.consumers.handled for d in daemons]
    await send(http, via.url, client)
    with trio.fail_after(15):
        while True:
            for d, n in zip(daemons, before, strict=True):
                if d.consumers.handled > n:
                    return d
            await trio.sleep(0.02)


async def wait_standing_by(*daemons: daemon.Running) -> None:
    """Until every shard of every daemon is subscribed (home at once, stand-by a little later)."""
    with trio.fail_after(15):
        while not all(len(d.consumers.subscribed) == d.broker.topology.shards for d in daemons):
            await trio.sleep(0.02)


async def test_two_processes_share_the_shards_and_hand_them_over(
    make_config: Callable[..., Config],
) -> None:
    a_config = make_config(rabbitmq_instances="2", rabbitmq_instance="0")
    b_config = make_config(rabbitmq_instances="2", rabbitmq_instance="1")
    shards = a_config.rabbitmq.shards
    home_a, home_b = client_on(0, shards, 900_000), client_on(1, shards, 900_000)
    try:
        async with httpx.AsyncClient() as http, botd_instance(b_config) as b:
            async with botd_instance(a_config) as a:
                assert a.consumers.home == {0} and b.consumers.home == {1}
                await wait_standing_by(a, b)
                # each process is the active consumer of its home shard, whichever webhook
                # took the message
                assert await processed_by(http, a, home_a, [a, b]) is a
                assert await processed_by(http, b, home_a, [a, b]) is a
                assert await processed_by(http, a, home_b, [a, b]) is b
            # A left (drained): B, standing by, takes shard 0 over
            assert await processed_by(http, b, home_a, [b]) is b
            # A comes back: B sees it and hands shard 0 back (on any broker version)
            async with botd_instance(a_config) as a2:
                await wait_standing_by(a2)
                with trio.fail_after(15):
                    while b.consumers.releases < 1:
                        await trio.sleep(0.02)
                await trio.sleep(home_shards.RELEASE_SECONDS)  # B waits behind A now
                assert await processed_by(http, b, home_a, [a2, b]) is a2
                assert await processed_by(http, a2, home_b, [a2, b]) is b
    finally:
        await delete_queues(a_config)
