"""The one way botd opens a Redis client from :class:`~botd.config.RedisConfig`.

Both Redis users (:mod:`botd.state_store`, :mod:`botd.shared_limiter`) call
:func:`open_redis_client`, so they always agree on where Redis is and how long to wait for it:

- ``redis.sentinels`` empty: a plain client of ``redis.url``;
- ``redis.sentinels`` set: a client of the primary of ``redis.service_name`` as the sentinels
  report it (redis-py's ``SentinelConnectionPool``). Every new connection asks the sentinels
  first, so after a fail-over the next connection goes to the promoted replica; a connection
  still open to a demoted primary gets READONLY, which the pool turns into a reconnect. The
  database number, user, password and TLS still come from ``redis.url``.

Lua scripts (``register_script``) need nothing more: EVALSHA on a primary that never saw the
script answers NOSCRIPT and redis-py loads it and runs it again (pipelines check SCRIPT EXISTS
first). Errors in the seconds before the sentinels promote a replica surface as ordinary
``redis.exceptions.ConnectionError`` — each caller already turns those into TransientError.

Call it on the asyncio thread (``bridge.run``): the client's pool belongs to that loop.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from botd.config import RedisConfig, parse_host_port

__all__ = ["SOCKET_CONNECT_TIMEOUT", "SOCKET_TIMEOUT", "open_redis_client"]

SOCKET_TIMEOUT = 5.0  # one command; a hung primary is given up on well before a step times out
SOCKET_CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 15  # an idle connection is PINGed before use after this long
# A sentinel that does not answer quickly is skipped for the next one: discovery should cost
# milliseconds, not a command's whole timeout per dead sentinel.
SENTINEL_SOCKET_TIMEOUT = 1.0


def _common() -> dict[str, Any]:
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }


def sentinel_kwargs(config: RedisConfig) -> dict[str, Any]:
    """The data node's connection options taken from ``redis.url`` when the address comes from
    the sentinels: database, user, password and TLS, never host or port."""
    parsed = parse_url(config.url)
    kwargs = {k: parsed[k] for k in ("db", "username", "password") if parsed.get(k) is not None}
    if config.url.startswith("rediss://"):
        kwargs["ssl"] = True
    return kwargs


class _SentinelRedis(aioredis.Redis):
    """A primary's client that also closes the sentinel clients it asks (redis-py leaves
    them open: ``Sentinel.aclose`` is separate), so no connection outlives botd's client."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        try:
            await super().aclose(close_connection_pool)
        finally:
            if isinstance(pool, SentinelConnectionPool):
                await pool.sentinel_manager.aclose()


def open_redis_client(config: RedisConfig) -> aioredis.Redis:
    """A client of ``config``'s Redis primary (see the module doc); the caller closes it with
    ``aclose()``, which also closes the Sentinel pool's connections."""
    if not config.sentinels:
        return aioredis.Redis.from_url(config.url, **_common())
    sentinel = Sentinel(
        [parse_host_port(s) for s in config.sentinels],
        sentinel_kwargs={
            "socket_timeout": SENTINEL_SOCKET_TIMEOUT,
            "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT,
        },
    )
    client: aioredis.Redis = sentinel.master_for(
        config.service_name, redis_class=_SentinelRedis, **_common(), **sentinel_kwargs(config)
    )
    return client
