"""Several RabbitMQ nodes in ``rabbitmq.url``: the list's parsing, the order nodes are tried in,
and fail-over on the real main broker (a dead port stands for a dead node, and two names of the
one broker for two live nodes). The real three-node cluster is tests/cluster/."""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiormq.abc
import pytest
import trio

from botd.bridge import AsyncioBridge
from botd.broker import Broker, connection, layout, open_broker
from botd.broker.nodes import Nodes, node_label
from botd.broker.topology import Topology
from botd.config import Config, describe, load_config
from botd.errors import ConfigError, PermanentError, TransientError

NODES = "amqp://u:pw-one@10.0.0.1:5681/%2F,amqp://u:pw-two@10.0.0.2:5682/%2F"


# ---- rabbitmq.url: one URL or several ----------------------------------------------------------
def test_a_single_url_is_a_list_of_one() -> None:
    default = load_config(None, env={}).rabbitmq
    assert default.url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert default.urls == (default.url,)
    one = load_config(None, env={"BOTD_RABBITMQ_URL": "amqps://u:p@mq.example/vh"}).rabbitmq
    assert one.urls == ("amqps://u:p@mq.example/vh",)


def test_a_comma_separated_list_in_the_environment() -> None:
    spaced = NODES.replace(",", " , ") + ","
    config = load_config(None, env={"BOTD_RABBITMQ_URL": spaced}).rabbitmq
    assert config.urls == tuple(NODES.split(","))


def test_a_toml_string_or_array(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[rabbitmq]\nurl = "{NODES}"\n', encoding="utf-8")
    assert load_config(path, env={}).rabbitmq.urls == tuple(NODES.split(","))
    first, second = NODES.split(",")
    path.write_text(f'[rabbitmq]\nurl = ["{first}", "{second}"]\n', encoding="utf-8")
    config = load_config(path, env={}).rabbitmq
    assert config.url == NODES and config.urls == (first, second)


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ("amqp://u:pw-one@h1/,http://u:pw-two@h2/", "URL 2 of 2 must be a URL starting with amqp"),
        ("amqp://u:pw-one@h1/,h2:5672", "URL 2 of 2 must be a URL starting with amqp"),
        (" , ", "must be a URL starting with amqp:// or amqps://"),
        ("http://u:pw-one@h1/", "BOTD_RABBITMQ_URL = 'http://u:***@h1/': must be a URL"),
    ],
)
def test_every_url_of_the_list_is_checked(value: str, wanted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"BOTD_RABBITMQ_URL": value})
    message = str(caught.value)
    assert wanted in message and "default is" in message
    assert "pw-one" not in message and "pw-two" not in message


def test_a_toml_array_of_other_things_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[rabbitmq]\nurl = ["amqp://h1/", 5682]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[rabbitmq\] url = .*must be a string"):
        load_config(path, env={})


def test_every_password_of_the_list_is_masked() -> None:
    config = load_config(None, env={"BOTD_RABBITMQ_URL": NODES})
    shown = next(row[2] for row in describe(config) if row[:2] == ("rabbitmq", "url"))
    assert "pw-one" not in shown and "pw-two" not in shown
    assert "10.0.0.1:5681" in shown and "10.0.0.2:5682" in shown


def test_quorum_initial_group_size_is_checked() -> None:
    assert load_config(None, env={}).rabbitmq.quorum_initial_group_size == 0
    env = {"BOTD_RABBITMQ_QUORUM_INITIAL_GROUP_SIZE": "3"}
    assert load_config(None, env=env).rabbitmq.quorum_initial_group_size == 3
    with pytest.raises(
        ConfigError, match="QUORUM_INITIAL_GROUP_SIZE = -1: must be between 0 and 99"
    ):
        load_config(None, env={"BOTD_RABBITMQ_QUORUM_INITIAL_GROUP_SIZE": "-1"})


