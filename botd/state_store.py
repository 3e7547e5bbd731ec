"""Redis adapter: dialog state, dedupe markers and the replies a step produced
(docs/design.md §3, §4).

Keys (all under ``redis.key_prefix``; ids are validated digit strings):
- ``dialog:{client_id}`` hash ``v`` (version, never reset) and ``s`` (state JSON, "" when idle),
  TTL ``dialog.state_ttl_seconds``;
- ``version:{client_id}`` string, the customer's last version: it outlives the dialog
  (:func:`version_ttl_seconds`), so a returning customer's versions go on from it;
- ``seen:{message_id}`` hash ``r`` (JSON list of reply texts) and ``sent`` ("0"/"1"),
  TTL ``redis.dedupe_ttl_seconds``.

:meth:`StateStore.commit` is one Lua script: if the message was already processed it does nothing;
if the dialog's version moved since it was loaded it does nothing; otherwise it stores the new
state, bumps the version (in the dialog and in ``version:``) and writes the marker with the
replies — all or nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import trio

from botd.bridge import AsyncioBridge
from botd.broker.topology import QUEUE_TTL_MS
from botd.config import RedisConfig
from botd.errors import TransientError
from botd.inbound import text_digest
from botd.ports import (
    OWN_ECHO_WINDOW_SECONDS,
    CommitResult,
    DueTimer,
    Loaded,
    Marker,
    SendLease,
)
from botd.redis_client import open_redis_client

__all__ = ["CommitResult", "Loaded", "Marker", "StateStore", "open_state_store"]

log = logging.getLogger("botd.state")

# KEYS: dialog, marker, version, said, send lease, timers, timer specs. The version is the larger
# of the dialog's and the ``version:`` key's, which outlives the dialog: a customer's versions
# never repeat (timer ids carry them). ARGV[7..10]: ``now`` ("" for none) and the ``said:`` TTL,
# the lease holder ("" for none) and its TTL in ms; ARGV[11..13]: the customer's timer for the
# new state ("kind:version", "" for none), when it is due (ms since the epoch) and the client id;
# ARGV[14..]: the replies' digests. The digests go to ``said:`` first, whatever the script answers
# (see StateStore.commit). The timer replaces the customer's earlier one: that one was set for an
# older version, so it could only find its dialog moved on. A committed step takes the customer's
# send lease when it is free or already its own (answer 2; 1 without it), so the first send of
# its replies needs no round trip of its own for the lease.
_COMMIT = """
if ARGV[7] ~= '' and #ARGV > 13 then
  for i = 14, #ARGV do redis.call('HSET', KEYS[4], ARGV[i], ARGV[7]) end
  redis.call('EXPIRE', KEYS[4], ARGV[8])
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local v = math.max(tonumber(redis.call('HGET', KEYS[1], 'v') or '0'),
                   tonumber(redis.call('GET', KEYS[3]) or '0'))
if v ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'v', v + 1, 's', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[3], v + 1, 'EX', ARGV[6])
redis.call('HSET', KEYS[2], 'r', ARGV[4], 'sent', '0')
redis.call('EXPIRE', KEYS[2], ARGV[5])
if ARGV[11] ~= '' then
  redis.call('ZADD', KEYS[6], ARGV[12], ARGV[13])
  redis.call('HSET', KEYS[7], ARGV[13], ARGV[11])
end
if ARGV[9] ~= '' then
  local holder = redis.call('GET', KEYS[5])
  if holder == false or holder == ARGV[9] then
    redis.call('SET', KEYS[5], ARGV[9], 'PX', ARGV[10])
    return 2
  end
end
return 1
"""

# KEYS: the dialog, its last version, the message's marker, the customer's outbox, the message's
# own-id key, the customer's said: hash; ARGV[1]: the echo digest to look up in said: ("" for
# none). One command instead of a six-command pipeline: everything a step reads, in one reply
# (a missing value comes back as nil: Lua's false).
_LOAD = """
local dialog = redis.call('HMGET', KEYS[1], 'v', 's')
local marker = redis.call('HMGET', KEYS[3], 'r', 'sent')
local said = false
if ARGV[1] ~= '' then said = redis.call('HGET', KEYS[6], ARGV[1]) end
return {dialog[1], dialog[2], redis.call('GET', KEYS[2]), marker[1], marker[2],
        redis.call('LLEN', KEYS[4]), redis.call('EXISTS', KEYS[5]), said}
