"""Is a shard hung, or only waiting? Progress of the shard consumers (docs/design.md §2).

A shard handling a message is *stuck* when it has made no progress for a while **and** is not
waiting on purpose. Progress is taking a message and coming out of a deliberate wait (each retry
of a message follows a backoff, so every retry is progress). Deliberate waits are the ones the
code marks with :func:`deliberately_waiting`: the consumer's backoff on transient errors (a
service is down) and the wait for the rate limiter (which is also where a 429's Retry-After is
served). Everything else a shard awaits — Redis, PostgreSQL, RabbitMQ, Chat2Desk — has its own
timeout, so no progress for minutes outside a marked wait means a call that never returns: a
hang, which the watchdog answers with a restart; an outage is not one.

The mark finds its shard through a context variable that :meth:`ShardLiveness.handling` sets in
the shard's task, so code deep in the call (the sender, the limiter) needs no shard argument;
outside a shard's message the mark does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import trio

_CURRENT: ContextVar[tuple[ShardLiveness, int] | None] = ContextVar("botd_shard", default=None)


class ShardLiveness:
    """When each busy shard last made progress, and which of them wait on purpose right now.

    Times are ``trio.current_time()``, so MockClock tests can drive it.
    """

    def __init__(self) -> None:
        self._progress_at: dict[int, float] = {}  # busy shards only
        self._waiting: dict[int, int] = {}  # shard → deliberate waits it is in

    @contextmanager
    def handling(self, shard: int) -> Iterator[None]:
        """The current task handles one message of ``shard`` for the block (taking it is
        progress)."""
        self._progress_at[shard] = trio.current_time()
        token = _CURRENT.set((self, shard))
        try:
            yield
        finally:
            _CURRENT.reset(token)
            del self._progress_at[shard]
            self._waiting.pop(shard, None)

    @contextmanager
    def _waiting_in(self, shard: int) -> Iterator[None]:
        self._waiting[shard] = self._waiting.get(shard, 0) + 1
        try:
            yield
        finally:
            if (left := self._waiting.get(shard, 0) - 1) > 0:
                self._waiting[shard] = left
            else:
                self._waiting.pop(shard, None)
            if shard in self._progress_at:
                self._progress_at[shard] = trio.current_time()

    def waiting(self) -> tuple[int, ...]:
        """Busy shards in a deliberate wait now."""
        return tuple(sorted(s for s, n in self._waiting.items() if n > 0))

    def stuck(self, seconds: float) -> tuple[int, ...]:
        """Busy shards with no progress for more than ``seconds`` and not waiting on purpose."""
        now = trio.current_time()
        return tuple(
            sorted(
                shard
                for shard, at in self._progress_at.items()
                if not self._waiting.get(shard) and now - at > seconds
            )
        )


@contextmanager
def deliberately_waiting() -> Iterator[None]:
    """Mark the block as a wait on purpose (a backoff, the rate limiter, a Retry-After): the
    shard whose message the current task handles is not stuck meanwhile, and leaving the block is
    progress. Outside a shard's message it does nothing."""
    current = _CURRENT.get()
    if current is None:
        yield
        return
    liveness, shard = current
    with liveness._waiting_in(shard):
        yield
