"""The floor: the work botd's components must do per message, with none of botd around it.

``bench_e2e --floor MODE`` drives this app instead of ``botd run``, with the same driver, fake
Chat2Desk, services and message counts. Per message it does what botd does on the wire and
nothing else: Hypercorn serves the webhook as a plain ASGI app, which parses the JSON and
publishes it persistently, with a publisher confirm, to a quorum queue (one per shard); a
consumer per shard takes the delivery, runs four Redis scripts (load, commit, one rate-limit
token per reply, mark sent: botd's 4.4 round trips per message), sends the turn's replies to
Chat2Desk with botd's reply client (:class:`botd.lean_http.LeanClient`, 1.2 calls per message),
inserts a row into PostgreSQL on the dialog's last turn, and acks. No dialog, no dedupe, no
leases, no timeouts, no metrics, no supervision: what is left is the floor of the components.

Two modes:
- ``guest``: as ``botd run`` is built (docs/design.md §5): Trio the guest of the uvloop loop,
  Hypercorn's Trio worker, the reply client on Trio, and redis-py, aiormq and psycopg called
  through :class:`botd.bridge.AsyncioBridge`;
- ``asyncio``: the same components on plain asyncio (uvloop), no Trio, no bridge: Hypercorn's
  asyncio worker, everything awaited directly.

The difference between ``guest`` and ``botd run`` is the cost of botd's own work and
guarantees; the difference between ``asyncio`` and ``guest`` is the cost of Trio and the
bridge.

    python -m bench.bench_e2e --floor guest
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq
import hypercorn.config
import msgspec
import psycopg
import redis.asyncio
import uvloop

from botd import systemd
from botd.config import Config, load_config
from botd.lean_http import LeanClient

REPLIES = (2, 1, 1, 1, 1)  # what botd answers to each of the driver's five turns
_LOAD = "return redis.call('HINCRBY', KEYS[1], 'turn', 1)"
_COMMIT = "redis.call('HSET', KEYS[1], 'state', ARGV[1]) return redis.call('EXPIRE', KEYS[1], 600)"
_TOKEN = "return redis.call('INCR', KEYS[1])"
_MARK = "return redis.call('SET', KEYS[1], '1', 'EX', 600)"
_QUEUED = b'{"status":"queued"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"19")]

Call = Callable[..., Awaitable[Any]]


class Floor:
    """The per-message work; ``call(fn, *args)`` runs an asyncio-side coroutine function."""

    def __init__(self, config: Config, call: Call) -> None:
        self.config = config
        self.call = call
        self.prefix = config.redis.key_prefix
        self.queue_prefix = config.rabbitmq.queue_prefix + ".floor."
        base = config.chat2desk.base_url.rstrip("/")
        self.url = base + "/messages"
        self.http = LeanClient(
            headers={"Authorization": config.chat2desk.token}, timeout_seconds=10.0
        )
        self.publish_channel: Any = None

    async def aio_open(self) -> None:
        """Connections and queues, on the asyncio side."""
        self.redis = redis.asyncio.Redis.from_url(self.config.redis.url)
        self.load = self.redis.register_script(_LOAD)
        self.commit = self.redis.register_script(_COMMIT)
        self.token = self.redis.register_script(_TOKEN)
        self.mark = self.redis.register_script(_MARK)
        self.amqp = await aiormq.connect(self.config.rabbitmq.url)
        self.publish_channel = await self.amqp.channel(publisher_confirms=True)
        for shard in range(self.config.rabbitmq.shards):
            await self.publish_channel.queue_declare(
                self.queue_prefix + str(shard),
                durable=True,
                arguments={"x-queue-type": "quorum"},
            )
        self.pg = await psycopg.AsyncConnection.connect(self.config.postgres.dsn, autocommit=True)
        await self.pg.execute(
            "CREATE TABLE IF NOT EXISTS floor_orders (id bigserial PRIMARY KEY, client text)"
        )

    async def aio_consume(self, shard: int, deliver: Callable[[Any], None]) -> None:
        channel = await self.amqp.channel(publisher_confirms=False)
        await channel.basic_qos(prefetch_count=self.config.rabbitmq.prefetch)

        async def on_message(message: Any) -> None:
            deliver(message)

        await channel.basic_consume(self.queue_prefix + str(shard), on_message, no_ack=False)

    async def aio_publish(self, shard: int, body: bytes) -> None:
        await self.publish_channel.basic_publish(
            body,
            routing_key=self.queue_prefix + str(shard),
            properties=aiormq.spec.Basic.Properties(delivery_mode=2),
        )

    async def aio_insert(self, client: str) -> None:
        await self.pg.execute("INSERT INTO floor_orders (client) VALUES (%s)", (client,))

    async def aio_close(self) -> None:
        for shard in range(self.config.rabbitmq.shards):
            await self.publish_channel.queue_delete(self.queue_prefix + str(shard))
        await self.amqp.close()
        await self.redis.aclose()
        await self.pg.close()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The webhook: read, parse, publish with a confirm, answer."""
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if scope["path"] == "/metrics":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        event = msgspec.json.decode(body)
        shard = int(event["client_id"]) % self.config.rabbitmq.shards
        await self.call(self.aio_publish, shard, body)
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _QUEUED})

    async def handle(self, channel: Any, message: Any) -> None:
        """One delivery: load, commit, a token and a reply per answer, mark sent, ack."""
        event = msgspec.json.decode(message.body)
        client = str(event["client_id"])
        key = f"{self.prefix}floor:{client}"
        turn = int(await self.call(self.load, [key], []))
        await self.call(self.commit, [key], [message.body])
        for i in range(REPLIES[(turn - 1) % len(REPLIES)]):
            await self.call(self.token, [f"{self.prefix}floor:tokens"], [])
            body = {"client_id": int(client), "text": f"reply {turn}.{i}", "type": "to_client"}
            answer = await self.http.post(self.url, json=body)
            if answer.status_code != 200:
                raise RuntimeError(f"chat2desk answered {answer.status_code}")
        if turn % len(REPLIES) == 0:
            await self.call(self.aio_insert, client)
        await self.call(self.mark, [f"{self.prefix}floor:sent:{event['message_id']}"], [])
        await self.call(channel.basic_ack, message.delivery.delivery_tag)


