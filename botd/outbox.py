"""Replies that could not be sent: the outbox, its retrier and the dead-letter queue
(docs/design.md §3.5).

A batch of replies whose inline attempts failed is *parked*: published (confirmed) to the
``outbox`` queue and remembered at the end of the customer's pending list in Redis, so newer
replies to that customer queue behind it instead of overtaking. The :class:`OutboxRetrier`
consumes the outbox (single active consumer): it makes one rate-limited attempt per reply; on a
transient failure the rest of the batch goes to the wait queue of the next backoff tier (a queue
with a fixed TTL that dead-letters back into the outbox — never per-message TTL, never a sleeping
task holding a message); after ``outbox.max_attempts`` attempts, after a permanent error, or when
older than 7 days, the reply goes to the DLQ with its reason and attempt count.

A park is two steps (the list entry, then the publish); a kill in between leaves an *orphan*: an
entry whose batch is in no queue, which would hold every later reply to that customer back. Each
entry records the latest time its message can be (back) in the outbox queue, and each message
carries the earliest time it can have entered it (``not_before``). The retrier takes that queue
in order, so a head due there well before the message being handled entered it would have come
first: it is an orphan, and is dropped (a warning, ``orphans_dropped``). A probe sent through the
queue shows up an orphan that nothing of its customer follows. No backlog can make a live batch
look like one. The same look gives the age of the oldest waiting reply (a gauge).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import trio

from botd.broker import Broker, Delivery, QueueWorker, Subscription, wait_tiers
from botd.chat_api import Sender
from botd.errors import (
    AuthRejected,
    DeliveryLost,
    DeliveryUnknown,
    PermanentError,
    TransientError,
)
from botd.ports import Reply, Route
from botd.send_guard import SendGuards
from botd.state_store import OUTBOX_TTL_SECONDS, StateStore

log = logging.getLogger("botd.outbox")

__all__ = ["DeadReply", "Outbox", "OutboxBatch", "OutboxRetrier", "backoff_for", "wait_tiers"]

OUTBOX_MAX_AGE_SECONDS = 7 * 24 * 3600

KIND_HEADER = "x-botd-kind"
# Orphans (docs/design.md §3.5): a customer's pending list can name a batch that is in no queue
# (a kill between the two halves of a park). The retrier takes the outbox queue in order, so a
# head that was due in it more than ORPHAN_MARGIN_SECONDS before the message being handled could
# have entered it would have been handled first: it is an orphan, and is dropped. The margin
# covers clocks of botd hosts that differ and a wait queue that expires a message late.
ORPHAN_MARGIN_SECONDS = 10.0
# How often the retrier looks at the oldest waiting reply (the gauge), and sends a probe
# through the outbox queue when it may be an orphan that nothing else would show up.
PROBE_INTERVAL_SECONDS = 10.0
PROBE_KIND = "probe"
SWEEP_LIMIT = 100  # orphans dropped per probe at most


class OutboxBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Replies to one customer waiting to be sent, oldest first."""

    id: str
    client_id: str
    texts: tuple[str, ...]
    attempts: int  # attempts made so far
    first_failed_at: float
    origin_message_id: str
    reason: str
    # aligned with ``texts``: each reply's stable external id (batches parked by an older botd
    # have none, and are then sent without one)
    external_ids: tuple[str | None, ...] = ()
    transport: str | None = None  # where the customer wrote from (None: Chat2Desk's last one)
    channel_id: int | None = None
    unsure: bool = False  # the first reply may have reached Chat2Desk: look it up before sending
    # set by Outbox.publish_batch: the earliest this message can be in the outbox queue (0:
    # unknown, e.g. a DLQ replay); the proof against orphans
    not_before: float = 0.0

    def replies(self) -> tuple[Reply, ...]:
        ids = self.external_ids if len(self.external_ids) == len(self.texts) else ()
        return tuple(Reply(text, ids[i] if ids else None) for i, text in enumerate(self.texts))

    def route(self) -> Route | None:
        if self.transport is None and self.channel_id is None:
            return None
        return Route(self.transport, self.channel_id)


class DeadReply(msgspec.Struct, frozen=True, kw_only=True):
    """A reply given up on, as kept in the DLQ."""

    client_id: str
    text: str
    attempts: int
    reason: str
    origin_message_id: str
    first_failed_at: float
    dead_at: float


class Probe(msgspec.Struct, frozen=True, kw_only=True):
    """Sent through the outbox queue to show up orphans: every batch due in it more than
    ORPHAN_MARGIN_SECONDS before ``not_before`` would have been handled before the probe."""

    not_before: float


_enc = msgspec.json.Encoder()
_batch_dec = msgspec.json.Decoder(OutboxBatch)
_probe_dec = msgspec.json.Decoder(Probe)


