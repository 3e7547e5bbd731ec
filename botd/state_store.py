"""Redis adapter: dialog state, dedupe markers and the replies a step produced
(docs/design.md §3, §4).

Keys (all under ``redis.key_prefix``; ids are validated digit strings):
- ``dialog:{client_id}`` hash ``v`` (version, never reset) and ``s`` (state JSON, "" when idle),
  TTL ``dialog.state_ttl_seconds``;
- ``seen:{message_id}`` hash ``r`` (JSON list of reply texts) and ``sent`` ("0"/"1"),
  TTL ``redis.dedupe_ttl_seconds``.

:meth:`StateStore.commit` is one Lua script: if the message was already processed it does nothing;
if the dialog's version moved since it was loaded it does nothing; otherwise it stores the new
state, bumps the version and writes the marker with the replies — all or nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import trio

from botd.bridge import AsyncioBridge
from botd.config import RedisConfig
from botd.errors import TransientError
from botd.ports import CommitResult, Loaded, Marker

__all__ = ["CommitResult", "Loaded", "Marker", "StateStore", "open_state_store"]

log = logging.getLogger("botd.state")

_COMMIT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'v', v + 1, 's', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'r', ARGV[4], 'sent', '0')
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""

_MARK_SENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'sent', '1') end
for i = 2, #KEYS do redis.call('SET', KEYS[i], '1', 'EX', ARGV[1]) end
return 1
"""


def _redis_errors(exc: Exception) -> TransientError:
    return TransientError(f"redis unavailable: {type(exc).__name__}: {exc}")


class StateStore:
    """Dialog state and dedupe markers in Redis, behind plain Trio methods."""

    def __init__(
        self, bridge: AsyncioBridge, config: RedisConfig, *, state_ttl_seconds: int
    ) -> None:
        self._bridge = bridge
        self._config = config
        self._state_ttl = state_ttl_seconds
        self._client: aioredis.Redis | None = None
        self._commit: Any = None
        self._mark_sent: Any = None

    def dialog_key(self, client_id: str) -> str:
        return f"{self._config.key_prefix}dialog:{client_id}"

    def marker_key(self, message_id: str) -> str:
        return f"{self._config.key_prefix}seen:{message_id}"

    async def _aio_open(self) -> None:
        self._client = aioredis.Redis.from_url(
            self._config.url,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=15,
        )
        self._commit = self._client.register_script(_COMMIT)
        self._mark_sent = self._client.register_script(_MARK_SENT)

    async def _aio_close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _c(self) -> aioredis.Redis:
        if self._client is None:
            raise TransientError("redis client is closed")
        return self._client

    async def _run(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            try:
                return await fn(*args)
            except (redis.exceptions.RedisError, OSError) as exc:
                raise _redis_errors(exc) from exc

        return await self._bridge.run(call)

    # ---- operations --------------------------------------------------------------------------
    async def ping(self) -> bool:
        try:
            with trio.fail_after(2):
                return bool(await self._run(self._c().ping))
        except (TransientError, trio.TooSlowError):
            return False

    async def load(self, client_id: str, message_id: str) -> Loaded:
        """The dialog's version and state, and the marker if ``message_id`` was processed."""

        async def load() -> tuple[Any, Any, Any, Any]:
            async with self._c().pipeline(transaction=False) as pipe:
                pipe.hmget(self.dialog_key(client_id), "v", "s")
                pipe.hmget(self.marker_key(message_id), "r", "sent")
                pipe.llen(self.outbox_key(client_id))
                pipe.exists(self.own_key(message_id))
                dialog, marker, pending, own = await pipe.execute()
            return dialog, marker, pending, own

        (version, state_raw), (replies_raw, sent), pending, own = await self._run(load)
        marker = None
        if replies_raw is not None:
            marker = Marker(tuple(json.loads(replies_raw)), sent == b"1")
        state = None
        if state_raw:
            try:
                decoded = json.loads(state_raw)
                state = decoded if isinstance(decoded, dict) else None
            except ValueError:
                log.warning("dialog state of client %s is not JSON; starting over", client_id)
        return Loaded(int(version or 0), state, marker, int(pending or 0), bool(own))

    async def commit(
        self,
        client_id: str,
        message_id: str,
        *,
        expected_version: int,
        state: dict[str, Any] | None,
        replies: tuple[str, ...],
    ) -> CommitResult:
        """Atomically store the new state and the marker with its replies (see module doc)."""
        state_json = json.dumps(state, ensure_ascii=False, separators=(",", ":")) if state else ""
        args = [
            expected_version,
            state_json,
            self._state_ttl,
            json.dumps(list(replies), ensure_ascii=False),
            self._config.dedupe_ttl_seconds,
        ]

        async def commit() -> int:
            return int(
                await self._commit(
                    keys=[self.dialog_key(client_id), self.marker_key(message_id)], args=args
                )
            )

        return CommitResult(await self._run(commit))

    def own_key(self, chat2desk_message_id: str) -> str:
        return f"{self._config.key_prefix}own:{chat2desk_message_id}"

    async def mark_sent(self, message_id: str, own_ids: tuple[str, ...] = ()) -> None:
        """Record that the replies of ``message_id`` went out, and the ids Chat2Desk gave them
        (so their ``outbox`` webhook echoes are recognised as botd's own, not an operator's)."""
        keys = [self.marker_key(message_id), *(self.own_key(i) for i in own_ids if i)]

        async def mark() -> None:
            await self._mark_sent(keys=keys, args=[self._config.dedupe_ttl_seconds])

        await self._run(mark)

    async def record_own(self, own_ids: tuple[str, ...]) -> None:
        """Remember ids of messages botd sent outside a dialog step (the outbox retrier)."""
        ids = [i for i in own_ids if i]
        if not ids:
            return

        async def record() -> None:
            async with self._c().pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.set(self.own_key(i), "1", ex=self._config.dedupe_ttl_seconds)
                await pipe.execute()

        await self._run(record)

    # ---- per-customer outbox order -----------------------------------------------------------
    def outbox_key(self, client_id: str) -> str:
        return f"{self._config.key_prefix}outbox:{client_id}"

    async def outbox_push(self, client_id: str, batch_id: str, *, ttl_seconds: int) -> None:
        """Record a parked batch at the end of the customer's pending list."""

        async def push() -> None:
            async with self._c().pipeline(transaction=True) as pipe:
                pipe.rpush(self.outbox_key(client_id), batch_id)
                pipe.expire(self.outbox_key(client_id), ttl_seconds)
                await pipe.execute()

        await self._run(push)

    async def outbox_head(self, client_id: str) -> str | None:
        """The oldest pending batch of the customer, or None."""
        head = await self._run(self._c().lindex, self.outbox_key(client_id), 0)
        return None if head is None else bytes(head).decode()

    async def outbox_done(self, client_id: str, batch_id: str) -> None:
        await self._run(self._c().lrem, self.outbox_key(client_id), 0, batch_id)

    async def outbox_pending(self, client_id: str) -> int:
        return int(await self._run(self._c().llen, self.outbox_key(client_id)))


@asynccontextmanager
async def open_state_store(
    bridge: AsyncioBridge, config: RedisConfig, *, state_ttl_seconds: int
) -> AsyncIterator[StateStore]:
    store = StateStore(bridge, config, state_ttl_seconds=state_ttl_seconds)
    await bridge.run(store._aio_open)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await bridge.run(store._aio_close)
