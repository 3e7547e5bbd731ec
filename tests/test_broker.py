"""Broker against the real RabbitMQ (a vhost per session, a queue prefix per test)."""

from __future__ import annotations

import json
from functools import partial
from urllib.parse import unquote

import pytest
import trio

from botd.bridge import AsyncioBridge
from botd.broker import Broker, Delivery, Subscription, Topology, open_broker
from botd.config import Config, RabbitmqConfig
from botd.errors import TransientError

TIMEOUT = 5.0


async def wait_depth(broker: Broker, queue: str, expected: int) -> None:
    """Poll the broker until ``queue`` holds ``expected`` ready messages.

    Only for effects the broker applies asynchronously (dead-lettering); bounded by fail_after.
    """
    with trio.fail_after(10):
        while await broker.queue_depth(queue) != expected:
            await trio.sleep(0.05)


async def receive(sub: Subscription, seconds: float = 5) -> Delivery:
    with trio.fail_after(seconds):
        delivery = await sub.receive()
    assert delivery is not None, "the subscription closed unexpectedly"
    return delivery


def body(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def test_topology_declares_every_queue_from_one_table() -> None:
    """Pure: the names and arguments the connection declares, the DLQ first (and last in
    ``queue_names``); each wait queue dead-letters back into the queue it waits for."""
    t = Topology("p", 2, delivery_limit=5, wait_tiers=(1, 2), timer_delays=(60,))
    declared = {d.name: d.arguments for d in t.declarations()}
    assert t.declarations()[0].name == t.dlq and t.queue_names()[-1] == t.dlq
    assert sorted(t.queue_names()) == sorted(declared) and len(declared) == 10
    assert declared[t.dlq] == {"x-queue-type": "quorum"}
    assert all(args["x-queue-type"] == "quorum" for args in declared.values())
    for queue, target, seconds in (
        (t.outbox_wait(2), t.outbox, 2),
        (t.timer_wait(60), t.timers, 60),
    ):
        assert declared[queue]["x-dead-letter-routing-key"] == target
        assert declared[queue]["x-message-ttl"] == seconds * 1000
        assert "x-single-active-consumer" not in declared[queue]
    assert declared[t.shard(1)]["x-delivery-limit"] == 5
    assert declared[t.timers]["x-dead-letter-routing-key"] == t.dlq
    for events in (t.shop_events, t.order_notes):  # order events (docs/orders.md)
        assert declared[events]["x-dead-letter-routing-key"] == t.dlq
        assert declared[events]["x-single-active-consumer"] is True


async def test_topology_is_declared_under_the_prefix(broker: Broker, config: Config) -> None:
    t = broker.topology
    assert t.shards == config.rabbitmq.shards == 2
    names = broker.queue_names()
    assert all(name.startswith(config.rabbitmq.queue_prefix + ".") for name in names)
    assert {t.shard(0), t.shard(1), t.outbox, t.dlq} <= set(names)
    for name in names:
        assert await broker.queue_depth(name) == 0
    assert broker.connected
    assert broker.statistics().connections_opened == 1


async def test_publish_then_depth_then_receive_and_ack(broker: Broker) -> None:
    queue = broker.topology.shard(0)
    await broker.publish(queue, b'{"hello": "world"}', timeout=TIMEOUT, headers={"x-test": "1"})
    assert await broker.queue_depth(queue) == 1
    assert await broker.queue_depth(broker.topology.shard(1)) == 0
    async with broker.subscribe(queue, prefetch=10) as sub:
        delivery = await receive(sub)
        assert delivery.body == b'{"hello": "world"}'
        assert delivery.redelivered is False
        assert delivery.headers.get("x-test") == "1"
        assert await broker.queue_depth(queue) == 0  # unacked, not ready
        await sub.ack(delivery)
    assert await broker.queue_depth(queue) == 0
    stats = broker.statistics()
    assert (stats.published, stats.publish_failures) == (1, 0)


async def test_unacked_message_returns_when_the_subscription_closes(broker: Broker) -> None:
    queue = broker.topology.shard(1)
    await broker.publish(queue, body(1), timeout=TIMEOUT)
    async with broker.subscribe(queue, prefetch=10) as sub:
        first = await receive(sub)
        assert first.body == body(1)
    await wait_depth(broker, queue, 1)  # the queue returns it once it has seen the channel go
    async with broker.subscribe(queue, prefetch=10) as sub:
        again = await receive(sub)
        assert again.body == body(1)
        assert again.redelivered is True
        await sub.ack(again)
    assert await broker.queue_depth(queue) == 0


async def test_nack_with_requeue_redelivers(broker: Broker) -> None:
    queue = broker.topology.shard(0)
    await broker.publish(queue, body(7), timeout=TIMEOUT)
    async with broker.subscribe(queue, prefetch=1) as sub:
        first = await receive(sub)
        assert first.redelivered is False
        await sub.nack(first, requeue=True)
        second = await receive(sub)
        assert second.body == body(7)
        assert second.redelivered is True
        await sub.ack(second)
    assert await broker.queue_depth(queue) == 0
    assert await broker.queue_depth(broker.topology.dlq) == 0


async def test_nack_without_requeue_dead_letters(broker: Broker) -> None:
    queue = broker.topology.shard(1)
    await broker.publish(queue, body(8), timeout=TIMEOUT)
    async with broker.subscribe(queue, prefetch=1) as sub:
        delivery = await receive(sub)
        await sub.nack(delivery, requeue=False)
    await wait_depth(broker, broker.topology.dlq, 1)
    assert await broker.queue_depth(queue) == 0
    async with broker.subscribe(broker.topology.dlq, prefetch=1) as dlq:
        dead = await receive(dlq)
        assert dead.body == body(8)
        await dlq.ack(dead)
    assert await broker.queue_depth(broker.topology.dlq) == 0


async def test_publish_to_a_missing_queue_is_transient(broker: Broker) -> None:
    with pytest.raises(TransientError):
        await broker.publish("no-such-queue-botd-test", body(1), timeout=TIMEOUT)
    assert broker.statistics().publish_failures == 1
    # the shared publish channel still works afterwards
    await broker.publish(broker.topology.shard(0), body(2), timeout=TIMEOUT)
    assert await broker.queue_depth(broker.topology.shard(0)) == 1


async def test_depth_of_a_missing_queue_is_transient(broker: Broker) -> None:
    with pytest.raises(TransientError):
        await broker.queue_depth("no-such-queue-botd-test")
    assert await broker.queue_depth(broker.topology.shard(0)) == 0


async def test_publish_while_not_connected_is_transient(
    bridge: AsyncioBridge, config: Config
) -> None:
    async with open_broker(bridge, config.rabbitmq) as broker:
        assert not broker.connected
        with pytest.raises(TransientError):
            await broker.publish(broker.topology.shard(0), body(1), timeout=TIMEOUT)
        stats = broker.statistics()
        assert (stats.connected, stats.published, stats.publish_failures) == (False, 0, 1)


async def test_connect_to_a_dead_broker_is_transient(bridge: AsyncioBridge, config: Config) -> None:
    dead = RabbitmqConfig(url="amqp://guest:guest@127.0.0.1:1/%2F", queue_prefix="x")
    async with open_broker(bridge, dead) as broker:
        with trio.fail_after(10), pytest.raises(TransientError):
            await broker.connect_once()
        assert not broker.connected


async def test_single_active_consumer(broker: Broker) -> None:
    queue = broker.topology.shard(0)
    first_closed = trio.Event()
    got_by_second: list[tuple[bool, Delivery]] = []

    async def second_consumer(
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with broker.subscribe(queue, prefetch=10) as sub:
            task_status.started()
            for _ in range(2):
                delivery = await receive(sub, seconds=15)
                got_by_second.append((first_closed.is_set(), delivery))
                await sub.ack(delivery)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, broker.subscribe(queue, prefetch=10) as first:
            await broker.publish(queue, body(1), timeout=TIMEOUT)
            d1 = await receive(first)
            await nursery.start(second_consumer)
            # without single-active-consumer these would be shared round-robin
            for n in range(2, 8):
                await broker.publish(queue, body(n), timeout=TIMEOUT)
            received = [d1] + [await receive(first) for _ in range(2, 8)]
            assert [d.body for d in received] == [body(n) for n in range(1, 8)]
            for d in received[:-2]:
                await first.ack(d)
            assert got_by_second == []
            first_closed.set()
            # leaving returns body(6) and body(7) unacked: the second consumer takes over
        assert [(closed, d.body, d.redelivered) for closed, d in got_by_second] == [
            (True, body(6), True),
            (True, body(7), True),
        ]


async def test_many_concurrent_publishes_are_all_confirmed(broker: Broker) -> None:
    queue = broker.topology.shard(1)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(partial(broker.publish, queue, body(n), timeout=20))
    assert await broker.queue_depth(queue) == 200
    stats = broker.statistics()
    assert (stats.published, stats.publish_failures) == (200, 0)
    seen: set[bytes] = set()
    async with broker.subscribe(queue, prefetch=250) as sub:
        for _ in range(200):
            delivery = await receive(sub)
            seen.add(delivery.body)
            await sub.ack(delivery)
    assert seen == {body(n) for n in range(200)}
    # No depth check after closing here: RabbitMQ (3.10) may drop a burst of quorum-queue acks
    # sent just before the channel closes and requeue those messages (rabbitmq-server#10327);
    # botd's consumers dedupe redeliveries, so that costs a duplicate, never a message.


async def test_poison_message_is_dead_lettered_after_the_delivery_limit(
    broker: Broker, config: Config
) -> None:
    limit = config.rabbitmq.delivery_limit
    queue = broker.topology.shard(0)
    await broker.publish(queue, body(99), timeout=TIMEOUT)
    deliveries: list[Delivery] = []
    async with broker.subscribe(queue, prefetch=1) as sub:
        # the broker allows ``limit`` returns; the next nack dead-letters the message
        for _ in range(limit + 1):
            delivery = await receive(sub)
            assert delivery.body == body(99)
            deliveries.append(delivery)
            await sub.nack(delivery, requeue=True)
        await wait_depth(broker, broker.topology.dlq, 1)
    assert await broker.queue_depth(queue) == 0
    assert [d.redelivered for d in deliveries] == [False] + [True] * limit
    async with broker.subscribe(broker.topology.dlq, prefetch=1) as dlq:
        dead = await receive(dlq)
        assert dead.body == body(99)
        await dlq.ack(dead)


async def test_delete_queues_removes_the_topology(bridge: AsyncioBridge, config: Config) -> None:
    prefix = config.rabbitmq.queue_prefix + "-del"
    rabbit = RabbitmqConfig(url=config.rabbitmq.url, queue_prefix=prefix, shards=1)
    async with open_broker(bridge, rabbit, wait_tiers=(1,)) as broker:
        await broker.connect_once()
        assert broker.connected
        names = broker.queue_names()
        assert len(names) == 7  # one shard, outbox, one wait tier, timers, 2 order events, dlq
        for name in names:
            assert await broker.queue_depth(name) == 0
        await broker.delete_queues()
        for name in names:
            with pytest.raises(TransientError):
                await broker.queue_depth(name)


async def test_shard_queues_are_quorum_single_active_with_a_dead_letter_route(
    broker: Broker, amqp_vhost_url: str
) -> None:
    vhost = unquote(amqp_vhost_url.rsplit("/", 1)[1])
    result = await trio.run_process(
        [
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "type",
            "arguments",
            "--formatter",
            "json",
        ],
        capture_stdout=True,
    )
    queues = {q["name"]: q for q in json.loads(result.stdout)}
    t = broker.topology
    for name in broker.queue_names():
        assert queues[name]["type"] == "quorum", queues[name]
    for i in range(t.shards):
        args = dict(_arguments(queues[t.shard(i)]["arguments"]))
        assert args["x-single-active-consumer"] is True, args
        assert args["x-dead-letter-routing-key"] == t.dlq
        assert args["x-delivery-limit"] == 5
    outbox_args = dict(_arguments(queues[t.outbox]["arguments"]))
    assert outbox_args["x-single-active-consumer"] is True


def _arguments(raw: object) -> list[tuple[str, object]]:
    """rabbitmqctl prints arguments as a map or as [name, value] / [name, type, value] triples."""
    if isinstance(raw, dict):
        return list(raw.items())
    assert isinstance(raw, list), raw
    out: list[tuple[str, object]] = []
    for item in raw:
        assert isinstance(item, list), raw
        out.append((str(item[0]), item[-1]))
    return out


async def test_subscribing_to_a_missing_queue_is_transient(broker: Broker) -> None:
    with pytest.raises(TransientError):
        async with broker.subscribe("no-such-queue-botd-test", prefetch=1):
            pass  # pragma: no cover
    # the connection survives a channel error
    await broker.publish(broker.topology.shard(0), body(1), timeout=TIMEOUT)
    assert await broker.queue_depth(broker.topology.shard(0)) == 1


async def test_subscription_ends_when_the_broker_cancels_the_consumer(broker: Broker) -> None:
    async with broker.subscribe(broker.topology.shard(1), prefetch=1) as sub:
        await broker.delete_queues()
        # the broker's basic.cancel arrives at once; a live subscription would end promptly
        with trio.move_on_after(2) as waited:
            ended = await sub.receive()
        assert not waited.cancelled_caught, (
            "receive() still waiting after the consumer was cancelled"
        )
        assert ended is None
