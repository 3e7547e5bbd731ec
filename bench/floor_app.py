"""The floor: the work botd's components must do per message, with none of botd around it.

``bench_e2e --floor MODE`` drives this app instead of ``botd run``, with the same driver, fake
Chat2Desk, services and message counts. Per message it does what botd does on the wire and
nothing else: Hypercorn serves the webhook as a plain ASGI app, which parses the JSON and
publishes it persistently, with a publisher confirm, to a quorum queue (one per shard); a
consumer per shard takes the delivery, runs four Redis scripts (load, commit, one rate-limit
token per reply, mark sent: botd's 4.4 round trips per message), sends the turn's replies to
Chat2Desk with aiohttp on the loop, as botd does (1.2 calls per message),
inserts a row into PostgreSQL on the dialog's last turn, and acks. No dialog, no dedupe, no
leases, no timeouts, no metrics, no supervision: what is left is the floor of the components.

The spec names a runtime and, optionally, other components (``+`` between them):
- ``guest``: as ``botd run`` is built (docs/design.md §5): Trio the guest of the uvloop loop,
  Hypercorn's Trio worker, and aiohttp, redis-py, aiormq and psycopg called through
  :class:`botd.bridge.AsyncioBridge`;
- ``asyncio``: the same components on plain asyncio (uvloop), no Trio, no bridge: Hypercorn's
  asyncio worker, everything awaited directly;
- ``+httpcore``: the replies sent by httpcore (h11) on the caller's side (Trio in ``guest``),
  the client botd used before aiohttp;
- ``+uvicorn``: the webhook served by uvicorn with httptools (a C parser) on the asyncio loop
  instead of Hypercorn + h11. Not a dependency of botd: ``pip install uvicorn httptools`` into
  the venv to measure it.

The difference between ``guest`` and ``botd run`` is the cost of botd's own work and
guarantees; between ``asyncio`` and ``guest`` the cost of Trio and the bridge; the ``+``
variants show what replacing a component would buy.

    python -m bench.bench_e2e --floor guest
    python -m bench.bench_e2e --floor guest+httpcore
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import aiormq
import hypercorn.config
import msgspec
import psycopg
import redis.asyncio
import uvloop

from bench.bench_http_client import HttpcoreClient
from botd import systemd
from botd.config import Config, load_config

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

    def __init__(self, config: Config, call: Call, *, httpcore_client: bool) -> None:
        self.config = config
        self.call = call
        self.app_call = call  # how the webhook reaches the asyncio clients
        self.session: Any = None
        self.prefix = config.redis.key_prefix
        self.queue_prefix = config.rabbitmq.queue_prefix + ".floor."
        base = config.chat2desk.base_url.rstrip("/")
        self.url = base + "/messages"
        self.http: HttpcoreClient | None = None
        if httpcore_client:
            self.http = HttpcoreClient({"Authorization": config.chat2desk.token})
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
        if self.http is None:
            headers = {"Authorization": self.config.chat2desk.token}
            self.session = aiohttp.ClientSession(headers=headers)
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

    async def aio_post(self, body: bytes) -> int:
        headers = {"Content-Type": "application/json"}
        async with self.session.post(self.url, data=body, headers=headers) as answer:
            await answer.read()
            return int(answer.status)

    async def post(self, body: dict[str, Any]) -> int:
        """One reply to Chat2Desk: the status it answered."""
        if self.http is None:
            return int(await self.call(self.aio_post, msgspec.json.encode(body)))
        return (await self.http.post(self.url, json=body)).status_code

    async def aio_serve_uvicorn(self, host: str, port: int) -> None:
        """Serve the webhook with uvicorn on this loop; return once it listens."""
        import uvicorn

        config = uvicorn.Config(
            asgi(self), host=host, port=port, loop="none", http="httptools",
            lifespan="off", access_log=False, log_level="warning", interface="asgi3",
            proxy_headers=False,
        )  # fmt: skip
        self.uvicorn = uvicorn.Server(config)
        self.uvicorn_task = asyncio.create_task(self.uvicorn.serve())
        while not self.uvicorn.started:
            await asyncio.sleep(0.05)

    async def aio_stop_uvicorn(self) -> None:
        self.uvicorn.should_exit = True
        await self.uvicorn_task

    async def aio_close(self) -> None:
        if self.session is not None:
            await self.session.close()
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
        await self.app_call(self.aio_publish, shard, body)
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
            status = await self.post(body)
            if status != 200:
                raise RuntimeError(f"chat2desk answered {status}")
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


async def direct(fn: Call, *args: Any) -> Any:
    return await fn(*args)


def free_port(host: str, port: int) -> int:
    """``port``, or a free one for 0 (servers that do not report the port they bound)."""
    if port:
        return port
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def run_guest(config: Config, parts: set[str]) -> None:
    import hypercorn.trio
    import trio

    from botd.bridge import open_bridge

    async with open_bridge() as bridge:
        floor = Floor(config, bridge.run, httpcore_client="httpcore" in parts)
        await bridge.run(floor.aio_open)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for shard in range(config.rabbitmq.shards):
                send, receive = trio.open_memory_channel[Any](float("inf"))
                nursery.start_soon(consume_trio, floor, receive)
                await bridge.run(floor.aio_consume, shard, send.send_nowait)
            if "uvicorn" in parts:  # the webhook on the asyncio side: no bridge to its clients
                floor.app_call = direct
                host = config.webhook.host
                port = free_port(host, config.webhook.port)
                await bridge.run(floor.aio_serve_uvicorn, host, port)
                ready([f"http://{host}:{port}"])
            else:
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
            if "uvicorn" in parts:
                await bridge.run(floor.aio_stop_uvicorn)
            nursery.cancel_scope.cancel()
        await bridge.run(floor.aio_close)


async def consume_trio(floor: Floor, receive: Any) -> None:
    async for message in receive:
        await floor.handle(message.channel, message)


async def run_asyncio(config: Config, parts: set[str]) -> None:
    import hypercorn.asyncio

    floor = Floor(config, direct, httpcore_client="httpcore" in parts)
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
    host = config.webhook.host
    port = free_port(host, config.webhook.port)
    if "uvicorn" in parts:
        await floor.aio_serve_uvicorn(host, port)
        ready([f"http://{host}:{port}"])
        await stop.wait()
        await floor.aio_stop_uvicorn()
    else:
        hc = hypercorn_config(config)
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
    parser.add_argument(
        "spec", help="guest|asyncio, then +httpcore, +uvicorn (e.g. guest+httpcore)"
    )
    args = parser.parse_args()
    runtime, *rest = args.spec.split("+")
    parts = set(rest)
    if runtime not in ("guest", "asyncio") or not parts <= {"uvicorn", "httpcore"}:
        parser.error(f"unknown spec {args.spec!r}")
    config = load_config(None, env=dict(os.environ))
    if runtime == "guest":
        from botd.bridge import run_as_guest

        run_as_guest(run_guest, config, parts)
    else:
        uvloop.run(run_asyncio(config, parts))


if __name__ == "__main__":
    main()