def test_the_quorum_group_size_argument_is_left_out_unless_set() -> None:
    """0 declares the queues exactly as older versions did (RabbitMQ refuses a redeclaration
    that adds the argument: see test_adding_the_group_size_to_existing_queues_fails)."""
    for declared in Topology("p", 2).declarations():
        assert "x-quorum-initial-group-size" not in declared.arguments
    three = Topology("p", 2, quorum_initial_group_size=3).declarations()
    assert all(d.arguments["x-quorum-initial-group-size"] == 3 for d in three)
    assert all(d.arguments["x-queue-type"] == "quorum" for d in three)


# ---- the order nodes are tried in ----------------------------------------------------------------
def test_nodes_are_tried_in_order_starting_after_the_last_that_failed() -> None:
    nodes = Nodes(["amqp://a/", "amqp://b/", "amqp://c/"])
    assert nodes.current == "amqp://a/"
    assert nodes.failed() is False and nodes.current == "amqp://b/"
    nodes.connected()  # b took the connection
    assert nodes.current == "amqp://b/"
    # b drops the connection: c, then a, then (every node failed in a row) back off, then b
    assert nodes.failed() is False and nodes.current == "amqp://c/"
    assert nodes.failed() is False and nodes.current == "amqp://a/"
    assert nodes.failed() is True and nodes.current == "amqp://b/"
    # the next round starts a fresh streak
    assert nodes.failed() is False and nodes.current == "amqp://c/"


def test_a_lone_node_backs_off_after_each_failure() -> None:
    nodes = Nodes(["amqp://only/"])
    assert [nodes.failed() for _ in range(3)] == [True, True, True]
    assert nodes.current == "amqp://only/"
    with pytest.raises(ValueError):
        Nodes([])


def test_node_labels_name_host_and_port_only() -> None:
    assert node_label("amqp://u:secret@10.0.0.1:5681/%2F") == "10.0.0.1:5681"
    assert node_label("amqp://mq/") == "mq:5672"
    assert node_label("amqps://mq/") == "mq:5671"
    assert node_label("amqp://[::1]:5682/") == "[::1]:5682"
    nodes = Nodes(NODES.split(","))
    assert nodes.label == "10.0.0.1:5681 (node 1 of 2)"
    assert Nodes(["amqp://mq/"]).label == "mq:5672"