"""

# KEYS: the marker, the customer's send lease, then the own ids; ARGV: the own ids' TTL, the
# lease holder ("" for none): marks the replies sent and gives the lease back if it is ours.
_MARK_SENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'sent', '1') end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
for i = 3, #KEYS do redis.call('SET', KEYS[i], '1', 'EX', ARGV[1]) end
return 1
"""

# The send lease (``sending:{client}``): taken (or renewed) by its holder before every Chat2Desk
# call for the customer; anyone else gets the milliseconds it still has to live.
_TAKE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then left = 1 end
return {left, holder}
"""

# The timers that are due (score ≤ ARGV[1], ms), at most ARGV[3]: each is claimed (its score set to
# ARGV[2], when it is due again unless the mover says it was moved) and returned as client, spec.
# KEYS: timers, timer specs. A member without a spec is an inconsistency: it is dropped.
_CLAIM_TIMERS = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, client in ipairs(due) do
  local spec = redis.call('HGET', KEYS[2], client)
  if spec then
    redis.call('ZADD', KEYS[1], ARGV[2], client)
    out[#out + 1] = client
    out[#out + 1] = spec
  else
    redis.call('ZREM', KEYS[1], client)
  end
end
return out
"""

# The timer ARGV[2] of customer ARGV[1] is in the shard queue: forget it, unless a commit has set a
# newer one meanwhile. KEYS: timers, timer specs.
_TIMER_MOVED = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
"""

# A send lease taken or renewed this recently is not renewed again before a call: it still has
# its TTL less this, which covers the call (the guards' TTL is the call's timeout + 2 s).
LEASE_FRESH_SECONDS = 1.0
_LEASES_REMEMBERED = 4096  # past this many, expired entries are dropped before a new one

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def version_ttl_seconds(state_ttl_seconds: int, dedupe_ttl_seconds: int) -> int:
    """How long a customer's last version outlives their last commit: until every timer set for
    it has fired (≤ the state TTL), waited out its shard queue's TTL and its dedupe marker has
    expired. Only then may the versions start again from 0."""
    return state_ttl_seconds + QUEUE_TTL_MS // 1000 + dedupe_ttl_seconds


# The outbox order (docs/design.md §3.5, §4.1). KEYS: the customer's list ``outbox:{client}``
# (batch ids, oldest first), its hash ``outbox_meta:{client}`` (``p:{id}`` when the batch was
# parked, ``d:{id}`` the latest time its message can be back in the outbox queue) and the set
# ``outbox_waiting`` (client → when its oldest waiting batch was parked). The list and the hash
# get their TTL when created and when an entry leaves (progress) — never from a park alone.
OUTBOX_TTL_SECONDS = 8 * 24 * 3600  # the outbox's 7 days + the longest wait tier (≤ 1 day)

_OUTBOX_LIB = """
local function meta_ttl(ttl)
  if redis.call('TTL', KEYS[2]) == -1 then
    local left = redis.call('TTL', KEYS[1])
    redis.call('EXPIRE', KEYS[2], left > 0 and left or ttl)
  end
end
local function follow_head(client, ttl, progress)
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then
    redis.call('DEL', KEYS[1], KEYS[2])
    redis.call('ZREM', KEYS[3], client)
    return
  end
  local parked = redis.call('HGET', KEYS[2], 'p:' .. head)
  if parked then redis.call('ZADD', KEYS[3], parked, client) end
  if progress then
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[2], ttl)
  end
end
"""

# ARGV: id, parked at, due, client, ttl
_OUTBOX_PUSH = (
    _OUTBOX_LIB
    + """
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'p:' .. ARGV[1], ARGV[2], 'd:' .. ARGV[1], ARGV[3])
if n == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
else
  meta_ttl(ARGV[5])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[4])
end
return n
"""
)

# ARGV: id ('' for none), proof ('' for none), margin, now, grace, client, ttl.
# Drops head entries whose message, by ``proof`` (the earliest time the message being handled
# can have entered the outbox queue), would have been handled before it: they are in no queue.
_OUTBOX_CHECK = (
    _OUTBOX_LIB
    + """
