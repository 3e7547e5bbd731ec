"""A fake Chat2Desk API server for tests, benchmarks and chaos runs.

It speaks real HTTP/1.1 (h11 over ``trio.serve_tcp``, keep-alive) on loopback and implements the
one call botd makes, ``POST /v1/messages``, with the shapes documented in
``/work/shared/chat2desk-api.md``. Every call is recorded; faults (5xx, 429, slow or hung replies,
permanent 4xx, an enforced sliding-window rate limit) can be switched at any time, in-process
through :class:`FakeChat2Desk` methods or, when run as a separate process
(``python -m botd.testing.fake_chat2desk``), through JSON control endpoints under ``/_fake/``:

- ``GET  /_fake/requests`` — every recorded ``/v1/messages`` request, plus ``limit_violations``;
- ``GET  /_fake/statistics`` — counters and the current fault settings;
- ``POST /_fake/faults`` — ``{"fault": "<method name>", ...keyword arguments}`` or a list of them;
  names: ``fail_next``, ``set_down``, ``set_up``, ``rate_limit_next``, ``set_delay``,
  ``hang_next``, ``reject_next``, ``enforce_rate_limit``, ``clear_faults``;
- ``POST /_fake/reset`` — forget recorded requests and clear every fault;
- ``GET  /_fake/wait_for_deliveries?n=N&timeout_seconds=S`` — long-poll; 200 once N messages
  were delivered, 408 on timeout.

Time is ``trio.current_time()``, so delays and the rate-limit window follow a ``MockClock``.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import h11
import trio

__all__ = [
    "FakeChat2Desk",
    "FakeChat2DeskStatistics",
    "RecordedRequest",
    "main",
    "open_fake_chat2desk",
    "serve_fake_chat2desk",
]

AUTH_MESSAGE = "You need to auth"
RATE_LIMIT_MESSAGE = "Number of API requests exceeded"
NOT_FOUND_MESSAGE = "Page not found"
VALIDATION_MESSAGE = "Validation failed"
MESSAGE_TYPES = frozenset({"to_client", "autoreply", "system", "comment"})
RATE_WINDOW_SECONDS = 60.0
FIRST_MESSAGE_ID = 106773577
TEST_TOKEN = "test-token"  # noqa: S105 - the fake's default, not a secret

_JSON = "application/json; charset=utf-8"
_MAX_BODY_BYTES = 1 << 20
_READ_BYTES = 65536
_REASONS = {s.value: s.phrase for s in HTTPStatus}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request to ``/v1/messages`` and how the fake answered it."""

    seq: int  # arrival order, from 1
    at: float  # trio.current_time() at arrival (follows a MockClock)
    monotonic: float  # time.monotonic() at arrival (wall clock)
    method: str
    path: str
    authorization: str | None
    body: Any  # the parsed JSON body, or None when it was not JSON
    raw_body: bytes
    status: int | None  # HTTP status answered; None when the request was left hanging
    delivered: bool  # answered 200 with {"status": "success"}: the message counts as sent

    @property
    def client_id(self) -> str | None:
        """The body's ``client_id`` as a string (it may arrive as int or str), if any."""
        if isinstance(self.body, dict):
            value = self.body.get("client_id")
            if isinstance(value, int | str) and not isinstance(value, bool):
                return str(value)
        return None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["raw_body"] = self.raw_body.decode("utf-8", "replace")
        return data


@dataclass(frozen=True, slots=True)
class FakeChat2DeskStatistics:
    requests: int
    delivered: int
    limit_violations: int
    pending_faults: int
    down_status: int | None
    delay_seconds: float
    rate_limit_per_minute: int | None


@dataclass(frozen=True, slots=True)
class _Reply:
    """What to answer: ``status is None`` means never answer (hang)."""

    status: int | None
    body: bytes = b""
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: Literal["reply", "hang"]
    reply: _Reply


@dataclass
class _Limiter:
    per_minute: int
    key: Literal["token", "client_id"]
    windows: dict[str, deque[float]] = field(default_factory=dict)


def _json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), _JSON, headers)


