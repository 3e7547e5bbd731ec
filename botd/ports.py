"""What the message processor needs from the outside world, as small protocols (ports).

The adapters (Redis, PostgreSQL, RabbitMQ, httpx) implement them for the daemon; the in-memory
versions implement them for ``botd chat`` and for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CancelOutcome(StrEnum):
    """What asking to cancel an order by its idempotency key found."""

    CANCELLED = "cancelled"  # it was 'placed' and is 'cancelled' now
    ALREADY_CANCELLED = "already_cancelled"  # cancelled before (a repeated cancel)
    TOO_LATE = "too_late"  # the shop has moved it on (confirmed, delivering, delivered)
    NOT_FOUND = "not_found"  # no order under that key


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: CancelOutcome
    order_id: int | None  # the order's number, when found
