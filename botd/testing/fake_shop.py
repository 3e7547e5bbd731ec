"""A fake of the shop's own system: the receiver of botd's order webhook, on loopback.

It does what a careful receiver does — checks ``X-Botd-Signature`` (HMAC-SHA256 of
``"<t>.<raw body>"``, the timestamp within 5 minutes) and dedupes on the event id — and records
everything, so tests can count the events that arrived, once and in total. Switchable faults:
the next N answers with a status (e.g. 500), every answer with a status (the shop is down),
or the next N requests left hanging (a timeout on botd's side).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio

from botd.shop_webhook import SIGNATURE_HEADER, verify
from botd.testing.fake_chat2desk import _json_reply, _next_event, _Reply, _send_reply

_READ_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class ShopRequest:
    """One POST as the fake received it."""

    at: float  # time.monotonic()
    path: str
    raw: bytes
    signature: str | None
    signature_ok: bool
    status: int | None  # answered; None when left hanging
    event: dict[str, Any] | None  # the parsed body, if JSON

    @property
    def event_id(self) -> str | None:
        return None if self.event is None else str(self.event.get("id"))


@dataclass
class FakeShop:
    secret: str
    requests: list[ShopRequest] = field(default_factory=list)
    url: str = ""
    _fail: list[int] = field(default_factory=list)
    _always: int | None = None
    _hang: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    # ---- faults ----------------------------------------------------------------------------
    def fail_next(self, n: int = 1, *, status: int = 500) -> None:
        self._fail.extend([status] * n)

    def set_down(self, status: int = 503) -> None:
        """Answer every request with ``status`` until :meth:`set_up`."""
        self._always = status

    def set_up(self) -> None:
        self._always = None

    def hang_next(self, n: int = 1) -> None:
        self._hang += n

    # ---- what arrived ------------------------------------------------------------------------
    def accepted(self) -> list[dict[str, Any]]:
        """Events answered 2xx with a good signature, each event id once, in arrival order."""
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for r in self.requests:
            if r.status != 200 or not r.signature_ok or r.event is None:
                continue
            if r.event_id not in seen:
                seen.add(str(r.event_id))
                out.append(r.event)
        return out

    def copies(self) -> int:
        """Accepted requests beyond the first of each event id (at-least-once copies)."""
        ok = [r for r in self.requests if r.status == 200 and r.signature_ok]
        return len(ok) - len(self.accepted())

    async def wait_accepted(self, n: int) -> list[dict[str, Any]]:
        while len(self.accepted()) < n:
            await self._changed.wait()
        return self.accepted()

    async def wait_requests(self, n: int) -> list[ShopRequest]:
        while len(self.requests) < n:
            await self._changed.wait()
        return self.requests

    def _record(self, request: ShopRequest) -> None:
        self.requests.append(request)
        self._changed.set()
        self._changed = trio.Event()

    # ---- serving -----------------------------------------------------------------------------
    def answer(self, path: str, raw: bytes, signature: str | None) -> int | None:
        ok = signature is not None and verify(self.secret, signature, raw, now=time.time())
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        if self._hang > 0:
            self._hang -= 1
            status: int | None = None
        elif self._always is not None:
            status = self._always
        elif self._fail:
            status = self._fail.pop(0)
        else:
            status = 200 if ok else 401
        self._record(ShopRequest(time.monotonic(), path, raw, signature, ok, status, event))
        return status


async def _serve(shop: FakeShop, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        request = await _next_event(conn, stream)
        if not isinstance(request, h11.Request):
            return
        raw = bytearray()
        while not isinstance(event := await _next_event(conn, stream), h11.EndOfMessage):
            if not isinstance(event, h11.Data) or len(raw) > _READ_LIMIT:
                return
            raw += event.data
        wanted = SIGNATURE_HEADER.lower().encode()
        signature = next((v.decode("latin-1") for k, v in request.headers if k == wanted), None)
        status = shop.answer(request.target.decode("latin-1"), bytes(raw), signature)
        if status is None:
            await trio.sleep_forever()  # hang until botd gives up and closes
        reply: _Reply = _json_reply(status, {"ok": status == 200})
        await _send_reply(conn, stream, reply)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


@asynccontextmanager
async def open_fake_shop(secret: str) -> AsyncIterator[FakeShop]:
    """Run a fake shop receiver on loopback; ``shop.url`` is its webhook URL."""
    shop = FakeShop(secret=secret)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _serve(shop, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        shop.url = f"http://127.0.0.1:{port}/hooks/botd"
        try:
            yield shop
        finally:
            nursery.cancel_scope.cancel()