def _error_reply(status: int, message: str, **extra: object) -> _Reply:
    return _json_reply(status, {"status": "error", "message": message, **extra})


def _rate_limited_reply(status: int, retry_after: float | None) -> _Reply:
    headers = () if retry_after is None else (("retry-after", f"{retry_after:g}"),)
    return _json_reply(status, {"status": "error", "message": RATE_LIMIT_MESSAGE}, headers)


def _positive(name: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {n!r}")
    return n


def _validation_errors(body: Any) -> dict[str, list[str]]:
    if not isinstance(body, dict):
        return {"client_id": ["is invalid"]}
    errors: dict[str, list[str]] = {}
    client_id = body.get("client_id")
    valid_id = (isinstance(client_id, int) and not isinstance(client_id, bool)) or (
        isinstance(client_id, str) and client_id.strip().isdigit()
    )
    if not valid_id:
        errors["client_id"] = ["is invalid"]
    text = body.get("text")
    if not (isinstance(text, str) and text.strip()) and not (
        body.get("attachment") or body.get("pdf")
    ):
        errors["text"] = ["can't be blank"]
    if body.get("type", "to_client") not in MESSAGE_TYPES:
        errors["type"] = ["is not included in the list"]
    return errors


class FakeChat2Desk:
    """State, faults and recordings of one fake Chat2Desk account; served by
    :func:`serve_fake_chat2desk`. All fault switches take effect for the next request."""

    def __init__(self, *, token: str = TEST_TOKEN) -> None:
        self.token = token
        self._base_url: str | None = None
        self._records: list[RecordedRequest] = []
        self._seq = 0
        self._next_message_id = FIRST_MESSAGE_ID
        self._dialogs: dict[str, int] = {}
        self._faults: deque[_Fault] = deque()
        self._down: _Reply | None = None
        self._down_status: int | None = None
        self._delay_seconds = 0.0
        self._limiter: _Limiter | None = None
        self.limit_violations = 0
        self._changed = trio.Event()
        # Called with every RecordedRequest as it is recorded (benchmarks watch per customer).
        self.on_record: Callable[[RecordedRequest], None] | None = None

    # -- where it listens --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``; only known once the server listens."""
        if self._base_url is None:
            raise RuntimeError("the fake is not listening yet; start serve_fake_chat2desk first")
        return self._base_url

    # -- recordings --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every recorded ``/v1/messages`` request, in arrival order."""
        return sorted(self._records, key=lambda r: r.seq)

    def requests_for(self, client_id: int | str) -> list[RecordedRequest]:
        """Recorded requests whose body names ``client_id`` (int and str compare equal)."""
        wanted = str(client_id)
        return [r for r in self.requests if r.client_id == wanted]

    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the requests answered 200 success, in arrival order."""
        return [r.body for r in self.requests if r.delivered]

    def texts_for(self, client_id: int | str) -> list[str]:
        """Texts delivered (200 success) to ``client_id``, in arrival order."""
        return [str(r.body.get("text")) for r in self.requests_for(client_id) if r.delivered]

    async def wait_for_deliveries(self, n: int) -> list[dict[str, Any]]:
        """Wait until at least ``n`` messages were delivered; return all delivered bodies."""
        while sum(r.delivered for r in self._records) < n:
            await self._changed.wait()
        return self.delivered()

    async def wait_for_requests(self, n: int) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests were recorded (any answer, hung ones included)."""
        while len(self._records) < n:
            await self._changed.wait()
        return self.requests

    def statistics(self) -> FakeChat2DeskStatistics:
        return FakeChat2DeskStatistics(
            requests=len(self._records),
            delivered=sum(r.delivered for r in self._records),
            limit_violations=self.limit_violations,
            pending_faults=len(self._faults),
            down_status=self._down_status,
            delay_seconds=self._delay_seconds,
            rate_limit_per_minute=None if self._limiter is None else self._limiter.per_minute,
        )

    # -- fault switches ----------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        body: str = "<html>Bad gateway</html>",
        content_type: str = "text/html",
    ) -> None:
        """The next ``n`` requests get ``status`` with this (possibly non-JSON) body."""
        reply = _Reply(status, body.encode(), content_type)
        self._faults.extend(_Fault("reply", reply) for _ in range(_positive("n", n)))

    def rate_limit_next(
        self,
        n: int = 1,
        *,
        retry_after: float | None = 2,
        status: int = 429,
        exceeded_with_200: bool = False,
    ) -> None:
        """The next ``n`` requests get ``{"status":"error","message":"Number of API requests
        exceeded"}`` with ``Retry-After`` (unless None); with HTTP 200 if ``exceeded_with_200``."""
        reply = _rate_limited_reply(200 if exceeded_with_200 else status, retry_after)
        self._faults.extend(_Fault("reply", reply) for _ in range(_positive("n", n)))

    def reject_next(self, n: int = 1, *, status: int = 400, message: str | None = None) -> None:
        """The next ``n`` requests get a permanent error ``{"status":"error","message":...}``."""
        if message is None:
            message = {401: AUTH_MESSAGE, 404: NOT_FOUND_MESSAGE}.get(status, VALIDATION_MESSAGE)
        reply = _error_reply(status, message)
        self._faults.extend(_Fault("reply", reply) for _ in range(_positive("n", n)))

    def hang_next(self, n: int = 1) -> None:
        """The next ``n`` requests are read and never answered (until the server closes)."""
        self._faults.extend(_Fault("hang", _Reply(None)) for _ in range(_positive("n", n)))

    def set_down(
        self,
        status: int = 503,
        *,
        body: str = "<html>Service unavailable</html>",
        content_type: str = "text/html",
    ) -> None:
        """Every request fails with ``status`` until :meth:`set_up`."""
        self._down = _Reply(status, body.encode(), content_type)
        self._down_status = status

    def set_up(self) -> None:
        self._down = None
        self._down_status = None

    def set_delay(self, seconds: float) -> None:
        """Sleep ``seconds`` (``trio.sleep``) before every answer; 0 turns it off."""
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self._delay_seconds = float(seconds)

    def enforce_rate_limit(
        self, per_minute: int | None, *, key: Literal["token", "client_id"] = "token"
    ) -> None:
        """Answer 429 (and count a limit violation) to a request when ``per_minute`` requests
        with the same token (or ``client_id``) already arrived in the last 60 s. Every request
        counts, answered or not. ``None`` turns the limit off."""
        if per_minute is None:
            self._limiter = None
            return
        if key not in ("token", "client_id"):
            raise ValueError(f"key must be 'token' or 'client_id', got {key!r}")
        self._limiter = _Limiter(_positive("per_minute", per_minute), key)

    def clear_faults(self) -> None:
        """Drop pending one-shot faults, the outage, the delay and the rate limit."""
        self._faults.clear()
        self.set_up()
        self._delay_seconds = 0.0
        self._limiter = None

    def reset(self) -> None:
        """Clear faults and forget recordings; message ids keep increasing."""
        self.clear_faults()
        self._records.clear()
        self._seq = 0
        self.limit_violations = 0
        self._notify()

    # -- answering ---------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _over_limit(self, now: float, authorization: str | None, body: Any) -> float | None:
        """Count the request in its window; return the Retry-After if it breaks the limit."""
        limiter = self._limiter
        if limiter is None:
            return None
        if limiter.key == "token":
            key = authorization or ""
        else:
            client_id = body.get("client_id") if isinstance(body, dict) else None
            key = str(client_id)
        window = limiter.windows.setdefault(key, deque())
        while window and window[0] <= now - RATE_WINDOW_SECONDS:
            window.popleft()
        over = len(window) >= limiter.per_minute
        window.append(now)
        if not over:
            return None
        self.limit_violations += 1
        oldest = window[-1 - limiter.per_minute]
        return float(max(1, math.ceil(oldest + RATE_WINDOW_SECONDS - now)))

    def _decide(self, authorization: str | None, body: Any, now: float) -> tuple[_Fault, bool]:
        """Choose the answer for one ``/v1/messages`` request; True when it is a delivery."""
        retry_after = self._over_limit(now, authorization, body)
        if self._down is not None:
            return _Fault("reply", self._down), False
        if self._faults:
            return self._faults.popleft(), False
        if authorization != self.token:
            return _Fault("reply", _error_reply(401, AUTH_MESSAGE)), False
        if retry_after is not None:
            return _Fault("reply", _rate_limited_reply(429, retry_after)), False
        errors = _validation_errors(body)
        if errors:
            return _Fault("reply", _error_reply(400, VALIDATION_MESSAGE, errors=errors)), False
        return _Fault("reply", self._deliver(body)), True

    def _deliver(self, body: dict[str, Any]) -> _Reply:
        client_id = body["client_id"]
        dialog_id = self._dialogs.setdefault(str(client_id), 4324035 + len(self._dialogs))
        message_id = self._next_message_id
        self._next_message_id += 1
        data = {
            "message_id": message_id,
            "channel_id": body.get("channel_id", 17),
            "operator_id": body.get("operator_id", 41164),
            "transport": body.get("transport", "telegram"),
            "type": body.get("type", "to_client"),
            "client_id": client_id,
            "dialog_id": dialog_id,
            "request_id": dialog_id + 4401060,
        }
        return _json_reply(200, {"status": "success", "data": data})

    async def answer_messages(
        self, method: str, path: str, authorization: str | None, raw: bytes
    ) -> _Reply:
        """Answer one request to ``/v1/messages``; record it when the answer is sent."""
        self._seq += 1
        seq, now, wall = self._seq, trio.current_time(), time.monotonic()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if method != "POST":
            fault, delivered = _Fault("reply", _error_reply(404, NOT_FOUND_MESSAGE)), False
        else:
            fault, delivered = self._decide(authorization, body, now)

        def record(status: int | None) -> None:
            recorded = RecordedRequest(
                seq, now, wall, method, path, authorization, body, raw, status, delivered
            )
            self._records.append(recorded)
            if self.on_record is not None:
                self.on_record(recorded)
            self._notify()

        if fault.kind == "hang":
            record(None)
            return fault.reply
        if self._delay_seconds > 0:
            await trio.sleep(self._delay_seconds)
        record(fault.reply.status)
        return fault.reply

    # -- control API ---------------------------------------------------------------------------

    def _switches(self) -> dict[str, Callable[..., None]]:
        return {
            "fail_next": self.fail_next,
            "set_down": self.set_down,
            "set_up": self.set_up,
            "rate_limit_next": self.rate_limit_next,
            "set_delay": self.set_delay,
            "hang_next": self.hang_next,
            "reject_next": self.reject_next,
            "enforce_rate_limit": self.enforce_rate_limit,
            "clear_faults": self.clear_faults,
        }

    def apply_faults(self, spec: Any) -> None:
        """Apply ``{"fault": name, **kwargs}`` or a list of them (the control API's body)."""
        specs = spec if isinstance(spec, list) else [spec]
        switches = self._switches()
        for one in specs:
            if not isinstance(one, dict) or one.get("fault") not in switches:
                raise ValueError(
                    f"expected {{'fault': one of {sorted(switches)}, ...}}, got {one!r}"
                )
            kwargs = {k: v for k, v in one.items() if k != "fault"}
            try:
                switches[one["fault"]](**kwargs)
            except TypeError as exc:
                raise ValueError(f"{one['fault']}: {exc}") from None

    async def answer_control(self, method: str, target: str, raw: bytes) -> _Reply:
        url = urlsplit(target)
        route = (method, url.path)
        if route == ("GET", "/_fake/requests"):
            return _json_reply(
                200,
                {
                    "requests": [r.to_json() for r in self.requests],
                    "limit_violations": self.limit_violations,
                },
            )
        if route == ("GET", "/_fake/statistics"):
            return _json_reply(200, asdict(self.statistics()))
        if route == ("POST", "/_fake/reset"):
            self.reset()
            return _json_reply(200, {"status": "success"})
        if route == ("POST", "/_fake/faults"):
            try:
                self.apply_faults(json.loads(raw))
            except ValueError as exc:
                return _error_reply(400, str(exc))
            return _json_reply(200, {"status": "success", "statistics": asdict(self.statistics())})
        if route == ("GET", "/_fake/wait_for_deliveries"):
            query = parse_qs(url.query)
            try:
                n = int(query.get("n", ["1"])[0])
                timeout = float(query.get("timeout_seconds", ["10"])[0])
            except ValueError as exc:
                return _error_reply(400, str(exc))
            with trio.move_on_after(timeout):
                await self.wait_for_deliveries(n)
                return _json_reply(200, {"status": "success", "delivered": self.delivered()})
            return _error_reply(408, f"fewer than {n} deliveries after {timeout:g} s")
        return _error_reply(404, NOT_FOUND_MESSAGE)

    async def answer(
        self, method: str, target: str, authorization: str | None, raw: bytes
    ) -> _Reply:
        path = urlsplit(target).path
        if path in ("/v1/messages", "/v1/messages/"):
            return await self.answer_messages(method, path, authorization, raw)
        if path.startswith("/_fake/"):
            return await self.answer_control(method, target, raw)
        return _error_reply(404, NOT_FOUND_MESSAGE)


