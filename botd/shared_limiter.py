"""The Chat2Desk rate limit of one account, shared in Redis by every botd process
(docs/design.md §3.6).

Each send asks one Lua script (loaded once, then EVALSHA) that runs atomically in Redis and
answers "go" or "wait N µs"; the caller sleeps that long on Trio and asks again. Within a process
the waiters queue behind a fair ``trio.Lock``, so they stay first come, first served and only the
head of the queue talks to Redis. The script

- paces like :class:`~botd.ratelimit.TokenBucket`: GCRA with emission interval ``window / limit``
  (rounded up to a µs) and ``burst`` calls of tolerance;
- caps: no ``window`` + ``margin`` span holds more than ``limit`` admissions (a sorted set of
  admission times, trimmed in the same script);
- honours the shared pause a 429 sets (:meth:`SharedLimiter.pause_for`; only ever extended);
- uses Redis ``TIME`` as the one clock of every process. Stored times are that clock plus a
  stored skew which grows when ``TIME`` steps back, so the shared clock never runs backwards
  (a step back would otherwise hold every sender until the wall clock caught up again).

Keys (``{redis.key_prefix}ratelimit:{first 16 hex of sha256(chat2desk.token)}``; never the token):
the key itself is a hash (``tat``, ``paused``, ``last``, ``skew``, ``seq``) and ``…:admitted``
the sorted set. Every call sets both TTLs to the time their content still matters (+1 s), so
nothing lingers after the traffic stops.

Redis errors become :class:`~botd.errors.TransientError`: the send fails like any transient
failure (retried, then parked in the outbox).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import trio

from botd.bridge import AsyncioBridge
from botd.config import Config, RedisConfig
from botd.errors import TransientError
from botd.ratelimit import WINDOW_MARGIN_SECONDS, WINDOW_SECONDS, LimiterStatistics
from botd.redis_client import open_redis_client

__all__ = ["SharedLimiter", "limiter_key", "open_limiter", "open_shared_limiter"]

log = logging.getLogger("botd.ratelimit")

# KEYS[1] hash, KEYS[2] sorted set of admissions (score: µs, member: seq).
# ARGV: mode ("acquire" | "pause"), limit, interval µs, burst, span µs, pause µs.
# acquire → {1, 0} admitted, or {0, wait µs}; pause → {1 if extended else 0, pause left µs}.
# Numbers handed to redis.call are written with 17 significant digits, so integer µs since the
# epoch (< 2^53) are stored exactly.
_SCRIPT = """
local t = redis.call('TIME')
local h = redis.call('HMGET', KEYS[1], 'tat', 'paused', 'last', 'skew')
local tat = tonumber(h[1]) or 0
local paused = tonumber(h[2]) or 0
local last = tonumber(h[3]) or 0
local skew = tonumber(h[4]) or 0
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + skew
if now < last then
  skew = skew + last - now
  now = last
end
local span = tonumber(ARGV[5])
local result
if ARGV[1] == 'pause' then
  local extended = 0
  if now + tonumber(ARGV[6]) > paused then
    paused = now + tonumber(ARGV[6])
    extended = 1
  end
  result = {extended, paused - now}
else
  local limit = tonumber(ARGV[2])
  local interval = tonumber(ARGV[3])
  local burst = tonumber(ARGV[4])
  if tat < now then tat = now end
  local wait = math.max(paused - now, tat - (burst - 1) * interval - now)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - span)
  local count = redis.call('ZCARD', KEYS[2])
  if count >= limit then
    local nth = redis.call('ZRANGE', KEYS[2], count - limit, count - limit, 'WITHSCORES')
    wait = math.max(wait, tonumber(nth[2]) + span - now)
  end
  if wait > 0 then
    result = {0, wait}
  else
    tat = tat + interval
    redis.call('ZADD', KEYS[2], now, redis.call('HINCRBY', KEYS[1], 'seq', 1))
    result = {1, 0}
  end
end
redis.call('HSET', KEYS[1], 'tat', tat, 'paused', paused, 'last', now, 'skew', skew)
local ttl = math.ceil((math.max(tat, paused, now) - now + span) / 1000) + 1000
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return result
"""


def limiter_key(key_prefix: str, token: str) -> str:
    """The account's key: the token's hash, so the token itself never reaches Redis."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"{key_prefix}ratelimit:{digest}"


