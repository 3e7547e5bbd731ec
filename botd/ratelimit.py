"""A token bucket shared by every sender in the process (docs/design.md §3.6).

``requests_per_minute`` tokens per 60 s, at most ``burst`` saved up. Waiters are served first come,
first served. :meth:`TokenBucket.pause_until` stops every sender (a 429 from the API). Uses
``trio.current_time()`` so MockClock tests can prove no 60 s window carries more than the limit.

A bucket alone admits up to ``burst + limit`` calls in some 60 s window, so the bucket paces and a
sliding window over the last 60 s admissions caps: a call goes out only when a token is there *and*
fewer than ``limit`` calls went out in the last 60 s. Under a backlog the bucket's steady rate is
exactly ``limit`` per 60 s + margin, so the cap costs at most the margin (60/61 of the limit).

:class:`TokenBucket` keeps the rules in one process (tests without Redis); the daemon uses
:class:`botd.shared_limiter.SharedLimiter`, the same rules kept in Redis for every process of an
account. Senders see either through :class:`RateLimiter`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import trio

WINDOW_SECONDS = 60.0
# An admission holds its place in the window a little longer than the window: the API counts
# *arrivals*, which trail admissions by the request's latency, and that latency varies (a request
# that had to open a connection trails one sent on a pooled connection). With no margin, a
# backlog's next burst went out exactly one window after the previous one and the API saw
# limit + 1 requests in its window (measured against the fake: 429s at every window boundary).
WINDOW_MARGIN_SECONDS = 1.0
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    admitted: int
    waiting: int
    total_wait_seconds: float
    paused_until: float
    pauses: int


class RateLimiter(Protocol):
    """What a sender needs from a limiter."""

    async def acquire(self) -> None:
        """Wait for permission to make one call."""

    async def pause_for(self, seconds: float) -> None:
        """Hold every sender for ``seconds`` from now (a 429's Retry-After)."""

    def statistics(self) -> LimiterStatistics: ...


class TokenBucket:
    """Paces calls to ``per_minute`` with bursts of ``burst``, never more per 60 s window."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self._per_minute = per_minute
        self._rate = per_minute / WINDOW_SECONDS
        self._capacity = float(max(1, min(burst, per_minute)))
        self._tokens = self._capacity
        self._updated = trio.current_time()
        self._admitted_at: deque[float] = deque()
        self._lock = trio.Lock()  # FIFO: trio.Lock is fair
        self._paused_until = 0.0
        self._admitted = 0
        self._waiting = 0
        self._wait_total = 0.0
        self._pauses = 0

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(
            self._admitted, self._waiting, self._wait_total, self._paused_until, self._pauses
        )

    def pause_until(self, deadline: float) -> None:
        """Hold every sender until ``deadline`` (``trio.current_time()`` scale)."""
        if deadline > self._paused_until:
            self._paused_until = deadline
            self._pauses += 1

    async def pause_for(self, seconds: float) -> None:
        """Hold every sender for ``seconds`` from now."""
        self.pause_until(trio.current_time() + seconds)
        await trio.lowlevel.checkpoint()

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    async def acquire(self) -> None:
        """Wait for permission to make one call."""
        start = trio.current_time()
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    now = trio.current_time()
                    span = WINDOW_SECONDS + WINDOW_MARGIN_SECONDS
                    while self._admitted_at and self._admitted_at[0] <= now - span:
                        self._admitted_at.popleft()
                    self._refill(now)
                    wait = 0.0
                    if now < self._paused_until:
                        wait = self._paused_until - now
                    elif self._tokens < 1.0 - _EPSILON:
                        # never less than a microsecond: float rounding must not spin the loop
                        wait = max((1.0 - self._tokens) / self._rate, 1e-6)
                    elif len(self._admitted_at) >= self._per_minute:
                        wait = self._admitted_at[0] + span - now
                    if wait <= 0:
                        break
                    await trio.sleep(wait)
                self._tokens = max(0.0, self._tokens - 1.0)
                self._admitted_at.append(now)
                self._admitted += 1
        finally:
            self._waiting -= 1
            self._wait_total += trio.current_time() - start