# ---- on the real broker --------------------------------------------------------------------------
def _dead_url(live: str) -> str:
    """``live`` with the port of nothing: a node that is down (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    parts = urlsplit(live)
    return parts._replace(
        netloc=parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{port}")
    ).geturl()


def _other_name(live: str) -> str:
    """``live`` through ``localhost``: the same broker under a second node label."""
    parts = urlsplit(live)
    return parts._replace(netloc=parts.netloc.replace(f"{parts.hostname}:", "localhost:")).geturl()


async def test_connect_once_skips_a_dead_node(
    bridge: AsyncioBridge, make_config: Callable[..., Config], amqp_vhost_url: str
) -> None:
    config = make_config(rabbitmq_url=f"{_dead_url(amqp_vhost_url)},{amqp_vhost_url}")
    async with open_broker(bridge, config.rabbitmq, **layout(config)) as broker:
        try:
            await broker.connect_once()
            assert broker.connected
            assert broker.node == f"{node_label(amqp_vhost_url)} (node 2 of 2)"
        finally:
            await broker.delete_queues()


async def test_serve_fails_over_to_the_next_node_and_logs_which(
    bridge: AsyncioBridge,
    make_config: Callable[..., Config],
    amqp_vhost_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Dead node first: serve connects to the second; when that connection is lost it goes on
    to the third (the same broker by another name) at once, without a back-off."""
    dead, live, other = _dead_url(amqp_vhost_url), amqp_vhost_url, _other_name(amqp_vhost_url)
    config = make_config(rabbitmq_url=f"{dead},{live},{other}")
    caplog.set_level(logging.INFO, logger="botd.broker")
    async with (
        open_broker(bridge, config.rabbitmq, **layout(config)) as broker,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(broker.serve)
        assert broker.node == f"{node_label(live)} (node 2 of 3)"
        assert any(
            f"rabbitmq connect to {node_label(dead)} (node 1 of 3) failed, trying "
            f"{node_label(live)} (node 2 of 3)" in r.getMessage()
            for r in caplog.records
        )
        await _drop_connection(bridge, broker)
        with trio.fail_after(10):
            while not (broker.connected and broker.node):
                await trio.sleep(0.01)
        assert broker.node == f"{node_label(other)} (node 3 of 3)"
        messages = [r.getMessage() for r in caplog.records]
        assert f"rabbitmq connected to {node_label(other)} (node 3 of 3)" in "\n".join(messages)
        assert not any("retrying in" in m for m in messages), messages
        assert broker.statistics().connections_opened == 2
        await broker.delete_queues()
        nursery.cancel_scope.cancel()


async def _drop_connection(bridge: AsyncioBridge, broker: Broker) -> None:
    """Close the broker's connection under it, as a node that goes away would, and wait until
    the keeper has opened the next one (it may be connected again between two looks at
    ``connected``: the next node answers at once)."""
    connection = broker._connection
    assert connection is not None
    opened = broker.statistics().connections_opened
    await bridge.run(connection.close)
    with trio.fail_after(10):
        while broker.statistics().connections_opened == opened or not broker.connected:
            await trio.sleep(0.01)


async def test_adding_the_group_size_to_existing_queues_fails(
    bridge: AsyncioBridge, config: Config
) -> None:
    """What decided ``quorum_initial_group_size = 0`` (argument left out) as the default: on
    RabbitMQ 3.10 redeclaring a queue with another x-quorum-initial-group-size than it was
    created with, including adding it to a queue declared without, is PRECONDITION_FAILED. A
    non-zero default would stop botd against the queues of every older deployment."""
    older = config.rabbitmq  # the argument left out, as every version before it
    async with open_broker(bridge, older, **layout(config)) as broker:
        await broker.connect_once()
        await broker.aclose()
    try:
        for size in (0, 3):
            rabbit = dataclasses.replace(older, quorum_initial_group_size=size)
            async with open_broker(bridge, rabbit, **layout(config)) as broker:
                if size == 0:
                    await broker.connect_once()  # the default keeps starting
                else:
                    with pytest.raises(PermanentError, match="x-quorum-initial-group-size"):
                        await broker.connect_once()
    finally:
        async with open_broker(bridge, older, **layout(config)) as broker:
            await broker.connect_once()
            await broker.delete_queues()


async def test_a_nacked_publish_moves_publishing_to_a_new_channel(
    bridge: AsyncioBridge,
    broker: Broker,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A channel RabbitMQ nacks may be one it will nack until a lost node returns (a quorum
    queue's publisher registered with a dead leader; see REPLACE_NACKED_CHANNEL_SECONDS), so
    publishing moves to a new channel, at most that often. A queue that is always full stands
    in for the nacking broker."""
    full = broker.topology.prefix + ".full"

    async def on_channel(declare: bool) -> None:
        async def run(channel: aiormq.abc.AbstractChannel) -> None:
            if declare:
                await channel.queue_declare(
                    full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
                )
            else:
                await channel.queue_delete(full)

        await bridge.run(broker._on_temp_channel, run)

    await on_channel(declare=True)
    try:
        monkeypatch.setattr(connection, "REPLACE_NACKED_CHANNEL_SECONDS", 0.0)
        nacked = broker._publish_channel
        with pytest.raises(TransientError, match="refused"):
            await broker.publish(full, b"{}", timeout=5)
        assert broker._publish_channel is not nacked and nacked is not None and nacked.is_closed
        assert "rabbitmq nacked a publish; publishing on a new channel" in caplog.text
        await broker.publish(broker.topology.shard(0), b"{}", timeout=5)  # the new one works

        monkeypatch.setattr(connection, "REPLACE_NACKED_CHANNEL_SECONDS", 3600.0)
        current = broker._publish_channel
        for _ in range(3):
            with pytest.raises(TransientError, match="refused"):
                await broker.publish(full, b"{}", timeout=5)
        assert broker._publish_channel is current  # not again within the interval
    finally:
        await on_channel(declare=False)