class SharedLimiter:
    """``limit`` calls per ``window_seconds`` with bursts of ``burst``, for every process whose
    limiter uses the same Redis ``key``. Same interface as :class:`~botd.ratelimit.TokenBucket`.
    """

    def __init__(
        self,
        bridge: AsyncioBridge,
        *,
        redis: RedisConfig,
        key: str,
        limit: int,
        burst: int,
        window_seconds: float = WINDOW_SECONDS,
        margin_seconds: float | None = None,
    ) -> None:
        if margin_seconds is None:
            margin_seconds = window_seconds * WINDOW_MARGIN_SECONDS / WINDOW_SECONDS
        self._bridge = bridge
        self._redis = redis
        self.keys = (key, f"{key}:admitted")
        burst = max(1, min(burst, limit))
        span_us = round((window_seconds + margin_seconds) * 1e6)
        # rounded up: the pace may be a µs per call slower, never faster
        interval_us = math.ceil(window_seconds * 1e6 / limit)
        self._args = [limit, interval_us, burst, span_us]
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        self._lock = trio.Lock()  # FIFO: trio.Lock is fair
        self._paused_until = 0.0  # this process's view, trio.current_time() scale
        self._admitted = 0
        self._waiting = 0
        self._wait_total = 0.0
        self._pauses = 0

    async def _aio_open(self) -> None:
        self._client = open_redis_client(self._redis)
        self._script = self._client.register_script(_SCRIPT)

    async def _aio_close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _call(self, mode: str, pause_us: int = 0) -> tuple[int, int]:
        """Run the script once; (admitted or extended, µs to wait or left of the pause)."""
        script, keys, args = self._script, self.keys, [mode, *self._args, pause_us]

        async def call() -> tuple[int, int]:
            if script is None or self._client is None:
                raise TransientError("redis client is closed")
            try:
                flag, micros = await script(keys=keys, args=args)
            except (redis.exceptions.RedisError, OSError) as exc:
                raise TransientError(f"redis unavailable: {type(exc).__name__}: {exc}") from exc
            return int(flag), int(micros)

        return await self._bridge.run(call)

    def statistics(self) -> LimiterStatistics:
        """This process's share: its admissions, waiters, wait time and the pauses it set."""
        return LimiterStatistics(
            self._admitted, self._waiting, self._wait_total, self._paused_until, self._pauses
        )

    async def pause_for(self, seconds: float) -> None:
        """Hold every sender of every process for ``seconds`` from now (a 429's Retry-After).

        The pause holds in this process even if Redis cannot be told (then this raises
        TransientError)."""
        self._paused_until = max(self._paused_until, trio.current_time() + seconds)
        extended, left_us = await self._call("pause", math.ceil(seconds * 1e6))
        self._pauses += extended
        if extended:
            log.info("chat2desk rate limit: every sender paused for %.1fs", left_us / 1e6)

    async def acquire(self) -> None:
        """Wait for permission to make one call (FIFO in this process)."""
        start = trio.current_time()
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    local_pause = self._paused_until - trio.current_time()
                    if local_pause > 0:
                        await trio.sleep(local_pause)
                        continue
                    admitted, wait_us = await self._call("acquire")
                    if admitted:
                        break
                    await trio.sleep(wait_us / 1e6)
                self._admitted += 1
        finally:
            self._waiting -= 1
            self._wait_total += trio.current_time() - start


@asynccontextmanager
async def open_limiter(
    bridge: AsyncioBridge,
    *,
    redis: RedisConfig | None = None,
    redis_url: str | None = None,
    key: str,
    limit: int,
    burst: int,
    window_seconds: float = WINDOW_SECONDS,
    margin_seconds: float | None = None,
) -> AsyncIterator[SharedLimiter]:
    """A :class:`SharedLimiter` with its Redis client, closed on exit. Redis is ``redis`` (the
    daemon's section, Sentinel included) or, for tests and benchmarks, a plain ``redis_url``."""
    if (redis is None) == (redis_url is None):
        raise TypeError("open_limiter needs exactly one of redis and redis_url")
    limiter = SharedLimiter(
        bridge,
        redis=redis if redis is not None else RedisConfig(url=str(redis_url)),
        key=key,
        limit=limit,
        burst=burst,
        window_seconds=window_seconds,
        margin_seconds=margin_seconds,
    )
    await bridge.run(limiter._aio_open)
    try:
        yield limiter
    finally:
        with trio.CancelScope(shield=True):
            await bridge.run(limiter._aio_close)


def open_shared_limiter(
    bridge: AsyncioBridge, config: Config
) -> AbstractAsyncContextManager[SharedLimiter]:
    """The daemon's limiter: ``chat2desk.requests_per_minute`` and ``chat2desk.burst``, shared
    under ``redis.key_prefix`` by every process with the same ``chat2desk.token``."""
    return open_limiter(
        bridge,
        redis=config.redis,
        key=limiter_key(config.redis.key_prefix, config.chat2desk.token),
        limit=config.chat2desk.requests_per_minute,
        burst=config.chat2desk.burst,
    )
