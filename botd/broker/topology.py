"""The RabbitMQ queues of one deployment: their names and arguments (docs/design.md §4.4).

Pure values: no I/O and no configuration reading. The caller passes the plain numbers in
(:func:`botd.broker.layout` derives the delays from the configuration), and the connection
declares :meth:`Topology.declarations` as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

QUEUE_TTL_MS = 24 * 3600 * 1000  # customer messages (docs/design.md §3.1)
OUTBOX_TTL_MS = 7 * 24 * 3600 * 1000  # parked replies; expired ones are dead-lettered

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
SINGLE_ACTIVE: dict[str, Any] = {"x-single-active-consumer": True}


def wait_tiers(max_backoff_seconds: int) -> tuple[int, ...]:
    """The outbox's backoff delays: 1, 2, 4, … capped at ``max_backoff_seconds``."""
    tiers = {
        min(2**k, max_backoff_seconds) for k in range(32) if 2 ** (k - 1) < max_backoff_seconds
    }
    return tuple(sorted(tiers | {max_backoff_seconds}))


def timer_delays(reminder_after_seconds: int, state_ttl_seconds: int) -> tuple[int, ...]:
    """The timer wait queues: the reminder's delay and the close's delay after it."""
    return tuple(
        sorted({reminder_after_seconds, max(1, state_ttl_seconds - reminder_after_seconds)})
    )


@dataclass(frozen=True, slots=True)
class QueueDeclaration:
    """One durable queue and the arguments it is declared with."""

    name: str
    arguments: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Topology:
    """Queue names for one deployment, derived from ``rabbitmq.queue_prefix``, and the
    arguments of every queue."""

    prefix: str
    shards: int
    delivery_limit: int = 5  # ``rabbitmq.delivery_limit``: returns before a poison message dies
    wait_tiers: tuple[int, ...] = (1,)  # outbox wait queues, seconds (:func:`wait_tiers`)
    timer_delays: tuple[int, ...] = ()  # timer wait queues, seconds (:func:`timer_delays`)
    # ``rabbitmq.quorum_initial_group_size``: replicas of a new queue; 0 leaves the argument out
    # (the broker's default), so queues declared by older versions still redeclare unchanged
    quorum_initial_group_size: int = 0

    def shard(self, index: int) -> str:
        return f"{self.prefix}.shard.{index}"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}.outbox"

    def outbox_wait(self, seconds: int) -> str:
        return f"{self.prefix}.outbox.wait.{seconds}s"

    @property
    def timers(self) -> str:
        return f"{self.prefix}.timers"

    def timer_wait(self, seconds: int) -> str:
        return f"{self.prefix}.timer.wait.{seconds}s"

    @property
    def shop_events(self) -> str:
        """Order events on their way to the shop's webhook (botd.shop_webhook)."""
        return f"{self.prefix}.shop_events"

    @property
    def order_notes(self) -> str:
        """Order events on their way into the customer's Chat2Desk dialog as a note."""
        return f"{self.prefix}.order_notes"

    def queue_names(self) -> list[str]:
        """Every queue of the deployment, the DLQ last."""
        dlq, *others = (d.name for d in self.declarations())
        return [*others, dlq]

    def declarations(self) -> tuple[QueueDeclaration, ...]:
        """Every queue with its arguments, in declaration order: the DLQ first.

        All are durable quorum queues. Everything but the DLQ dead-letters (at least once) to
        the DLQ, except the wait queues: their queue-level TTL dead-letters each message back
        into the queue they wait for.
        """
        quorum = dict(QUORUM)
        if self.quorum_initial_group_size:
            quorum["x-quorum-initial-group-size"] = self.quorum_initial_group_size
        return (
            QueueDeclaration(self.dlq, quorum),
            *(QueueDeclaration(name, {**quorum, **args}) for name, args in self._dead_lettering()),
        )

    def _dead_lettering(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, arguments) of the queues that dead-letter, as one table."""
        for i in range(self.shards):
            yield (
                self.shard(i),
                {
                    **self._to(self.dlq),
                    **SINGLE_ACTIVE,
                    "x-delivery-limit": self.delivery_limit,
                    "x-message-ttl": QUEUE_TTL_MS,
                },
            )
        yield self.outbox, {**self._to(self.dlq), **SINGLE_ACTIVE, "x-message-ttl": OUTBOX_TTL_MS}
        for seconds in self.wait_tiers:
            yield self.outbox_wait(seconds), self._waiting(self.outbox, seconds)
        yield self.timers, {**self._to(self.dlq), **SINGLE_ACTIVE}
        for seconds in self.timer_delays:
            yield self.timer_wait(seconds), self._waiting(self.timers, seconds)
        yield self.shop_events, {**self._to(self.dlq), **SINGLE_ACTIVE}
        yield self.order_notes, {**self._to(self.dlq), **SINGLE_ACTIVE}

    @staticmethod
    def _to(target: str) -> dict[str, Any]:
        return {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def _waiting(self, target: str, seconds: int) -> dict[str, Any]:
        """A wait queue: every message waits ``seconds``, then goes back to ``target``."""
        return {**self._to(target), "x-message-ttl": seconds * 1000}
