"""Active-active: several botd processes share the shard queues (docs/design.md §7).

Each process has *home shards* — ``shard % rabbitmq.instances == instance`` — and stands by for
the others. Every shard queue has a single active consumer (the per-customer order, §3.2), so
"sharing" means deciding which process's consumer is the active one:

- a process subscribes to its home shards at once, and to the others only
  ``STANDBY_DELAY_SECONDS`` later, so when the processes start together each becomes the active
  consumer of its own home shards;
- home subscriptions carry ``x-priority`` 10, standby ones 0: RabbitMQ ≥ 4.0 then hands a
  single-active-consumer quorum queue to the higher-priority consumer by itself once the current
  one's in-flight messages are acked;
- RabbitMQ 3.x ignores priorities for single active consumers (the first subscriber stays
  active until it leaves), so botd hands shards back itself: every process writes a presence key
  (``instance:{n}``, TTL ``PRESENCE_TTL_SECONDS``) once its home shards are subscribed, and a
  process that sees the home process of a shard it stands by for come back *releases* that
  shard: after the message in hand it closes its subscription (unacked prefetched messages go
  back to the queue ahead of later ones) and subscribes again ``RELEASE_SECONDS`` later, behind
  the home process, which is active by then.

A release while the other process is not the one waiting only moves this process's consumer to
the back of the line: harmless. The send fence and lease (:mod:`botd.send_guard`) keep a hand-over
from sending anything twice, as for any redelivery.
"""

from __future__ import annotations

import logging
import socket
import uuid
import zlib
from collections.abc import Awaitable, Callable

import trio

from botd.errors import TransientError

log = logging.getLogger("botd.home_shards")

STANDBY_DELAY_SECONDS = 2.0
RELEASE_SECONDS = 1.0
PRESENCE_TTL_SECONDS = 10.0
CHECK_SECONDS = 2.0
HOME_PRIORITY = 10
STANDBY_PRIORITY = 0


def resolve_instance(instance: int, instances: int, hostname: str | None = None) -> int:
    """This process's number: the configured one, or (``-1``) a hash of the host name."""
    if instance >= 0:
        return instance
    name = hostname if hostname is not None else socket.gethostname()
    return zlib.crc32(name.encode()) % instances


def home_shards(instance: int, instances: int, shards: int) -> frozenset[int]:
    """The shards whose active consumer this process should be."""
    return frozenset(s for s in range(shards) if s % instances == instance)


def home_of(shard: int, instances: int) -> int:
    return shard % instances


class Presence:
    """Which processes are up, as they say themselves in Redis (``instance:{n}`` keys holding a
    token new at every start: a process killed and back before its key expired is seen back)."""

    def __init__(
        self,
        beat: Callable[[int, str, float], Awaitable[None]],
        alive: Callable[[int], Awaitable[dict[int, str]]],
    ) -> None:
        self.beat = beat  # (instance, token, ttl seconds)
        self.alive = alive  # (instances) → {number: token} of the keys that exist


class HomeShards:
    """Keeps this process's presence fresh and hands standby shards back to their home."""

    def __init__(
        self,
        *,
        instance: int,
        instances: int,
        shards: int,
        presence: Presence,
        release: Callable[[int], None],
        home_ready: Callable[[], Awaitable[None]],
    ) -> None:
        self.instance = instance
        self.instances = instances
        self.home = home_shards(instance, instances, shards)
        self.standby = frozenset(range(shards)) - self.home
        self._presence = presence
        self._release = release
        self._home_ready = home_ready
        self._stopping = False
        self._scope = trio.CancelScope()
        self._token = uuid.uuid4().hex
        self.handed_back = 0

    def stop_taking(self) -> None:
        self._stopping = True
        self._scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.instances == 1:
            return  # every shard is home: nothing to share
        log.info(
            "instance %d of %d: home shards %s, standing by for %s",
            self.instance,
            self.instances,
            ",".join(map(str, sorted(self.home))) or "none",
            ",".join(map(str, sorted(self.standby))) or "none",
        )
        with self._scope:
            await self._home_ready()
            seen: dict[int, str] | None = None
            while not self._stopping:
                try:
                    await self._presence.beat(self.instance, self._token, PRESENCE_TTL_SECONDS)
                    alive = await self._presence.alive(self.instances)
                except TransientError as exc:
                    log.warning("presence not updated (%s); retrying", exc)
                    await trio.sleep(CHECK_SECONDS)
                    continue
                if seen is not None:
                    # back: a key that appeared, or a new token (restarted within the TTL)
                    back = {n for n, token in alive.items() if seen.get(n) != token}
                    self._hand_back(back - {self.instance})
                seen = alive
                await trio.sleep(CHECK_SECONDS)

    def _hand_back(self, returned: set[int]) -> None:
        for shard in sorted(self.standby):
            if home_of(shard, self.instances) in returned:
                log.info(
                    "instance %d is back: handing shard %d back to it",
                    home_of(shard, self.instances),
                    shard,
                )
                self.handed_back += 1
                self._release(shard)
