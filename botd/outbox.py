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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import msgspec
import trio

from botd.broker import Broker, Delivery, QueueWorker, Subscription, wait_tiers
from botd.chat_api import Sender
from botd.errors import PermanentError, TransientError
from botd.state_store import StateStore

log = logging.getLogger("botd.outbox")

__all__ = ["DeadReply", "Outbox", "OutboxBatch", "OutboxRetrier", "backoff_for", "wait_tiers"]

OUTBOX_MAX_AGE_SECONDS = 7 * 24 * 3600
KIND_HEADER = "x-botd-kind"


class OutboxBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Replies to one customer waiting to be sent, oldest first."""

    id: str
    client_id: str
    texts: tuple[str, ...]
    attempts: int  # attempts made so far
    first_failed_at: float
    origin_message_id: str
    reason: str


class DeadReply(msgspec.Struct, frozen=True, kw_only=True):
    """A reply given up on, as kept in the DLQ."""

    client_id: str
    text: str
    attempts: int
    reason: str
    origin_message_id: str
    first_failed_at: float
    dead_at: float


_enc = msgspec.json.Encoder()
_batch_dec = msgspec.json.Decoder(OutboxBatch)


def backoff_for(attempts: int, max_backoff_seconds: int) -> int:
    """Delay before attempt ``attempts + 1`` (a value of :func:`wait_tiers`)."""
    return min(1 << max(0, attempts - 1), max_backoff_seconds)


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    parked: int
    delivered: int
    retried: int
    dead_lettered: int


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

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(self.parked, self.delivered, self.retried, self.dead_lettered)

    async def has_pending(self, client_id: str) -> bool:
        return await self._store.outbox_pending(client_id) > 0

    async def park(
        self, client_id: str, message_id: str, texts: tuple[str, ...], *, reason: str
    ) -> None:
        batch = OutboxBatch(
            id=f"{message_id}.{time.time_ns()}",
            client_id=client_id,
            texts=texts,
            attempts=0,
            first_failed_at=time.time(),
            origin_message_id=message_id,
            reason=reason,
        )
        await self._store.outbox_push(client_id, batch.id, ttl_seconds=OUTBOX_MAX_AGE_SECONDS)
        try:
            await self.publish_batch(self._broker.topology.outbox, batch)
        except BaseException:
            # Not parked: take the entry back, or every later reply to this customer would
            # queue behind a batch that is in no queue (the caller retries and parks anew).
            with trio.CancelScope(shield=True), trio.move_on_after(self._broker.publish_timeout):
                try:
                    await self._store.outbox_done(client_id, batch.id)
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
        await self._broker.publish(
            queue,
            _enc.encode(batch),
            timeout=self._broker.publish_timeout,
            headers={KIND_HEADER: "outbox"},
        )


class OutboxRetrier:
    """Consumes the outbox and re-sends with tiered backoff (one task in the daemon's nursery)."""

    def __init__(self, broker: Broker, outbox: Outbox, store: StateStore, sender: Sender) -> None:
        self._broker = broker
        self._outbox = outbox
        self._store = store
        self._sender = sender
        self._worker = QueueWorker(
            broker, broker.topology.outbox, self._handle, prefetch=1, name="outbox retrier"
        )
        self.stop_taking = self._worker.stop_taking
        self.serve = self._worker.serve

    async def _handle(self, sub: Subscription, delivery: Delivery) -> None:
        try:
            batch = _batch_dec.decode(delivery.body)
        except msgspec.DecodeError as exc:
            log.error("outbox: malformed message to the DLQ: %s", exc)
            await sub.nack(delivery, requeue=False)
            return
        while True:
            try:
                await self._attempt(batch)
                break
            except TransientError as exc:  # Redis or the broker: keep the message, try again
                log.warning("outbox: %s; retrying batch %s", exc, batch.id)
                await trio.sleep(1.0)
        await sub.ack(delivery)

    async def _attempt(self, batch: OutboxBatch) -> None:
        ob = self._outbox
        head = await self._store.outbox_head(batch.client_id)
        if head is not None and head != batch.id:
            # An older batch of this customer is still waiting: queue behind it, no attempt used.
            await ob.publish_batch(self._broker.topology.outbox_wait(1), batch)
            return
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
        texts = list(batch.texts)
        attempts = batch.attempts + 1
        while texts:
            try:
                own_id = await self._sender.send_once(batch.client_id, texts[0])
                await self._store.record_own((own_id,))
            except PermanentError as exc:
                await ob.dead_letter(
                    batch.client_id,
                    batch.origin_message_id,
                    texts[0],
                    reason=str(exc),
                    attempts=attempts,
                    first_failed_at=batch.first_failed_at,
                )
                texts.pop(0)
                continue
            except TransientError as exc:
                if attempts >= ob.max_attempts:
                    for text in texts:
                        await ob.dead_letter(
                            batch.client_id,
                            batch.origin_message_id,
                            text,
                            reason=f"gave up after {attempts} attempts: {exc}",
                            attempts=attempts,
                            first_failed_at=batch.first_failed_at,
                        )
                    break
                delay = backoff_for(attempts, ob.max_backoff_seconds)
                retry = msgspec.structs.replace(
                    batch, texts=tuple(texts), attempts=attempts, reason=str(exc)
                )
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
            texts.pop(0)
            ob.delivered += 1
        await self._store.outbox_done(batch.client_id, batch.id)
