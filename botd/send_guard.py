"""What every Chat2Desk call for a customer checks first (docs/design.md §3.2, §3.3).

Two processes can hold the same customer's work for a moment: after a broker connection drops,
RabbitMQ hands the shard (and its unacked message) to a standby while the first process may still
be mid-send. Before each call the guard therefore makes sure that

1. the delivery is still ours: the channel that delivered it is open (the *fence*); once it is
   gone, nothing more is sent for it — its redelivery does that — and :class:`DeliveryLost` is
   raised;
2. this process holds the customer's send lease in Redis (``sending:{client}``, taken or renewed
   for ``lease_seconds`` before each call, given back with the turn's ``mark_sent``). A process
   that gets a redelivered message waits until the other one's in-flight call is over (its lease
   given back or expired) before it looks up what went out and sends the rest, so the two never
   send the same reply, nor replies out of order. A lease whose holder was a process of this
   machine that no longer runs (a restart after kill -9) is taken over after a 1 s grace (for a
   request it had on the wire) instead of its whole TTL.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

import trio

from botd import ports
from botd.errors import DeliveryLost, TransientError

log = logging.getLogger("botd.send_guard")

Fence = Callable[[], bool]  # True while the delivery being processed is still ours
Guard = Callable[[], Awaitable[None]]

LEASE_POLL_SECONDS = 0.1
# chat2desk.timeout_seconds (10 s) + 2 s: a lease outlives one call; the daemon passes its own
DEFAULT_LEASE_SECONDS = 12.0
DEAD_HOLDER_GRACE_SECONDS = 1.0
_HOST = socket.gethostname()


def _died_here(holder: str) -> bool:
    """Whether ``holder`` (``host:pid:nonce``) is a process of this machine that no longer runs.
    A reused pid only makes botd wait for the lease to expire, as for another machine's."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SendGuards:
    """Makes the guard for one delivery's calls; one holder id per process."""

    def __init__(
        self,
        store: ports.StateStore,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        holder: str | None = None,
    ) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        self.holder = holder or f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    def lease(self, client_id: str) -> ports.SendLease:
        return ports.SendLease(client_id, self.holder)

    def guard(self, lease: ports.SendLease, fence: Fence | None, what: str) -> Guard:
        async def guard() -> None:
            waited = False
            dead_since: float | None = None
            while True:
                if fence is not None and not fence():
                    raise DeliveryLost(
                        f"the channel that delivered {what} is gone; its redelivery sends"
                    )
                left, holder = await self._store.take_send_lease(lease, self._lease_seconds)
                if left <= 0:
                    return
                if _died_here(holder):
                    # Killed on this machine (a restart after kill -9): a request it had on the
                    # wire is answered within moments, not the lease's whole TTL.
                    now = trio.current_time()
                    dead_since = dead_since if dead_since is not None else now
                    if now - dead_since >= DEAD_HOLDER_GRACE_SECONDS:
                        log.info("client %s: lease of dead %s taken over", lease.client_id, holder)
                        dead = ports.SendLease(lease.client_id, holder)
                        await self._store.release_send_lease(dead)
                        continue
                if not waited:
                    waited = True
                    log.info(
                        "client %s: another process is mid-send (%.1fs left); waiting",
                        lease.client_id,
                        left,
                    )
                await trio.sleep(min(left, LEASE_POLL_SECONDS))

        return guard

    async def release(self, lease: ports.SendLease) -> None:
        """Give the lease back after a failure (best effort: it expires by itself anyway)."""
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self._store.release_send_lease(lease)
            except TransientError as exc:
                log.debug("client %s: send lease not given back: %s", lease.client_id, exc)
