"""The order webhook to the shop's own system (docs/orders.md).

Each order event (:class:`botd.order_events.OrderEvent`) is POSTed as JSON to
``shop_webhook.url`` with the header::

    X-Botd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

Any 2xx answer is success; anything else (another status, a timeout, a refused connection) is
tried again with backoff from the durable ``<prefix>.shop_events`` queue and dead-lettered after
``shop_webhook.max_attempts`` (:class:`botd.order_events.EventDestination`). Delivery is at
least once: the receiver dedupes on the event's ``id`` (a copy is rare: a crash between the
shop's 2xx and botd's record of it). Redirects are not followed: a moved endpoint is a
configuration to fix, not something to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from botd import __version__
from botd.broker import Broker
from botd.config import ShopWebhookConfig
from botd.order_events import SHOP_EVENT_KIND, EventDestination, OrderEvent, Refused, encode_event
from botd.state_store import StateStore

SIGNATURE_HEADER = "X-Botd-Signature"
EVENT_ID_HEADER = "X-Botd-Event-Id"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Botd-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, *, now: float, tolerance_seconds: float = 300
) -> bool:
    """What a receiver does: check the signature (constant time) and the timestamp's age."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


class ShopWebhook(EventDestination):
    destination = "shop"
    kind = SHOP_EVENT_KIND

    def __init__(
        self,
        broker: Broker,
        store: StateStore,
        config: ShopWebhookConfig,
        client: httpx.AsyncClient,
    ) -> None:
        super().__init__(
            broker,
            store,
            broker.topology.shop_events,
            max_attempts=config.max_attempts,
            max_backoff_seconds=config.max_backoff_seconds,
        )
        self._config = config
        self._client = client

    async def deliver(self, event: OrderEvent, *, unsure: bool) -> bool:
        body = encode_event(event)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._config.secret, body, int(time.time())),
            EVENT_ID_HEADER: event.id,
        }
        try:
            response = await self._client.post(self._config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Refused(f"shop webhook unreachable: {type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise Refused(f"shop webhook answered {response.status_code}")
        return True


@asynccontextmanager
async def open_shop_client(config: ShopWebhookConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP client of the shop webhook (keep-alive, no redirects, the configured timeout)."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout_seconds),
        follow_redirects=False,
        headers={"User-Agent": f"botd/{__version__}"},
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
    ) as client:
        yield client
