"""``redis.sentinels`` / ``redis.service_name`` (config) and the client botd opens from them
(botd.redis_client). The fail-over itself: tests/cluster/test_redis_failover.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from botd.config import RedisConfig, load_config, parse_host_port
from botd.errors import ConfigError
from botd.redis_client import SENTINEL_SOCKET_TIMEOUT, open_redis_client
from botd.testing.process import config_env


def problems(env: dict[str, str], toml: str | None = None, tmp_path: Path | None = None) -> str:
    path = None
    if toml is not None:
        assert tmp_path is not None
        path = tmp_path / "config.toml"
        path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


# ---- config --------------------------------------------------------------------------------
def test_sentinels_are_off_by_default() -> None:
    c = load_config(None, env={})
    assert c.redis.sentinels == ()
    assert c.redis.service_name == "botd"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.0.0.1:26379", ("10.0.0.1:26379",)),
        (
            " 10.0.0.1:26379 , redis-b.internal:26380,,[::1]:26381 ",
            ("10.0.0.1:26379", "redis-b.internal:26380", "[::1]:26381"),
        ),
        ("", ()),
    ],
)
def test_sentinels_in_the_environment_are_comma_separated(
    raw: str, expected: tuple[str, ...]
) -> None:
    c = load_config(None, env={"BOTD_REDIS_SENTINELS": raw, "BOTD_REDIS_SERVICE_NAME": "shop-1"})
    assert c.redis.sentinels == expected
    assert c.redis.service_name == "shop-1"


def test_sentinels_in_the_file_are_a_list(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[redis]\nsentinels = ["a:1", "b:2"]\nservice_name = "main"\n', encoding="utf-8"
    )
    c = load_config(path, env={})
    assert (c.redis.sentinels, c.redis.service_name) == (("a:1", "b:2"), "main")


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("10.0.0.1", "'10.0.0.1' is not host:port"),
        ("10.0.0.1:", "no port number"),
        (":26379", "is not host:port"),
        ("10.0.0.1:sentinel", "no port number"),
        ("10.0.0.1:0", "no port number"),
        ("10.0.0.1:65536", "no port number"),
        ("10.0.0.1:26379,10.0.0.2", "'10.0.0.2' is not host:port"),
        ("redis://10.0.0.1:26379", "is not host:port"),
    ],
)
def test_a_bad_sentinel_address_is_named_with_the_fix(raw: str, named: str) -> None:
    problem = problems({"BOTD_REDIS_SENTINELS": raw})
    assert problem.startswith("BOTD_REDIS_SENTINELS = "), problem
    assert named in problem
    assert "host:port entries" in problem and "default is ()" in problem


def test_sentinels_in_the_file_must_be_strings(tmp_path: Path) -> None:
    problem = problems({}, "[redis]\nsentinels = [26379]\n", tmp_path)
    assert "[redis] sentinels" in problem and "list of strings" in problem


@pytest.mark.parametrize("name", ["", "two words", "bad/name"])
def test_a_bad_service_name_is_refused(name: str) -> None:
    problem = problems({"BOTD_REDIS_SERVICE_NAME": name})
    assert "BOTD_REDIS_SERVICE_NAME" in problem and "sentinels monitor" in problem


def test_sentinels_with_a_unix_socket_url_are_refused() -> None:
    problem = problems(
        {"BOTD_REDIS_SENTINELS": "a:1", "BOTD_REDIS_URL": "unix:///run/redis/redis.sock"}
    )
    assert "[redis] url" in problem and "sentinels" in problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a:1", ("a", 1)),
        ("[::1]:26379", ("::1", 26379)),
        (" h.example:65535 ", ("h.example", 65535)),
    ],
)
def test_parse_host_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected


def test_a_subprocess_gets_the_same_sentinels() -> None:
    """``botd run`` subprocesses (tests, benchmarks) get the list back as it was."""
    c = load_config(None, env={"BOTD_REDIS_SENTINELS": "a:1,b:2"})
    env = config_env(c)
    assert env["BOTD_REDIS_SENTINELS"] == "a:1,b:2"
    assert load_config(None, env=env).redis == c.redis


# ---- the client ----------------------------------------------------------------------------
def test_without_sentinels_the_client_connects_to_the_url() -> None:
    async def main() -> None:
        client = open_redis_client(RedisConfig(url="redis://127.0.0.1:6390/3"))
        try:
            assert not isinstance(client.connection_pool, SentinelConnectionPool)
            kwargs = client.connection_pool.connection_kwargs
            assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 3)
            assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (5, 2)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_with_sentinels_the_client_follows_the_service_keeping_db_and_timeouts() -> None:
    """The address comes from the sentinels; db, user, password and the timeouts from the
    section (never the url's host: it is ignored)."""
    config = RedisConfig(
        url="redis://botd:s3cret@ignored.example:6379/4",
        sentinels=("127.0.0.1:1", "[::1]:2"),
        service_name="shop",
    )

    async def main() -> None:
        client = open_redis_client(config)
        try:
            pool = client.connection_pool
            assert isinstance(pool, SentinelConnectionPool)
            assert pool.service_name == "shop" and pool.is_master
            kwargs = pool.connection_kwargs
            assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (4, "botd", "s3cret")
            assert "host" not in kwargs
            assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (5, 2)
            assert kwargs["health_check_interval"] == 15
            sentinels = pool.sentinel_manager.sentinels
            addresses = [
                (
                    s.connection_pool.connection_kwargs["host"],
                    s.connection_pool.connection_kwargs["port"],
                )
                for s in sentinels
            ]
            assert addresses == [("127.0.0.1", 1), ("::1", 2)]
            assert all(
                s.connection_pool.connection_kwargs["socket_timeout"] == SENTINEL_SOCKET_TIMEOUT
                for s in sentinels
            )
        finally:
            await client.aclose()

    asyncio.run(main())


def test_no_sentinel_answering_is_a_connection_error() -> None:
    """Nothing listens on the sentinels' ports: a ConnectionError (which botd's callers turn
    into TransientError), quickly, and closing the client still works."""

    async def main() -> None:
        client = open_redis_client(RedisConfig(sentinels=("127.0.0.1:1", "127.0.0.1:2")))
        try:
            with pytest.raises(aioredis.ConnectionError, match="No master found for 'botd'"):
                await asyncio.wait_for(client.ping(), 10)
        finally:
            await client.aclose()

    asyncio.run(main())