# -- HTTP/1.1 over trio ----------------------------------------------------------------------


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(_READ_BYTES)))


async def _send_reply(conn: h11.Connection, stream: trio.abc.Stream, reply: _Reply) -> None:
    assert reply.status is not None
    headers = [
        ("content-type", reply.content_type),
        ("content-length", str(len(reply.body))),
        *reply.headers,
    ]
    reason = _REASONS.get(reply.status, "")
    data = conn.send(h11.Response(status_code=reply.status, headers=headers, reason=reason))
    assert data is not None
    data += conn.send(h11.Data(data=reply.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def _wait_for_eof(stream: trio.abc.Stream) -> None:
    while await stream.receive_some(_READ_BYTES):
        pass


async def _serve_connection(fake: FakeChat2Desk, stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        request = await _next_event(conn, stream)
        if not isinstance(request, h11.Request):
            return  # ConnectionClosed: the client is gone
        raw = bytearray()
        while not isinstance(event := await _next_event(conn, stream), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                return
            raw += event.data
            if len(raw) > _MAX_BODY_BYTES:
                await _send_reply(conn, stream, _error_reply(413, "Request body too large"))
                return
        authorization = next(
            (v.decode("latin-1") for k, v in request.headers if k == b"authorization"), None
        )
        method, target = request.method.decode("ascii"), request.target.decode("latin-1")
        reply = await fake.answer(method, target, authorization, bytes(raw))
        if reply.status is None:
            await _wait_for_eof(stream)
            return
        await _send_reply(conn, stream, reply)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return  # h11 decided the connection must close (e.g. "Connection: close")
        conn.start_next_cycle()


async def serve_fake_chat2desk(
    fake: FakeChat2Desk,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``fake`` on ``host:port`` until cancelled; ``started()`` with the base URL."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(fake, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return  # the client went away or spoke broken HTTP: its connection ends here

    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    shown_host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    fake._base_url = f"http://{shown_host}:{sockname[1]}/v1"
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(fake.base_url)


@asynccontextmanager
async def open_fake_chat2desk(
    *, token: str = TEST_TOKEN, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeChat2Desk]:
    """Run a fake Chat2Desk on loopback for the duration of the block."""
    fake = FakeChat2Desk(token=token)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_fake_chat2desk, fake, host, port)
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()


# -- separate-process mode -------------------------------------------------------------------


async def _run_cli(host: str, port: int, token: str) -> None:
    fake = FakeChat2Desk(token=token)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            base_url = await nursery.start(serve_fake_chat2desk, fake, host, port)
            print(f"listening {base_url}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m botd.testing.fake_chat2desk", description="Fake Chat2Desk API server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=TEST_TOKEN, help="the accepted Authorization value")
    args = parser.parse_args(argv)
    trio.run(_run_cli, args.host, args.port, args.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
