"""The order note in the customer's Chat2Desk dialog (docs/orders.md).

When an order is placed or cancelled, the shop's operators see it where they already work: an
internal message (``type: "comment"`` on ``POST /messages``; the customer does not see it) in the
customer's dialog, e.g. ``🛒 Заказ №1042: 3 шт., +996555123456, ул. Ленина 5``. In the shop's
language (``dialog.default_locale``).

Sent through the same shared rate limiter as the replies, from its own queue, so a note that
cannot go out never holds back or reorders a reply to the customer. One note per event: the
note carries the external id ``botd-note-<event id>``; a copy of the event is dropped by its
Redis marker, and an attempt that may have reached Chat2Desk (a timeout, a kill, a redelivery)
looks the note up by that id before sending again. The ``botd-`` prefix also makes the note's
own ``outbox`` echo, should Chat2Desk send one, botd's own (never an operator taking over).
"""

from __future__ import annotations

from botd.broker import Broker
from botd.chat_api import Sender
from botd.config import Config
from botd.errors import AuthRejected, PermanentError
from botd.order_events import NOTE_KIND, EventDestination, OrderEvent, Rejected
from botd.order_lifecycle import CANCELLED, CUSTOMER
from botd.ports import OWN_EXTERNAL_ID_PREFIX
from botd.state_store import StateStore

NOTE_TYPE = "comment"

_PLACED = {
    "ru": "🛒 Заказ №{id}: {quantity} шт., {phone}, {address}",
    "ky": "🛒 Буйрутма №{id}: {quantity} даана, {phone}, {address}",
    "en": "🛒 Order #{id}: {quantity} pcs, {phone}, {address}",
}
_CANCELLED = {
    "ru": "❌ Заказ №{id} отменён {by}: {quantity} шт., {phone}, {address}",
    "ky": "❌ Буйрутма №{id} жокко чыгарылды ({by}): {quantity} даана, {phone}, {address}",
    "en": "❌ Order #{id} cancelled by {by}: {quantity} pcs, {phone}, {address}",
}
_BY = {
    "ru": {"customer": "клиентом", "shop": "магазином"},
    "ky": {"customer": "кардар", "shop": "дүкөн"},
    "en": {"customer": "the customer", "shop": "the shop"},
}


def note_external_id(event_id: str) -> str:
    return f"{OWN_EXTERNAL_ID_PREFIX}note-{event_id}"


def note_text(event: OrderEvent, locale: str) -> str:
    """The note for ``event`` in ``locale`` (ru, ky or en)."""
    order = event.order
    fields = {
        "id": order.id,
        "quantity": order.quantity,
        "phone": order.phone,
        "address": order.address,
    }
    if event.type == CANCELLED:
        who = "customer" if event.change.by == CUSTOMER else "shop"
        text = _CANCELLED[locale].format(by=_BY[locale][who], **fields)
    else:
        text = _PLACED[locale].format(**fields)
    if event.change.note:
        text += f" — {event.change.note}"
    return text


class OrderNotes(EventDestination):
    destination = "note"
    kind = NOTE_KIND

    def __init__(self, broker: Broker, store: StateStore, sender: Sender, config: Config) -> None:
        super().__init__(
            broker,
            store,
            broker.topology.order_notes,
            max_attempts=config.outbox.max_attempts,
            max_backoff_seconds=config.outbox.max_backoff_seconds,
        )
        self._sender = sender
        self._locale = config.dialog.default_locale

    async def deliver(self, event: OrderEvent, *, unsure: bool) -> bool:
        try:
            await self._sender.send_once(
                event.order.client_id,
                note_text(event, self._locale),
                external_id=note_external_id(event.id),
                unsure=unsure,
                message_type=NOTE_TYPE,
            )
        except PermanentError as exc:
            raise Rejected(str(exc)) from exc
        return True

    def retry_delay(self, exc: Exception, attempts: int) -> float | None:
        # Sending is paused (a refused token): wait for the probe, without using up attempts.
        if isinstance(exc, AuthRejected):
            return self._sender.auth_retry_seconds
        return None
