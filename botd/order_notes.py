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

With ``dialog.order_tag`` set, a placed order's note is followed by that tag on the Chat2Desk
request (обращение) the note went into — the request id comes only in the send's answer — so
operators can filter order dialogs; when the request is not known (the note was found by lookup,
not sent now) the client is tagged instead. The note is recorded as sent (a ``note_sent``
marker, and in memory with its request id) before the tag is put on, so a tag call that fails and
is retried never sends the note again; a tag Chat2Desk refuses (an unknown id) is logged and the
event is done: the note is what matters.
"""

from __future__ import annotations

import logging

from botd.broker import Broker
from botd.chat_api import Sender, Sent
from botd.config import Config
from botd.errors import AuthRejected, PermanentError, TransientError
from botd.order_events import NOTE_KIND, EventDestination, OrderEvent, Rejected
from botd.order_lifecycle import CANCELLED, CUSTOMER, PLACED
from botd.ports import OWN_EXTERNAL_ID_PREFIX
from botd.state_store import StateStore

log = logging.getLogger("botd.order_notes")

NOTE_TYPE = "comment"
NOTE_SENT = "note_sent"  # the marker of a note sent while its tag is not on yet

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
        tag = config.dialog.order_tag
        self._tag_id = int(tag) if tag else None
        # The event whose note this process sent, and the request it went into: the retries of
        # its tag (one event at a time) neither send the note again nor lose the request id.
        self._noted: tuple[str, int | None] | None = None

    async def deliver(self, event: OrderEvent, *, unsure: bool) -> bool:
        if self._tag_id is None or event.type != PLACED:
            await self._send_note(event, unsure=unsure)
            return True
        request_id = await self._note_once(event, unsure=unsure)
        await self._tag(event, self._tag_id, request_id)
        return True

    async def _send_note(self, event: OrderEvent, *, unsure: bool) -> Sent:
        """One attempt at the note (looked up first when ``unsure``); Rejected when Chat2Desk
        refuses it for good."""
        try:
            return await self._sender.send_once_sent(
                event.order.client_id,
                note_text(event, self._locale),
                external_id=note_external_id(event.id),
                unsure=unsure,
                message_type=NOTE_TYPE,
            )
        except PermanentError as exc:
            raise Rejected(str(exc)) from exc

    async def _note_once(self, event: OrderEvent, *, unsure: bool) -> int | None:
        """Send the note unless an earlier attempt did; the request id of its answer (None:
        not known, e.g. sent by an attempt before a crash)."""
        if self._noted is not None and self._noted[0] == event.id:
            return self._noted[1]
        try:
            if await self._store.event_done(NOTE_SENT, event.id):
                return None
        except TransientError as exc:  # cannot tell: look the note up before sending it
            log.warning("order event %s: note marker unreadable (%s)", event.id, exc)
            unsure = True
        sent = await self._send_note(event, unsure=unsure)
        self._noted = (event.id, sent.request_id)
        try:
            await self._store.mark_event_done(NOTE_SENT, event.id)
        except TransientError as exc:  # this process remembers; a redelivery looks it up
            log.warning("order event %s: could not record the note as sent (%s)", event.id, exc)
        return sent.request_id

    async def _tag(self, event: OrderEvent, tag_id: int, request_id: int | None) -> None:
        """Put the order tag on the note's request (or on the client when the request is not
        known). TransientError propagates (retried); a refusal is logged, not dead-lettered."""
        if request_id is not None:
            assignee_type, assignee_id = "request", request_id
        else:
            assignee_type, assignee_id = "client", int(event.order.client_id)
        try:
            await self._sender.assign_tag(
                tag_id, assignee_type=assignee_type, assignee_id=assignee_id
            )
        except PermanentError as exc:
            log.error(
                "order %s: chat2desk refused tag %d (dialog.order_tag) on %s %d: %s; the note "
                "went out untagged — set dialog.order_tag to an id GET /v1/tags lists, or empty",
                event.order.id,
                tag_id,
                assignee_type,
                assignee_id,
                exc,
                extra={"order_id": str(event.order.id), "event_id": event.id},
            )
            return
        log.info(
            "order %s: tag %d put on %s %d",
            event.order.id,
            tag_id,
            assignee_type,
            assignee_id,
            extra={"order_id": str(event.order.id), "event_id": event.id},
        )

    def retry_delay(self, exc: Exception, attempts: int) -> float | None:
        # Sending is paused (a refused token): wait for the probe, without using up attempts.
        if isinstance(exc, AuthRejected):
            return self._sender.auth_retry_seconds
        return None