def asgi(floor: Floor) -> Any:
    """The webhook as Hypercorn takes it (its ASGI types are narrower than this plain app's)."""
    return floor.app


def hypercorn_config(config: Config) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    hc.bind = [f"{config.webhook.host}:{config.webhook.port}"]
    hc.accesslog = None
    return hc


def ready(binds: list[str]) -> None:
    systemd.notify(f"READY=1\nSTATUS=floor, webhook {binds[0]}")


async def run_guest(config: Config) -> None:
    import hypercorn.trio
    import trio

    from botd.bridge import open_bridge

    async with open_bridge() as bridge:
        floor = Floor(config, bridge.run)
        await bridge.run(floor.aio_open)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for shard in range(config.rabbitmq.shards):
                send, receive = trio.open_memory_channel[Any](float("inf"))
                nursery.start_soon(consume_trio, floor, receive)
                await bridge.run(floor.aio_consume, shard, send.send_nowait)
            binds = await nursery.start(
                lambda task_status: hypercorn.trio.serve(
                    asgi(floor), hypercorn_config(config), shutdown_trigger=stop.wait,
                    task_status=task_status,
                )
            )  # fmt: skip
            ready(binds)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()
        await bridge.run(floor.aio_close)


async def consume_trio(floor: Floor, receive: Any) -> None:
    async for message in receive:
        await floor.handle(message.channel, message)


async def run_asyncio(config: Config) -> None:
    import hypercorn.asyncio

    async def direct(fn: Call, *args: Any) -> Any:
        return await fn(*args)

    floor = Floor(config, direct)
    await floor.aio_open()
    tasks = []
    for shard in range(config.rabbitmq.shards):
        queue: asyncio.Queue[Any] = asyncio.Queue()
        tasks.append(asyncio.create_task(consume_asyncio(floor, queue)))
        await floor.aio_consume(shard, queue.put_nowait)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hc = hypercorn_config(config)
    host, port = config.webhook.host, config.webhook.port
    if port == 0:  # Hypercorn's asyncio worker does not report the port it bound: choose one
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        hc.bind = [f"{host}:{port}"]
    serving = asyncio.create_task(
        hypercorn.asyncio.serve(asgi(floor), hc, shutdown_trigger=stop.wait)
    )
    while True:  # serving once a connection is accepted
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        break
    ready([f"http://{host}:{port}"])
    await serving
    for task in tasks:
        task.cancel()
    await floor.aio_close()


async def consume_asyncio(floor: Floor, queue: asyncio.Queue[Any]) -> None:
    while True:
        message = await queue.get()
        await floor.handle(message.channel, message)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("guest", "asyncio"), default="guest")
    args = parser.parse_args()
    config = load_config(None, env=dict(os.environ))
    if args.mode == "guest":
        from botd.bridge import run_as_guest

        run_as_guest(run_guest, config)
    else:
        uvloop.run(run_asyncio(config))


if __name__ == "__main__":
    main()
