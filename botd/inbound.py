"""The Chat2Desk webhook payload: validate it, decide whether it is ours, normalise it.

One place, typed. :func:`parse_webhook` turns raw bytes into either a :class:`QueuedMessage`
(a customer's message to queue) or an :class:`Ignored` verdict, or raises
:class:`~botd.errors.InvalidInput` with a reason that names the field. The queued form is what
travels through RabbitMQ and what the consumer turns into a dialog turn.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from botd.errors import InvalidInput

MAX_TEXT_CHARS = 2000
QUEUED_VERSION = 1
MEDIA_FIELDS = ("photo", "audio", "video", "pdf", "sticker", "document")
_MAX_ID = 2**63 - 1
_WS = re.compile(r"\s+")


class MessageKind(StrEnum):
    """What a queued message is (stored as its string value, so old queued messages still read)."""

    CUSTOMER = "customer"  # a customer's message from the webhook
    OPERATOR = "operator"  # a message sent to the customer from Chat2Desk (a human or our echo)
    REMINDER = "reminder"  # durable dialog timers (botd.timers), valid only at state ``version``
    EXPIRE = "expire"
    # the shop moved the customer's order (botd orders set-status): tell the customer
    ORDER_STATUS = "order_status"


class QueuedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A customer message as queued: everything the consumer needs, nothing more."""

    v: int = QUEUED_VERSION
    message_id: str
    client_id: str
    text: str | None
    received_at: float
    media: tuple[str, ...] = ()
    location: tuple[float, float] | None = None
    contact_phone: str | None = None
    transport: str | None = None
    channel_id: int | None = None
    kind: MessageKind = MessageKind.CUSTOMER
    version: int = 0
    external_id: str | None = None  # an ``outbox`` event's external id (botd's replies: botd-…)
    # ORDER_STATUS only: the order, its new status, and the language the customer ordered in
    order_id: int | None = None
    order_status: str | None = None
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed event botd deliberately does not act on."""

    reason: str
    kind: str = "other"  # a bounded label for metrics: "hook_type" or "type"


_encoder = msgspec.json.Encoder()
_queued_decoder = msgspec.json.Decoder(QueuedMessage)


def encode_queued(msg: QueuedMessage) -> bytes:
    return _encoder.encode(msg)


def decode_queued(body: bytes) -> QueuedMessage:
    """Decode a queued message; raise InvalidInput if it is not one (a poison message)."""
    try:
        return _queued_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"queued message is malformed: {exc}") from exc


def shard_of(client_id: str, shards: int) -> int:
    """Stable shard of a customer: the same client_id always maps to the same shard."""
    return zlib.crc32(client_id.encode()) % shards


def normalise_text(text: str) -> str | None:
    """NFC, control/format characters removed, whitespace folded, trimmed, capped; None if empty."""
    text = unicodedata.normalize("NFC", text)
    if not text.isprintable():  # else nothing to drop: no Cc/Cs/Co/Cf, no \n \r \t (C loop)
        text = _drop_controls(text)
    out = _WS.sub(" ", text).strip()[:MAX_TEXT_CHARS].strip()
    return out or None


def _drop_controls(text: str) -> str:
    """Tabs and line breaks → spaces; control, surrogate, private-use and format characters
    (but the zero-width joiner, which emoji sequences need) dropped."""
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\n\r\t":
            kept.append(" ")
        elif cat in ("Cc", "Cs", "Co") or (cat == "Cf" and ch != "\u200d"):
            continue
        else:
            kept.append(ch)
    return "".join(kept)


def text_digest(text: str) -> str:
    """A short digest of ``text`` as the webhook would normalise it: a reply botd sends and the
    ``outbox`` echo of it that comes back have the same digest."""
    normal = normalise_text(text) or ""
    return hashlib.blake2b(normal.encode(), digest_size=8).hexdigest()


def _id(payload: dict[str, Any], name: str) -> str:
    if name not in payload or payload[name] is None:
        raise InvalidInput(f"{name}: required")
    value = payload[name]
    if isinstance(value, bool):
        raise InvalidInput(f"{name}: must be a positive integer or a string of digits")
    if isinstance(value, int):
        if 0 < value <= _MAX_ID:
            return str(value)
    elif isinstance(value, str):
        s = value.strip()
        if 0 < len(s) <= 19 and s.isascii() and s.isdigit() and 0 < int(s) <= _MAX_ID:
            return str(int(s))
    raise InvalidInput(f"{name}: must be a positive integer or a string of digits")


def _opt_str(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"{name}: must be a string or null")


def _external_id(value: Any) -> str | None:
    """An echo's external id, if it is a usable string (anything else is not ours: ignored)."""
    return value[:100] if isinstance(value, str) and value else None