def backoff_for(attempts: int, max_backoff_seconds: int) -> int:
    """Delay before attempt ``attempts + 1`` (a value of :func:`wait_tiers`)."""
    return min(1 << max(0, attempts - 1), max_backoff_seconds)


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    parked: int
    delivered: int
    retried: int
    dead_lettered: int
    orphans_dropped: int = 0
    oldest_pending_seconds: float = 0.0  # age of the oldest reply still waiting (0: none)


class Outbox:
    """Parks batches and dead-letters replies; shared by the consumers and the retrier."""

    def __init__(
        self, broker: Broker, store: StateStore, *, max_attempts: int, max_backoff_seconds: int
    ) -> None:
        self._broker = broker
        self._store = store
        self.max_attempts = max_attempts
        self.max_backoff_seconds = max_backoff_seconds
        self.parked = self.delivered = self.retried = self.dead_lettered = 0
        self.orphans_dropped = 0
        self.oldest_parked_at: float | None = None  # the retrier's last look at the waiting set
        topology = broker.topology
        self._delays = {topology.outbox_wait(s): s for s in topology.wait_tiers}
        self._delays[topology.outbox] = 0

    def statistics(self) -> OutboxStatistics:
        oldest = 0.0
        if self.oldest_parked_at is not None:
            oldest = max(0.0, time.time() - self.oldest_parked_at)
        return OutboxStatistics(
            self.parked,
            self.delivered,
            self.retried,
            self.dead_lettered,
            self.orphans_dropped,
            oldest,
        )

    async def has_pending(self, client_id: str) -> bool:
        return await self._store.outbox_pending(client_id) > 0

    async def park(
        self,
        client_id: str,
        message_id: str,
        replies: tuple[Reply, ...],
        *,
        reason: str,
        route: Route | None = None,
        unsure: bool = False,
    ) -> None:
        batch = OutboxBatch(
            id=f"{message_id}.{time.time_ns()}",
            client_id=client_id,
            texts=tuple(r.text for r in replies),
            attempts=0,
            first_failed_at=time.time(),
            origin_message_id=message_id,
            reason=reason,
            external_ids=tuple(r.external_id for r in replies),
            transport=None if route is None else route.transport,
            channel_id=None if route is None else route.channel_id,
            unsure=unsure,
        )
        # First half: the entry, due in the outbox queue within the publish's timeout. A kill
        # before the second half leaves an orphan, which the retrier drops (ORPHAN_MARGIN_SECONDS).
        await self._store.outbox_push(
            client_id,
            batch.id,
            parked_at=batch.first_failed_at,
            due=time.time() + self._broker.publish_timeout,
            ttl_seconds=OUTBOX_TTL_SECONDS,
        )
        try:
            await self._publish(self._broker.topology.outbox, batch, not_before=time.time())
        except BaseException:
            # Not parked: take the entry back, or every later reply to this customer would
            # queue behind a batch that is in no queue (the caller retries and parks anew).
            with trio.CancelScope(shield=True), trio.move_on_after(self._broker.publish_timeout):
                try:
                    await self._store.outbox_done(client_id, batch.id, progress=False)
                except TransientError as exc:
                    log.warning("outbox: could not withdraw batch %s: %s", batch.id, exc)
            raise
        self.parked += 1
        log.warning("replies to client %s parked in the outbox: %s", client_id, reason)

    async def dead_letter(
        self,
        client_id: str,
        message_id: str,
        text: str,
        *,
        reason: str,
        attempts: int,
        first_failed_at: float | None = None,
    ) -> None:
        now = time.time()
        dead = DeadReply(
            client_id=client_id,
            text=text,
            attempts=attempts,
            reason=reason,
            origin_message_id=message_id,
            first_failed_at=first_failed_at or now,
            dead_at=now,
        )
        await self._broker.publish(
            self._broker.topology.dlq,
            _enc.encode(dead),
            timeout=self._broker.publish_timeout,
            headers={KIND_HEADER: "reply"},
        )
        self.dead_lettered += 1
        log.error(
            "reply to client %s moved to the DLQ after %d attempt(s): %s",
            client_id,
            attempts,
            reason,
        )

    async def publish_batch(self, queue: str, batch: OutboxBatch) -> None:
        """Send a batch (back) to ``queue`` (the outbox or one of its wait queues); a pending
        batch's due time follows it first, so it is never taken for an orphan meanwhile."""
        now = time.time()
        delay = self._delays.get(queue)
        longest = self.max_backoff_seconds if delay is None else delay
        due = now + longest + self._broker.publish_timeout
        await self._store.outbox_seen(batch.client_id, batch.id, due=due)
        await self._publish(queue, batch, not_before=now + (delay or 0))

    async def _publish(self, queue: str, batch: OutboxBatch, *, not_before: float) -> None:
        await self._broker.publish(
            queue,
            _enc.encode(msgspec.structs.replace(batch, not_before=not_before)),
            timeout=self._broker.publish_timeout,
            headers={KIND_HEADER: "outbox"},
        )

    async def publish_probe(self) -> None:
        """Send a :class:`Probe` through the outbox queue."""
        await self._broker.publish(
            self._broker.topology.outbox,
            _enc.encode(Probe(not_before=time.time())),
            timeout=self._broker.publish_timeout,
            headers={KIND_HEADER: PROBE_KIND},
        )


