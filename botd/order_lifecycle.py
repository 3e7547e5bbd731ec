"""The life of an order: its statuses, the moves between them, and the event each move makes
(docs/design.md §4.3). Pure values and rules, plus the one transaction that moves an order.

    placed → confirmed → delivering → delivered
       └──────────┴───────────┴──→ cancelled

An order moves forward only (the shop may skip a status: placed → delivering is allowed), or to
``cancelled`` from any status but ``delivered``. ``delivered`` and ``cancelled`` are final. The
customer can cancel from the chat only while the order is ``placed`` (:mod:`botd.order_store`);
the shop moves orders with ``botd orders set-status``.

Every move writes one row of ``order_events`` in the same transaction as the change: the history
(who, when, from which status) and the outbox of the events botd sends on
(:mod:`botd.order_events`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

STATUSES: tuple[str, ...] = ("placed", "confirmed", "delivering", "delivered", "cancelled")
FORWARD: tuple[str, ...] = ("placed", "confirmed", "delivering", "delivered")
FINAL = frozenset({"delivered", "cancelled"})

PLACED = "order.placed"
CANCELLED = "order.cancelled"
STATUS_CHANGED = "order.status_changed"
EVENT_TYPES: tuple[str, ...] = (PLACED, CANCELLED, STATUS_CHANGED)

CUSTOMER = "customer"  # the actor of a customer's own order and cancel
MAX_ACTOR_CHARS = 100
MAX_NOTE_CHARS = 1000


# The order object of the shop webhook, `botd orders list --json` and `export` (docs/orders.md):
# select ORDER_COLUMNS from ``orders o`` and give the row to :func:`order_object`.
ORDER_COLUMNS = (
    "o.id, o.status, o.client_phone, o.delivery_address, o.quantity, o.chat2desk_client_id, "
    "o.created_at"
)


def iso_time(when: datetime) -> str:
    """UTC, milliseconds, with a Z: ``2026-12-07T04:12:05.123Z``."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def order_object(row: tuple[Any, ...], *, status: str | None = None) -> dict[str, Any]:
    """The order as the shop sees it, from a row of ORDER_COLUMNS (``status`` overrides the
    row's: an event carries the status it made, not a later one)."""
    order_id, row_status, phone, address, quantity, client_id, created_at = row[:7]
    return {
        "id": int(order_id),
        "status": status or str(row_status),
        "phone": str(phone),
        "address": str(address),
        "quantity": int(quantity),
        "client_id": str(client_id),
        "created_at": iso_time(created_at),
    }


class IllegalMove(ValueError):
    """The move is not part of the life cycle (the message says why and what is allowed)."""


def allowed_moves(status: str) -> tuple[str, ...]:
    """The statuses an order in ``status`` may move to."""
    if status in FINAL:
        return ()
    later = FORWARD[FORWARD.index(status) + 1 :] if status in FORWARD else ()
    return (*later, "cancelled")


def check_move(current: str, target: str) -> None:
    """Raise :class:`IllegalMove` unless ``current → target`` is allowed."""
    if target not in STATUSES:
        raise IllegalMove(f"unknown status {target!r}; one of: {', '.join(STATUSES)}")
    if current == target:
        raise IllegalMove(f"the order is already {current}")
    allowed = allowed_moves(current)
    if target not in allowed:
        if not allowed:
            raise IllegalMove(f"the order is {current}, which is final; it cannot become {target}")
        raise IllegalMove(
            f"an order that is {current} cannot become {target}; allowed: {', '.join(allowed)}"
        )


def event_type(target: str) -> str:
    """The event a move to ``target`` makes."""
    if target == "placed":
        return PLACED
    if target == "cancelled":
        return CANCELLED
    return STATUS_CHANGED


@dataclass(frozen=True, slots=True)
class Moved:
    """A move made: the order, its status before and after, and the event written."""

    order_id: int
    from_status: str
    to_status: str
    event_id: str


class OrderNotFound(LookupError):
    pass


_LOCK = "SELECT status FROM orders WHERE id = %(id)s FOR UPDATE"
_UPDATE = """
UPDATE orders SET status = %(to)s, updated_at = now(),
       cancelled_at = CASE WHEN %(to)s = 'cancelled' THEN now() ELSE cancelled_at END
WHERE id = %(id)s
"""
_EVENT = """
INSERT INTO order_events (order_id, type, from_status, to_status, actor, note)
VALUES (%(id)s, %(type)s, %(from)s, %(to)s, %(actor)s, %(note)s)
RETURNING event_id
"""


def move(
    conn: psycopg.Connection[Any], order_id: int, target: str, *, actor: str, note: str | None
) -> Moved:
    """Move order ``order_id`` to ``target`` and record the event, in one transaction.

    The row is locked first, so a concurrent move (another operator, the customer's cancel)
    is seen before the rule is checked. Raises :class:`OrderNotFound` or :class:`IllegalMove`
    (nothing changed).
    """
    if not 1 <= len(actor) <= MAX_ACTOR_CHARS:
        raise IllegalMove(f"the actor must be 1-{MAX_ACTOR_CHARS} characters")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise IllegalMove(f"the note is longer than {MAX_NOTE_CHARS} characters")
    with conn.transaction():
        row = conn.execute(_LOCK, {"id": order_id}).fetchone()
        if row is None:
            raise OrderNotFound(f"there is no order {order_id}")
        current = str(row[0])
        check_move(current, target)
        conn.execute(_UPDATE, {"id": order_id, "to": target})
        params = {
            "id": order_id,
            "type": event_type(target),
            "from": current,
            "to": target,
            "actor": actor,
            "note": note,
        }
        event = conn.execute(_EVENT, params).fetchone()
        assert event is not None
    return Moved(order_id, current, target, str(event[0]))