def _opt_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    try:
        return int(_id(payload, name))
    except InvalidInput:
        raise InvalidInput(f"{name}: must be a positive integer or null") from None


def _location(value: Any) -> tuple[float, float] | None:
    """Read a shared location in the shapes seen in the wild; None if not recognisable."""
    lat: Any
    lon: Any
    if isinstance(value, dict):
        lat = value.get("lat", value.get("latitude"))
        lon = value.get("lon", value.get("lng", value.get("longitude")))
    elif isinstance(value, list | tuple) and len(value) == 2:
        lat, lon = value
    elif isinstance(value, str) and value.count(",") == 1:
        lat, lon = value.split(",")
    else:
        return None
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError, OverflowError):
        return None
    if -90 <= la <= 90 and -180 <= lo <= 180:
        return (la, lo)
    return None


def _media(payload: dict[str, Any]) -> tuple[str, ...]:
    kinds = [name for name in MEDIA_FIELDS if payload.get(name) not in (None, "", [], {})]
    if payload.get("coordinates") not in (None, "", [], {}):
        kinds.append("location")
    attachments = payload.get("attachments")
    if isinstance(attachments, list) and attachments:
        kinds.append("attachment")
    return tuple(kinds)


def _contact_phone(payload: dict[str, Any]) -> str | None:
    contact = payload.get("contact")
    if isinstance(contact, dict):
        phone = contact.get("phone")
        if isinstance(phone, str | int) and not isinstance(phone, bool):
            return str(phone)[:64]
    return None


def parse_webhook(body: bytes, *, received_at: float) -> QueuedMessage | Ignored:
    """Validate a webhook body. Raises InvalidInput (→ 400) naming the field that is wrong."""
    try:
        payload = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"body is not valid JSON (UTF-8): {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("body must be a JSON object")
    hook_type = _opt_str(payload, "hook_type")
    msg_type = payload.get("type")
    if not isinstance(msg_type, str):
        raise InvalidInput("type: required, must be a string")
    if hook_type == "outbox" and msg_type == "to_client":
        # Sent to the customer from Chat2Desk: a human operator (→ hand-off) or botd's own echo;
        # the consumer tells them apart by the message ids botd got back when it sent.
        return QueuedMessage(
            message_id=_id(payload, "message_id"),
            client_id=_id(payload, "client_id"),
            text=normalise_text(raw) if (raw := _opt_str(payload, "text")) else None,
            received_at=received_at,
            kind=MessageKind.OPERATOR,
            external_id=_external_id(payload.get("external_id")),
        )
    if hook_type is not None and hook_type != "inbox":
        return Ignored(f"hook_type={hook_type[:40]!r} is not a customer message", "hook_type")
    if msg_type != "from_client":
        return Ignored(f"type={msg_type[:40]!r} is not a customer message", "type")
    message_id = _id(payload, "message_id")
    client_id = _id(payload, "client_id")
    raw_text = _opt_str(payload, "text")
    transport = _opt_str(payload, "transport")
    channel_id = _opt_int(payload, "channel_id")
    return QueuedMessage(
        message_id=message_id,
        client_id=client_id,
        text=normalise_text(raw_text) if raw_text else None,
        received_at=received_at,
        media=_media(payload),
        location=_location(payload.get("coordinates")),
        contact_phone=_contact_phone(payload),
        transport=transport[:40] if transport else None,
        channel_id=channel_id,
    )