def _remaining(
    batch: OutboxBatch, replies: list[Reply], attempts: int, reason: str, unsure: bool
) -> OutboxBatch:
    """The batch with only ``replies`` left, as it goes back to a wait queue."""
    return msgspec.structs.replace(
        batch,
        texts=tuple(r.text for r in replies),
        external_ids=tuple(r.external_id for r in replies),
        attempts=attempts,
        reason=reason,
        unsure=unsure,
    )


class OutboxRetrier:
    """Consumes the outbox and re-sends with tiered backoff (one task in the daemon's nursery)."""

    def __init__(
        self,
        broker: Broker,
        outbox: Outbox,
        store: StateStore,
        sender: Sender,
        guards: SendGuards | None = None,
    ) -> None:
        self._guards = guards or SendGuards(store)
        self._broker = broker
        self._outbox = outbox
        self._store = store
        self._sender = sender
        self._worker = QueueWorker(
            broker, broker.topology.outbox, self._handle, prefetch=1, name="outbox retrier"
        )
        self.stop_taking = self._worker.stop_taking

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Consume the outbox until :meth:`stop_taking` (started once subscribed); meanwhile,
        every PROBE_INTERVAL_SECONDS, look at the oldest waiting reply."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            await self._worker.serve(task_status=task_status)
            nursery.cancel_scope.cancel()

    async def _watch(self) -> None:
        while True:
            try:
                await self._look_at_the_oldest()
            except TransientError as exc:
                log.info("outbox: could not look at the oldest waiting reply: %s", exc)
            await trio.sleep(PROBE_INTERVAL_SECONDS)

    async def _look_at_the_oldest(self) -> None:
        """Read the oldest waiting reply (the gauge); if it has waited longer than its park's
        publish could take, it may be an orphan, which only a message handled after it can show
        up: send a probe (it waits its turn behind any backlog, so a live batch is never
        mistaken for one)."""
        ob = self._outbox
        oldest = await self._store.outbox_oldest()
        ob.oldest_parked_at = None if oldest is None else oldest[1]
        if oldest is None or not self._broker.connected:
            return
        if time.time() - oldest[1] > self._broker.publish_timeout + ORPHAN_MARGIN_SECONDS:
            await ob.publish_probe()

    async def _on_probe(self, delivery: Delivery) -> None:
        try:
            probe = _probe_dec.decode(delivery.body)
        except msgspec.DecodeError as exc:
            log.error("outbox: malformed probe dropped: %s", exc)
            return
        try:
            await self._sweep(probe.not_before)
        except TransientError as exc:  # a probe is disposable: the next look sends another
            log.info("outbox: probe not used: %s", exc)

    async def _sweep(self, proof: float) -> None:
        """Drop orphans among the oldest waiting replies, up to the first that is not one."""
        for _ in range(SWEEP_LIMIT):
            oldest = await self._store.outbox_oldest()
            if oldest is None or oldest[1] + ORPHAN_MARGIN_SECONDS >= proof:
                return  # (due ≥ parked) nothing left can be shown an orphan by this proof
            head, dropped = await self._check_head(oldest[0], None, proof)
            if head is not None and not dropped:
                return

    async def _check_head(
        self, client_id: str, batch_id: str | None, proof: float | None
    ) -> tuple[str | None, tuple[str, ...]]:
        """The customer's oldest pending batch, after dropping orphans (see ``proof`` in
        :meth:`StateStore.outbox_check_head`) with a warning and a count each."""
        ob = self._outbox
        grace = ob.max_backoff_seconds + self._broker.publish_timeout
        head, dropped = await self._store.outbox_check_head(
            client_id,
            batch_id,
            proof=proof,
            margin=ORPHAN_MARGIN_SECONDS,
            now=time.time(),
            grace=grace,
        )
        for orphan in dropped:
            ob.orphans_dropped += 1
            log.warning(
                "outbox: batch %s of client %s dropped from the pending list: it is in no "
                "queue (a park cut short between its two halves)",
                orphan,
                client_id,
            )
        return head, dropped

    async def _handle(self, sub: Subscription, delivery: Delivery) -> None:
        if delivery.headers.get(KIND_HEADER) in (PROBE_KIND, PROBE_KIND.encode()):
            await self._on_probe(delivery)
            await sub.ack(delivery)
            return
        try:
            batch = _batch_dec.decode(delivery.body)
        except msgspec.DecodeError as exc:
            log.error("outbox: malformed message to the DLQ: %s", exc)
            await sub.nack(delivery, requeue=False)
            return
        while True:
            try:
                await self._attempt(batch, sub.is_open)
                break
            except DeliveryLost as exc:
                log.warning("outbox: %s", exc)
                return  # not acked: the broker has requeued the batch for whoever holds it now
            except TransientError as exc:  # Redis or the broker: keep the message, try again
                if not sub.is_open():
                    log.warning("outbox: %s; the channel is gone, left to the redelivery", exc)
                    return
                log.warning("outbox: %s; retrying batch %s", exc, batch.id)
                # some of its replies may have gone out before the failure: look them up first
                batch = msgspec.structs.replace(batch, unsure=True)
                await trio.sleep(1.0)
        await sub.ack(delivery)

    async def _attempt(self, batch: OutboxBatch, still_ours: Callable[[], bool]) -> None:
        ob = self._outbox
        if time.time() - batch.first_failed_at > OUTBOX_MAX_AGE_SECONDS:
            for text in batch.texts:
                await ob.dead_letter(
                    batch.client_id,
                    batch.origin_message_id,
                    text,
                    reason="expired after 7 days in the outbox",
                    attempts=batch.attempts,
                    first_failed_at=batch.first_failed_at,
                )
            await self._store.outbox_done(batch.client_id, batch.id)
            return
        proof = batch.not_before or None
        head, _ = await self._check_head(batch.client_id, batch.id, proof)
        if head is not None and head != batch.id:
            # An older batch of this customer is still waiting: queue behind it, no attempt used.
            await ob.publish_batch(self._broker.topology.outbox_wait(1), batch)
            return
        lease = self._guards.lease(batch.client_id)
        guard = self._guards.guard(lease, still_ours, f"outbox batch {batch.id}")
        try:
            replies = list(batch.replies())
            route = batch.route()
            attempts = batch.attempts + 1
            unsure = batch.unsure
            await self._store.record_sending(batch.client_id, batch.texts, time.time())
            while replies:
                try:
                    if unsure:
                        # Sent in order: what Chat2Desk has is a prefix; the rest never went out.
                        found = await self._sender.find_sent(
                            batch.client_id,
                            tuple(r.external_id for r in replies if r.external_id),
                            guard=guard,
                        )
                        unsure = False
                        if found:
                            await self._store.record_own(tuple(found.values()))
                            ob.delivered += len(found)
                            replies = [r for r in replies if r.external_id not in found]
                            log.info(
                                "outbox: %d repl(ies) of batch %s had reached chat2desk already",
                                len(found),
                                batch.id,
                            )
                            continue
                    own_id = await self._sender.send_once(
                        batch.client_id,
                        replies[0].text,
                        external_id=replies[0].external_id,
                        route=route,
                        guard=guard,
                    )
                except PermanentError as exc:
                    await ob.dead_letter(
                        batch.client_id,
                        batch.origin_message_id,
                        replies[0].text,
                        reason=str(exc),
                        attempts=attempts,
                        first_failed_at=batch.first_failed_at,
                    )
                    replies.pop(0)
                    continue
                except AuthRejected as exc:
                    # Not the reply's fault: wait for the token without using an attempt.
                    retry = _remaining(batch, replies, batch.attempts, str(exc), unsure)
                    tiers = wait_tiers(ob.max_backoff_seconds)
                    wanted = self._sender.auth_retry_seconds
                    delay = min((t for t in tiers if t >= wanted), default=max(tiers))
                    await ob.publish_batch(self._broker.topology.outbox_wait(delay), retry)
                    return
                except TransientError as exc:
                    unsure = unsure or isinstance(exc, DeliveryUnknown)
                    if attempts >= ob.max_attempts:
                        for reply in replies:
                            await ob.dead_letter(
                                batch.client_id,
                                batch.origin_message_id,
                                reply.text,
                                reason=f"gave up after {attempts} attempts: {exc}",
                                attempts=attempts,
                                first_failed_at=batch.first_failed_at,
                            )
                        break
                    delay = backoff_for(attempts, ob.max_backoff_seconds)
                    retry = _remaining(batch, replies, attempts, str(exc), unsure)
                    await ob.publish_batch(self._broker.topology.outbox_wait(delay), retry)
                    ob.retried += 1
                    log.info(
                        "outbox: batch %s attempt %d failed (%s); next in %ds",
                        batch.id,
                        attempts,
                        exc,
                        delay,
                    )
                    return
                replies.pop(0)
                ob.delivered += 1
                await self._store.record_own((own_id,))
            await self._store.outbox_done(batch.client_id, batch.id)
        finally:
            await self._guards.release(lease)