local dropped = {}
local head
while true do
  head = redis.call('LINDEX', KEYS[1], 0)
  if (not head) or head == ARGV[1] then break end
  local due = redis.call('HGET', KEYS[2], 'd:' .. head)
  if not due then
    local now = tonumber(ARGV[4])
    redis.call('HSET', KEYS[2], 'd:' .. head, now + tonumber(ARGV[5]), 'p:' .. head, now)
    meta_ttl(ARGV[7])
    redis.call('ZADD', KEYS[3], 'NX', now, ARGV[6])
    break
  end
  if ARGV[2] == '' or tonumber(due) + tonumber(ARGV[3]) >= tonumber(ARGV[2]) then break end
  redis.call('LPOP', KEYS[1])
  redis.call('HDEL', KEYS[2], 'd:' .. head, 'p:' .. head)
  dropped[#dropped + 1] = head
end
if #dropped > 0 or not head then follow_head(ARGV[6], ARGV[7], #dropped > 0) end
return {head or '', dropped}
"""
)

# ARGV: id, client, ttl (0: no progress, the TTL stays)
_OUTBOX_DONE = (
    _OUTBOX_LIB
    + """
local removed = redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('HDEL', KEYS[2], 'd:' .. ARGV[1], 'p:' .. ARGV[1])
follow_head(ARGV[2], ARGV[3], removed > 0 and ARGV[3] ~= '0')
return removed
"""
)

# KEYS: the meta hash; ARGV: id, due
_OUTBOX_SEEN = """
if redis.call('HEXISTS', KEYS[1], 'd:' .. ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'd:' .. ARGV[1], ARGV[2])
return 1
"""


# How long "this order event reached the shop / the dialog" is remembered: longer than any copy
# of it can wait in a queue (the DLQ aside: a replay from there is a deliberate resend).
EVENT_DONE_TTL_SECONDS = 30 * 86400


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
        self._load: Any = None
        self._commit: Any = None
        self._mark_sent: Any = None
        self._claim_timers: Any = None
        self._timer_moved: Any = None
        # send leases this process holds: (client, holder) → until when (time.monotonic())
        self._leases: dict[tuple[str, str], float] = {}

    def dialog_key(self, client_id: str) -> str:
        return f"{self._config.key_prefix}dialog:{client_id}"

    def marker_key(self, message_id: str) -> str:
        return f"{self._config.key_prefix}seen:{message_id}"

    def version_key(self, client_id: str) -> str:
        return f"{self._config.key_prefix}version:{client_id}"

    async def _aio_open(self) -> None:
        self._client = open_redis_client(self._config)
        self._load = self._client.register_script(_LOAD)
        self._commit = self._client.register_script(_COMMIT)
        self._mark_sent = self._client.register_script(_MARK_SENT)
        self._take_lease = self._client.register_script(_TAKE_LEASE)
        self._release_lease = self._client.register_script(_RELEASE_LEASE)
        self._claim_timers = self._client.register_script(_CLAIM_TIMERS)
        self._timer_moved = self._client.register_script(_TIMER_MOVED)

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
            # A registered script keeps its client: called after close it would open a new
            # connection that nothing closes.
            self._c()
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

    async def load(
        self, client_id: str, message_id: str, *, echo_digest: str | None = None
    ) -> Loaded:
        """The dialog's version and state, and the marker if ``message_id`` was processed; with
        ``echo_digest``, when botd last said that text to the customer (``echo_sent_at``)."""

        keys = [
            self.dialog_key(client_id),
            self.version_key(client_id),
            self.marker_key(message_id),
            self.outbox_key(client_id),
            self.own_key(message_id),
            self.said_key(client_id),
        ]
        args = [echo_digest or ""]
        version, state_raw, last, replies_raw, sent, pending, own, said = await self._run(
            self._load, keys, args
        )
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
        return Loaded(
            max(int(version or 0), int(last or 0)),  # the dialog's, or the last before it expired
            state,
            marker,
            int(pending or 0),
            bool(own),
            None if said is None else float(said),
        )

    async def commit(
        self,
        client_id: str,
        message_id: str,
        *,
        expected_version: int,
        state: dict[str, Any] | None,
        replies: tuple[str, ...],
        now: float | None = None,
        lease: SendLease | None = None,
        lease_seconds: float = 0.0,
        timer: DueTimer | None = None,
    ) -> CommitResult:
        """Atomically store the new state and the marker with its replies (see module doc), in
        one script call. With ``now``, the replies' digests go to ``said:`` in the same script,
        before its checks, whatever it answers (a step that loses the race is run again and
        says the same or other texts, and an entry only ever makes an echo count as botd's own).
        With ``lease``, a committed step also takes the customer's send lease for
        ``lease_seconds`` when nobody else holds it (:meth:`take_send_lease` then knows it).
        With ``timer``, the new state's timer is kept with it, replacing the customer's earlier
        one (:meth:`claim_due_timers` hands it out when due)."""
        state_json = json.dumps(state, ensure_ascii=False, separators=(",", ":")) if state else ""
        digests = [text_digest(t) for t in replies] if now is not None else []
        args = [
            expected_version,
            state_json,
            self._state_ttl,
            json.dumps(list(replies), ensure_ascii=False),
            self._config.dedupe_ttl_seconds,
            version_ttl_seconds(self._state_ttl, self._config.dedupe_ttl_seconds),
            "" if now is None else repr(now),
            OWN_ECHO_WINDOW_SECONDS,
            lease.holder if lease is not None else "",
            max(1, int(lease_seconds * 1000)),
            "" if timer is None else timer.spec,
            0 if timer is None else int(timer.due * 1000),
            client_id,
            *digests,
        ]
        keys = [
            self.dialog_key(client_id),
            self.marker_key(message_id),
            self.version_key(client_id),
            self.said_key(client_id),
            self.lease_key(client_id),
            self.timers_key(),
            self.timer_specs_key(),
        ]
        started = time.monotonic()
        answer = int(await self._run(self._commit, keys, args))
        if answer == 2 and lease is not None:
            self._held(lease, started + lease_seconds)
            return CommitResult.COMMITTED
        return CommitResult(answer)

    def timers_key(self) -> str:
        return f"{self._config.key_prefix}timers"

    def timer_specs_key(self) -> str:
        return f"{self._config.key_prefix}timer_specs"

    async def claim_due_timers(
        self, now: float, *, claim_seconds: float, limit: int
    ) -> list[tuple[str, str]]:
        """Up to ``limit`` timers due at ``now`` (seconds since the epoch), as (client id,
        spec), each claimed for ``claim_seconds``: unless :meth:`timer_moved` is told it reached
        its shard queue by then, it comes due again (a mover killed in between loses nothing)."""
        keys = [self.timers_key(), self.timer_specs_key()]
        args = [int(now * 1000), int((now + claim_seconds) * 1000), limit]
        flat = await self._run(self._claim_timers, keys, args)
        return [
            (bytes(flat[i]).decode(), bytes(flat[i + 1]).decode()) for i in range(0, len(flat), 2)
        ]

    async def timer_moved(self, client_id: str, spec: str) -> None:
        """The timer ``spec`` of ``client_id`` is in its shard queue: it is done here (unless a
        newer one was set meanwhile, which stays)."""
        keys = [self.timers_key(), self.timer_specs_key()]
        await self._run(self._timer_moved, keys, [client_id, spec])

    def said_key(self, client_id: str) -> str:
        return f"{self._config.key_prefix}said:{client_id}"

    def _said(self, pipe: Any, client_id: str, texts: tuple[str, ...], now: float) -> None:
        key = self.said_key(client_id)
        pipe.hset(key, mapping={text_digest(t): repr(now) for t in texts})
        pipe.expire(key, OWN_ECHO_WINDOW_SECONDS)

    async def record_sending(self, client_id: str, texts: tuple[str, ...], now: float) -> None:
        """Remember that botd is about to send ``texts`` to the customer (see ``said:``)."""
        if not texts:
            return

        async def record() -> None:
            async with self._c().pipeline(transaction=False) as pipe:
                self._said(pipe, client_id, texts, now)
                await pipe.execute()

        await self._run(record)

    def own_key(self, chat2desk_message_id: str) -> str:
        return f"{self._config.key_prefix}own:{chat2desk_message_id}"

    async def mark_sent(
        self, message_id: str, own_ids: tuple[str, ...] = (), *, lease: SendLease | None = None
    ) -> None:
        """Record that the replies of ``message_id`` went out, and the ids Chat2Desk gave them
        (so their ``outbox`` webhook echoes are recognised as botd's own, not an operator's);
        give ``lease`` back in the same step."""
        lease_key = self.lease_key(lease.client_id if lease else "-")
        keys = [
            self.marker_key(message_id),
            lease_key,
            *(self.own_key(i) for i in own_ids if i),
        ]
        args = [self._config.dedupe_ttl_seconds, lease.holder if lease else ""]
        if lease is not None:
            self._leases.pop((lease.client_id, lease.holder), None)

        async def mark() -> None:
            await self._mark_sent(keys=keys, args=args)

        await self._run(mark)

    def lease_key(self, client_id: str) -> str:
        return f"{self._config.key_prefix}sending:{client_id}"

    def _held(self, lease: SendLease, until: float) -> None:
        """Remember that ``lease`` is ours until ``until`` (``time.monotonic()``; measured from
        before the request that took it, so Redis keeps it at least that long)."""
        held = self._leases
        if len(held) >= _LEASES_REMEMBERED:
            now = time.monotonic()
            for key in [k for k, t in held.items() if t <= now]:
                del held[key]
        held[(lease.client_id, lease.holder)] = until

    async def take_send_lease(self, lease: SendLease, ttl_seconds: float) -> tuple[float, str]:
        """Take or renew the customer's send lease for ``ttl_seconds``: ``(0.0, holder)`` when
        ``lease`` holds it now, else the seconds another holder's lease still has, and who.

        A lease this process took or renewed less than LEASE_FRESH_SECONDS ago is ours for at
        least ``ttl_seconds - LEASE_FRESH_SECONDS`` more: nobody else can take it before it
        expires, so it is not asked for again (one round trip less per send)."""
        key, ttl_ms = self.lease_key(lease.client_id), max(1, int(ttl_seconds * 1000))
        started = time.monotonic()
        until = self._leases.get((lease.client_id, lease.holder))
        if until is not None and until - started >= ttl_seconds - LEASE_FRESH_SECONDS:
            return 0.0, lease.holder

        async def take() -> Any:
            return await self._take_lease(keys=[key], args=[lease.holder, ttl_ms])

        answer = await self._run(take)
        if not isinstance(answer, list):
            self._held(lease, started + ttl_seconds)
            return 0.0, lease.holder
        return int(answer[0]) / 1000.0, bytes(answer[1]).decode()

    async def release_send_lease(self, lease: SendLease) -> None:
        key = self.lease_key(lease.client_id)
        self._leases.pop((lease.client_id, lease.holder), None)

        async def release() -> None:
            await self._release_lease(keys=[key], args=[lease.holder])

        await self._run(release)

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

    def outbox_meta_key(self, client_id: str) -> str:
        return f"{self._config.key_prefix}outbox_meta:{client_id}"

    def outbox_waiting_key(self) -> str:
        return f"{self._config.key_prefix}outbox_waiting"

    async def _outbox_script(self, source: str, client_id: str, args: list[Any]) -> Any:
        keys = [self.outbox_key(client_id), self.outbox_meta_key(client_id)]
        keys.append(self.outbox_waiting_key())

        async def run() -> Any:
            return await self._c().register_script(source)(keys=keys, args=args)

        return await self._run(run)

    async def outbox_push(
        self,
        client_id: str,
        batch_id: str,
        *,
        parked_at: float,
        due: float,
        ttl_seconds: int = OUTBOX_TTL_SECONDS,
    ) -> None:
        """Record a parked batch at the end of the customer's pending list; its message is in
        the outbox queue by ``due`` (or never: an orphan). Only a new list gets a TTL."""
        args = [batch_id, repr(parked_at), repr(due), client_id, ttl_seconds]
        await self._outbox_script(_OUTBOX_PUSH, client_id, args)

    async def outbox_head(self, client_id: str) -> str | None:
        """The oldest pending batch of the customer, or None."""
        head = await self._run(self._c().lindex, self.outbox_key(client_id), 0)
        return None if head is None else bytes(head).decode()

    async def outbox_check_head(
        self,
        client_id: str,
        batch_id: str | None,
        *,
        proof: float | None,
        margin: float,
        now: float,
        grace: float,
        ttl_seconds: int = OUTBOX_TTL_SECONDS,
    ) -> tuple[str | None, tuple[str, ...]]:
        """The customer's oldest pending batch, after dropping the orphans in front of it.

        ``proof`` is the earliest time the message being handled (``batch_id``, or a probe) can
        have entered the outbox queue: a head other than ``batch_id`` that was due there more
        than ``margin`` seconds before would have been handled first — its message is in no
        queue, and it is dropped. An entry without a due time (parked by an older botd) gets
        ``now + grace``. Returns (head, dropped ids).
        """
        args = [
            batch_id or "",
            "" if proof is None else repr(proof),
            repr(margin),
            repr(now),
            repr(grace),
            client_id,
            ttl_seconds,
        ]
        head, dropped = await self._outbox_script(_OUTBOX_CHECK, client_id, args)
        return (bytes(head).decode() or None), tuple(bytes(d).decode() for d in dropped)

    async def outbox_seen(self, client_id: str, batch_id: str, *, due: float) -> bool:
        """The batch's message goes back to a queue: it is in the outbox queue by ``due``.
        False if the batch is not pending (done, dropped, or never parked: a DLQ replay)."""
        key = self.outbox_meta_key(client_id)

        async def seen() -> int:
            return int(
                await self._c().register_script(_OUTBOX_SEEN)(
                    keys=[key], args=[batch_id, repr(due)]
                )
            )

        return bool(await self._run(seen))

    async def outbox_done(
        self,
        client_id: str,
        batch_id: str,
        *,
        progress: bool = True,
        ttl_seconds: int = OUTBOX_TTL_SECONDS,
    ) -> None:
        """The batch left the outbox (sent or dead-lettered: ``progress``, the list lives
        ``ttl_seconds`` more; or withdrawn after a failed park: not progress)."""
        args = [batch_id, client_id, ttl_seconds if progress else 0]
        await self._outbox_script(_OUTBOX_DONE, client_id, args)

    async def outbox_pending(self, client_id: str) -> int:
        return int(await self._run(self._c().llen, self.outbox_key(client_id)))

    async def outbox_oldest(self) -> tuple[str, float] | None:
        """(client, when parked) of the oldest reply still waiting in the outbox, or None."""
        first = await self._run(self._c().zrange, self.outbox_waiting_key(), 0, 0, False, True)
        if not first:
            return None
        client, parked = first[0]
        return bytes(client).decode(), float(parked)

    # ---- webhook replays (the web app's SignatureLog, docs/design.md §6.1) ---------------------
    def replay_key(self, signature: str) -> str:
        return f"{self._config.key_prefix}replay:{signature}"

    async def signature_seen(self, signature: str) -> bool:
        """Whether a webhook with this (verified, hex) signature was queued within its TTL."""
        return bool(await self._run(self._c().exists, self.replay_key(signature)))

    async def remember_signature(self, signature: str, *, ttl_seconds: int) -> None:
        """Record a queued webhook's signature for ``ttl_seconds`` (SET NX: the first stays)."""
        key = self.replay_key(signature)

        async def remember() -> None:
            await self._c().set(key, "1", nx=True, ex=ttl_seconds)

        await self._run(remember)

    # ---- which botd processes are up (botd.home_shards) -----------------------------------------
    def presence_key(self, instance: int) -> str:
        return f"{self._config.key_prefix}instance:{instance}"

    async def beat_presence(self, instance: int, token: str, ttl_seconds: float) -> None:
        """Say that process ``instance`` (this start of it: ``token``) is up, for a while."""
        key, ttl_ms = self.presence_key(instance), max(1, int(ttl_seconds * 1000))

        async def beat() -> None:
            await self._c().set(key, token, px=ttl_ms)

        await self._run(beat)

    async def presences(self, instances: int) -> dict[int, str]:
        """{instance: token} of the processes that said they are up."""
        keys = [self.presence_key(i) for i in range(instances)]
        values = await self._run(self._c().mget, keys)
        return {i: bytes(v).decode() for i, v in enumerate(values) if v is not None}

    # ---- order events handed on (botd.order_notes, botd.shop_webhook) --------------------------
    def event_done_key(self, destination: str, event_id: str) -> str:
        return f"{self._config.key_prefix}event:{destination}:{event_id}"

    async def event_done(self, destination: str, event_id: str) -> bool:
        """Whether order event ``event_id`` already reached ``destination`` ("note", "shop")."""
        return bool(await self._run(self._c().exists, self.event_done_key(destination, event_id)))

    async def mark_event_done(self, destination: str, event_id: str) -> None:
        """Record that ``event_id`` reached ``destination``, for EVENT_DONE_TTL_SECONDS: a
        second copy of the event (the relay republishes after a crash) is then dropped."""
        key = self.event_done_key(destination, event_id)

        async def mark() -> None:
            await self._c().set(key, "1", ex=EVENT_DONE_TTL_SECONDS)

        await self._run(mark)


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
