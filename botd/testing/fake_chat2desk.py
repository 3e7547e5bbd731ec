"""A fake Chat2Desk API server for tests, benchmarks and chaos runs.

It speaks real HTTP/1.1 (h11 over ``trio.serve_tcp``, keep-alive) on loopback and implements the
calls botd makes, with the shapes documented in ``/work/shared/chat2desk-api.md``:

- ``POST /v1/messages`` — send; a delivered message is stored and answered
  ``{"status":"success","data":{"message_id":…,…}}``;
- ``GET /v1/messages?client_id=&type=&limit=&offset=`` — the stored messages, oldest first, with
  ``meta: {total, limit, offset}`` (limit default 20, clamped to 200);
- ``POST /v1/tags/assign_to`` — ``{"tag_ids": [int], "assignee_type": "request"|"client",
  "assignee_id": int}``; answered ``{"status":"success"}`` and kept in
  :attr:`FakeChat2Desk.tag_assignments`; a malformed body gets 400 "Validation failed", a tag id
  outside 1..MAX_TAG_ID 400 "Tag not found" (an id the account does not have).

Stored messages are ``{id, text, type, client_id, external_id, transport, channel_id, created}``.
With :meth:`FakeChat2Desk.echo_to` every delivered message is also POSTed to the bot's webhook as
an ``outbox`` event (as Chat2Desk does for every message sent to a client, the bot's own
included); :meth:`FakeChat2Desk.operator_says` stores and echoes a message from a human operator.

Every ``/v1/messages`` call is recorded (tag calls apart, :attr:`FakeChat2Desk.tag_requests`).
Faults can be switched at any time, in-process through
:class:`FakeChat2Desk` methods or, when run as a separate process
(``python -m botd.testing.fake_chat2desk``), through ``POST /_fake/faults`` with the same names
and keyword arguments:

- one-shot, for the next POSTs, queued in order: ``fail_next`` (non-JSON 5xx, not delivered),
  ``rate_limit_next`` (429 or 200 with "Number of API requests exceeded"), ``reject_next``
  (permanent ``{"status":"error"}``, HTTP 200 too), ``hang_next`` (never answered),
  ``accept_slowly_next`` (delivered, answered 200 only after ``seconds``),
  ``accept_then_fail_next`` (delivered, answered with an HTML 502);
- one-shot, for the next GETs only: ``lookup_fail_next``; for the next tag calls only:
  ``tag_fail_next`` (the others apply to ``/v1/messages`` only);
- persistent: ``set_down``/``set_up`` (every request fails), ``set_delay`` (every answer late),
  ``set_accept_slowly`` (every delivery answered late), ``enforce_rate_limit`` (sliding window,
  POSTs, GETs and tag calls count), ``set_token`` (rotate the accepted token; others get "You
  need to auth" with 401, 403 or 200);
- ``clear_faults`` (all of the above off, the original token back);
- ``echo_to`` (where outbox echoes go, optionally before the send's answer, HMAC-signed).

Other control endpoints under ``/_fake/``:

- ``GET  /_fake/requests`` — every recorded ``/v1/messages`` request, plus ``limit_violations``
  and ``tag_assignments``;
- ``GET  /_fake/statistics`` — counters and the current fault settings;
- ``GET  /_fake/messages[?client_id=N]`` — ``{"messages": [stored…], "duplicates": [[external_id,
  count], …]}``;
- ``POST /_fake/operator_says`` — ``{"client_id": N, "text": "…"}``: store and echo (awaited) an
  operator's message; answers ``{"status":"success","message_id":…}``;
- ``POST /_fake/reset`` — forget recorded requests and stored messages, clear every fault;
- ``GET  /_fake/wait_for_deliveries?n=N&timeout_seconds=S`` — long-poll; 200 once N messages
  were delivered, 408 on timeout.

Time is ``trio.current_time()``, so delays, slow accepts and the rate-limit window follow a
``MockClock`` (echo POSTs are real HTTP: under an autojumping clock give ``echo_to`` a
``timeout_seconds=None``). ``created``/``event_time`` are wall-clock UTC from ``time.time()``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import h11
import httpx
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
CUSTOMER_VISIBLE_TYPES = frozenset({"to_client", "autoreply"})
RATE_WINDOW_SECONDS = 60.0
FIRST_MESSAGE_ID = 106773577
DEFAULT_OPERATOR_ID = 41164
DEFAULT_TRANSPORT = "telegram"
DEFAULT_CHANNEL_ID = 17
LOOKUP_DEFAULT_LIMIT = 20
LOOKUP_MAX_LIMIT = 200
ECHO_ATTEMPTS = 4  # the first POST plus 3 retries
ECHO_BACKOFF_SECONDS = 0.05  # doubled after every failed attempt
TEST_TOKEN = "test-token"  # noqa: S105 - the fake's default, not a secret
TAG_NOT_FOUND_MESSAGE = "Tag not found"
ASSIGNEE_TYPES = frozenset({"request", "client"})
FIRST_DIALOG_ID = 4324035
REQUEST_ID_OFFSET = 4401060  # a client's request id is its dialog id plus this
MAX_TAG_ID = 10_000  # the account's tags are 1..MAX_TAG_ID: a larger id is an unknown tag

_JSON = "application/json; charset=utf-8"
_MAX_BODY_BYTES = 1 << 20
_READ_BYTES = 65536
_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _external_id(body: Any) -> str | None:
    """The body's ``external_id`` as a string (an int is accepted), else None."""
    if isinstance(body, dict):
        value = body.get("external_id")
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _utc_iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request to ``/v1/messages`` (or ``/v1/tags/assign_to``) and how the fake answered
    it; for a tag call ``delivered`` means the tag was assigned."""

    seq: int  # arrival order, from 1
    at: float  # trio.current_time() at arrival (follows a MockClock)
    monotonic: float  # time.monotonic() at arrival (wall clock)
    method: str  # "POST" (send) or "GET" (lookup; body None)
    path: str  # the path only; the query string is in ``query``
    authorization: str | None
    body: Any  # the parsed JSON body, or None when it was not JSON (always None for a GET)
    raw_body: bytes
    status: int | None  # HTTP status answered; None when the request was left hanging
    # The message reached the client (and is stored): answered 200 success, or accepted by an
    # accept fault whose answer was late (accept_slowly) or an error (accept_then_fail).
    delivered: bool
    query: str = ""  # the raw query string ("" when none)

    @property
    def client_id(self) -> str | None:
        """The body's ``client_id`` as a string (it may arrive as int or str), if any."""
        if isinstance(self.body, dict):
            value = self.body.get("client_id")
            if isinstance(value, int | str) and not isinstance(value, bool):
                return str(value)
        return None

    @property
    def external_id(self) -> str | None:
        """The body's ``external_id`` (a string; an int is shown as one), if any."""
        return _external_id(self.body)

    @property
    def message_type(self) -> str | None:
        """The send's ``type`` (``to_client`` when absent); None for a lookup."""
        if not isinstance(self.body, dict):
            return None
        return str(self.body.get("type", "to_client"))

    @property
    def visible(self) -> bool:
        """A send the customer sees (not an internal ``comment`` or a ``system`` message)."""
        return self.message_type in CUSTOMER_VISIBLE_TYPES

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
    pending_lookup_faults: int
    accept_slowly_seconds: float  # 0.0 when off
    stored_messages: int
    echo_url: str | None
    echoes_posted: int  # echo POSTs answered 2xx
    echo_failures: int  # echoes given up after ECHO_ATTEMPTS tries
    last_echo_error: str | None
    tag_assignments: int = 0  # tag calls answered success
    pending_tag_faults: int = 0


@dataclass(frozen=True, slots=True)
class _Reply:
    """What to answer: ``status is None`` means never answer (hang). ``after`` is called once the
    answer was sent (or sending it failed)."""

    status: int | None
    body: bytes = b""
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()
    after: Callable[[], None] | None = field(default=None, compare=False)


_Kind = Literal["reply", "hang", "deliver", "accept_slowly", "accept_then_fail", "lookup"]
_DELIVERY_KINDS = frozenset({"deliver", "accept_slowly", "accept_then_fail"})
_ACCEPT_KINDS = frozenset({"accept_slowly", "accept_then_fail"})


@dataclass(frozen=True, slots=True)
class _Fault:
    """A queued fault or the decided outcome of one request."""

    kind: _Kind
    reply: _Reply | None = None  # "reply": the answer; "accept_then_fail": the bad answer
    seconds: float = 0.0  # "accept_slowly": how long to wait before answering


_DELIVER = _Fault("deliver")
_LOOKUP = _Fault("lookup")


@dataclass
class _Limiter:
    per_minute: int
    key: Literal["token", "client_id"]
    windows: dict[str, deque[float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Echo:
    url: str
    before_answer: bool
    hmac_secret: str
    hmac_header: str
    timeout_seconds: float | None


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


def _seconds(name: str, seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {seconds!r}")
    return float(seconds)


def _http_status(name: str, status: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError(f"{name} must be an HTTP status 200..599, got {status!r}")
    return status


def _valid_client_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.strip().isdigit()
    )


def _validation_errors(body: Any) -> dict[str, list[str]]:
    if not isinstance(body, dict):
        return {"client_id": ["is invalid"]}
    errors: dict[str, list[str]] = {}
    if not _valid_client_id(body.get("client_id")):
        errors["client_id"] = ["is invalid"]
    text = body.get("text")
    if not (isinstance(text, str) and text.strip()) and not (
        body.get("attachment") or body.get("pdf")
    ):
        errors["text"] = ["can't be blank"]
    if body.get("type", "to_client") not in MESSAGE_TYPES:
        errors["type"] = ["is not included in the list"]
    return errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tag_validation_errors(body: Any) -> dict[str, list[str]]:
    if not isinstance(body, dict):
        return {"tag_ids": ["is invalid"]}
    errors: dict[str, list[str]] = {}
    tag_ids = body.get("tag_ids")
    if not (isinstance(tag_ids, list) and tag_ids and all(_is_int(t) for t in tag_ids)):
        errors["tag_ids"] = ["is invalid"]
    if body.get("assignee_type") not in ASSIGNEE_TYPES:
        errors["assignee_type"] = ["is not included in the list"]
    if not _is_int(body.get("assignee_id")):
        errors["assignee_id"] = ["is invalid"]
    return errors


class _BadQuery(ValueError):
    pass


def _query_int(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    try:
        value = int(values[-1])
    except ValueError:
        raise _BadQuery(name) from None
    if value < 0:
        raise _BadQuery(name)
    return value


class FakeChat2Desk:
    """State, faults and recordings of one fake Chat2Desk account; served by
    :func:`serve_fake_chat2desk`. All fault switches take effect for the next request."""

    def __init__(self, *, token: str = TEST_TOKEN) -> None:
        self.token = token
        self._initial_token = token
        self._auth_status = 401
        self._base_url: str | None = None
        self._records: list[RecordedRequest] = []
        self._messages: list[dict[str, Any]] = []
        self._seq = 0
        self._next_message_id = FIRST_MESSAGE_ID
        self._dialogs: dict[str, int] = {}
        self._faults: deque[_Fault] = deque()
        self._lookup_faults: deque[_Fault] = deque()
        self._tag_faults: deque[_Fault] = deque()
        self._tag_records: list[RecordedRequest] = []
        self._tag_assignments: list[dict[str, Any]] = []
        self._down: _Reply | None = None
        self._down_status: int | None = None
        self._delay_seconds = 0.0
        self._accept_slowly_seconds = 0.0
        self._limiter: _Limiter | None = None
        self._echo: _Echo | None = None
        # The serving nursery and its HTTP client for echoes (set by serve_fake_chat2desk).
        self._echo_client: httpx.AsyncClient | None = None
        self._echo_nursery: trio.Nursery | None = None
        self.limit_violations = 0
        self.echoes_posted = 0
        self.echo_failures = 0
        self.last_echo_error: str | None = None
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
        """Every recorded ``/v1/messages`` request (POSTs and GETs), in arrival order."""
        return sorted(self._records, key=lambda r: r.seq)

    @property
    def tag_requests(self) -> list[RecordedRequest]:
        """Every recorded ``/v1/tags/assign_to`` request, in arrival order."""
        return list(self._tag_records)

    @property
    def tag_assignments(self) -> list[dict[str, Any]]:
        """Bodies of the tag calls answered success (``{tag_ids, assignee_type, assignee_id}``),
        in arrival order; copies."""
        return [dict(a) for a in self._tag_assignments]

    def request_id_for(self, client_id: int | str) -> int | None:
        """The ``request_id`` the sends to ``client_id`` are answered with (one request per
        client: the fake never closes one); None before the client's first send."""
        dialog_id = self._dialogs.get(str(client_id))
        return None if dialog_id is None else dialog_id + REQUEST_ID_OFFSET

    def requests_for(self, client_id: int | str) -> list[RecordedRequest]:
        """Recorded sends whose body names ``client_id`` (int and str compare equal); lookups
        (GETs, no body) are not included."""
        wanted = str(client_id)
        return [r for r in self.requests if r.client_id == wanted]

    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the sends that reached the client, in arrival order (answered 200 success,
        or accepted with a late or bad answer by an accept fault); internal notes (``comment``)
        are not among them (:meth:`notes_for`)."""
        return [r.body for r in self.requests if r.delivered and r.visible]

    def texts_for(self, client_id: int | str) -> list[str]:
        """Texts delivered to ``client_id`` by sends (see :meth:`delivered`), in arrival order;
        operator messages (:meth:`operator_says`) are only in :meth:`stored_messages`."""
        return [
            str(r.body.get("text"))
            for r in self.requests_for(client_id)
            if r.delivered and r.visible
        ]

    def notes_for(self, client_id: int | str) -> list[dict[str, Any]]:
        """Internal notes (``type: comment``) stored in ``client_id``'s dialog, oldest first."""
        return [m for m in self.stored_messages(client_id) if m["type"] == "comment"]

    def stored_messages(self, client_id: int | str | None = None) -> list[dict[str, Any]]:
        """Stored messages (sends delivered and operator messages), oldest first; copies."""
        wanted = None if client_id is None else str(client_id)
        return [dict(m) for m in self._messages if wanted is None or str(m["client_id"]) == wanted]

    def duplicate_deliveries(self) -> list[tuple[str, int]]:
        """``(external_id, count)`` for every external_id stored more than once, in order of
        first delivery; messages without an external_id are not counted."""
        counts = Counter(m["external_id"] for m in self._messages if m["external_id"] is not None)
        return [(external_id, n) for external_id, n in counts.items() if n > 1]

    async def wait_for_deliveries(self, n: int) -> list[dict[str, Any]]:
        """Wait until at least ``n`` messages were delivered; return all delivered bodies."""
        while sum(r.delivered and r.visible for r in self._records) < n:
            await self._changed.wait()
        return self.delivered()

    async def wait_for_requests(self, n: int) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests were recorded (any answer, hung ones included)."""
        while len(self._records) < n:
            await self._changed.wait()
        return self.requests

    async def wait_for_echoes(self, n: int) -> None:
        """Wait until at least ``n`` echoes were posted successfully or given up."""
        while self.echoes_posted + self.echo_failures < n:
            await self._changed.wait()

    def statistics(self) -> FakeChat2DeskStatistics:
        return FakeChat2DeskStatistics(
            requests=len(self._records),
            delivered=sum(r.delivered for r in self._records),
            limit_violations=self.limit_violations,
            pending_faults=len(self._faults),
            down_status=self._down_status,
            delay_seconds=self._delay_seconds,
            rate_limit_per_minute=None if self._limiter is None else self._limiter.per_minute,
            pending_lookup_faults=len(self._lookup_faults),
            accept_slowly_seconds=self._accept_slowly_seconds,
            stored_messages=len(self._messages),
            echo_url=None if self._echo is None else self._echo.url,
            echoes_posted=self.echoes_posted,
            echo_failures=self.echo_failures,
            last_echo_error=self.last_echo_error,
            tag_assignments=len(self._tag_assignments),
            pending_tag_faults=len(self._tag_faults),
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
        """The next ``n`` sends get ``status`` with this (possibly non-JSON) body."""
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
        """The next ``n`` sends get ``{"status":"error","message":"Number of API requests
        exceeded"}`` with ``Retry-After`` (unless None); with HTTP 200 if ``exceeded_with_200``."""
        reply = _rate_limited_reply(200 if exceeded_with_200 else status, retry_after)
        self._faults.extend(_Fault("reply", reply) for _ in range(_positive("n", n)))

    def reject_next(self, n: int = 1, *, status: int = 400, message: str | None = None) -> None:
        """The next ``n`` sends get a permanent error ``{"status":"error","message":...}`` with
        HTTP ``status`` (200 too: the real API answers some errors with HTTP 200)."""
        if message is None:
            message = {401: AUTH_MESSAGE, 403: AUTH_MESSAGE, 404: NOT_FOUND_MESSAGE}.get(
                status, VALIDATION_MESSAGE
            )
        reply = _error_reply(status, message)
        self._faults.extend(_Fault("reply", reply) for _ in range(_positive("n", n)))

    def hang_next(self, n: int = 1) -> None:
        """The next ``n`` sends are read and never answered (until the server closes)."""
        self._faults.extend(_Fault("hang") for _ in range(_positive("n", n)))

    def accept_slowly_next(self, n: int = 1, *, seconds: float) -> None:
        """The next ``n`` deliveries are stored (and echoed) at once but answered 200 success
        only ``seconds`` later (``trio.sleep``): a client with a shorter timeout never sees the
        id. Waits in the fault queue for a send that would be delivered."""
        fault = _Fault("accept_slowly", seconds=_seconds("seconds", seconds))
        self._faults.extend(fault for _ in range(_positive("n", n)))

    def accept_then_fail_next(
        self,
        n: int = 1,
        *,
        status: int = 502,
        body: str = "<html>Bad gateway</html>",
        content_type: str = "text/html",
    ) -> None:
        """The next ``n`` deliveries are stored (and echoed) but answered ``status`` with this
        body (a proxy error after the accept). Waits in the fault queue for a deliverable send."""
        reply = _Reply(_http_status("status", status), body.encode(), content_type)
        self._faults.extend(_Fault("accept_then_fail", reply) for _ in range(_positive("n", n)))

    def set_accept_slowly(self, seconds: float | None) -> None:
        """While set, every delivery is stored (and echoed) at once and answered 200 success
        ``seconds`` later; 0 or None turns it off."""
        self._accept_slowly_seconds = 0.0 if seconds is None else _seconds("seconds", seconds)

    def lookup_fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        body: str = "<html>Bad gateway</html>",
        content_type: str = "text/html",
    ) -> None:
        """The next ``n`` lookups (``GET /v1/messages``) get ``status`` with this body. The other
        one-shot faults apply to sends only."""
        reply = _Reply(status, body.encode(), content_type)
        self._lookup_faults.extend(_Fault("reply", reply) for _ in range(_positive("n", n)))

    def tag_fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        body: str = "<html>Bad gateway</html>",
        content_type: str = "text/html",
    ) -> None:
        """The next ``n`` tag calls (``POST /v1/tags/assign_to``) get ``status`` with this body
        and assign nothing."""
        reply = _Reply(_http_status("status", status), body.encode(), content_type)
        self._tag_faults.extend(_Fault("reply", reply) for _ in range(_positive("n", n)))

    def set_token(self, token: str, *, reject_status: int = 401) -> None:
        """Accept only ``token`` from now on; any other Authorization gets ``{"status":"error",
        "message":"You need to auth"}`` with HTTP ``reject_status`` (401, 403 or even 200)."""
        if not isinstance(token, str):
            raise ValueError(f"token must be a string, got {token!r}")
        self._auth_status = _http_status("reject_status", reject_status)
        self.token = token

    def set_down(
        self,
        status: int = 503,
        *,
        body: str = "<html>Service unavailable</html>",
        content_type: str = "text/html",
    ) -> None:
        """Every request (send, lookup or tag call) fails with ``status`` until :meth:`set_up`."""
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
        with the same token (or ``client_id``: the body's for sends, the query's for lookups,
        the assignee for tag calls) already arrived in the last 60 s. Every request counts,
        answered or not, lookups and tag calls too.
        ``None`` turns the limit off."""
        if per_minute is None:
            self._limiter = None
            return
        if key not in ("token", "client_id"):
            raise ValueError(f"key must be 'token' or 'client_id', got {key!r}")
        self._limiter = _Limiter(_positive("per_minute", per_minute), key)

    def echo_to(
        self,
        url: str | None,
        *,
        before_answer: bool = False,
        hmac_secret: str = "",
        hmac_header: str = "X-Chat2Desk-Signature",
        timeout_seconds: float | None = 10.0,
    ) -> None:
        """POST an ``outbox`` event to ``url`` for every delivered message (None turns it off).

        With ``before_answer`` the echo is posted and its answer awaited before the send is
        answered; otherwise it is posted in the background right after the answer. With an
        ``hmac_secret`` the hex HMAC-SHA256 of the raw body goes in ``hmac_header``. A failed
        POST (refused, non-2xx, ``timeout_seconds`` passed) is retried ECHO_ATTEMPTS - 1 times,
        then counted in ``echo_failures``. Not a fault: clear_faults and reset keep it."""
        if url is None:
            self._echo = None
            return
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL or None, got {url!r}")
        if timeout_seconds is not None:
            _seconds("timeout_seconds", timeout_seconds)
        self._echo = _Echo(url, bool(before_answer), hmac_secret, hmac_header, timeout_seconds)

    def clear_faults(self) -> None:
        """Drop pending one-shot faults, the outage, the delay, slow accepts, the rate limit and
        a rotated token (the token the fake was created with is accepted again)."""
        self._faults.clear()
        self._lookup_faults.clear()
        self._tag_faults.clear()
        self.set_up()
        self._delay_seconds = 0.0
        self._accept_slowly_seconds = 0.0
        self._limiter = None
        self.token = self._initial_token
        self._auth_status = 401

    def reset(self) -> None:
        """Clear faults, forget recordings, stored messages and counters; message ids keep
        increasing; the echo target stays."""
        self.clear_faults()
        self._records.clear()
        self._messages.clear()
        self._tag_records.clear()
        self._tag_assignments.clear()
        self._seq = 0
        self.limit_violations = 0
        self.echoes_posted = 0
        self.echo_failures = 0
        self.last_echo_error = None
        self._notify()

    # -- answering ---------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _over_limit(self, now: float, authorization: str | None, client_key: str) -> float | None:
        """Count the request in its window; return the Retry-After if it breaks the limit."""
        limiter = self._limiter
        if limiter is None:
            return None
        key = (authorization or "") if limiter.key == "token" else client_key
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

    def _auth_error(self) -> _Reply:
        return _error_reply(self._auth_status, AUTH_MESSAGE)

    def _decide(self, authorization: str | None, body: Any, now: float) -> _Fault:
        """Choose the outcome of one send (``POST /v1/messages``)."""
        client_id = body.get("client_id") if isinstance(body, dict) else None
        retry_after = self._over_limit(now, authorization, str(client_id))
        if self._down is not None:
            return _Fault("reply", self._down)
        if self._faults and self._faults[0].kind not in _ACCEPT_KINDS:
            return self._faults.popleft()
        if authorization != self.token:
            return _Fault("reply", self._auth_error())
        if retry_after is not None:
            return _Fault("reply", _rate_limited_reply(429, retry_after))
        errors = _validation_errors(body)
        if errors:
            return _Fault("reply", _error_reply(400, VALIDATION_MESSAGE, errors=errors))
        if self._faults:  # an accept fault waiting for a deliverable send
            return self._faults.popleft()
        if self._accept_slowly_seconds > 0:
            return _Fault("accept_slowly", seconds=self._accept_slowly_seconds)
        return _DELIVER

    def _decide_lookup(self, authorization: str | None, query: str, now: float) -> _Fault:
        """Choose the outcome of one lookup (``GET /v1/messages``)."""
        client_id = parse_qs(query).get("client_id", [None])[-1]
        retry_after = self._over_limit(now, authorization, str(client_id))
        if self._down is not None:
            return _Fault("reply", self._down)
        if self._lookup_faults:
            return self._lookup_faults.popleft()
        if authorization != self.token:
            return _Fault("reply", self._auth_error())
        if retry_after is not None:
            return _Fault("reply", _rate_limited_reply(429, retry_after))
        return _LOOKUP

    def _decide_tag(self, authorization: str | None, body: Any, now: float) -> _Reply:
        """Answer one tag call (``POST /v1/tags/assign_to``); assign the tag on success."""
        assignee = (
            f"{body.get('assignee_type')}:{body.get('assignee_id')}"
            if isinstance(body, dict)
            else "None"
        )
        retry_after = self._over_limit(now, authorization, assignee)
        if self._down is not None:
            return self._down
        if self._tag_faults:
            reply = self._tag_faults.popleft().reply
            assert reply is not None
            return reply
        if authorization != self.token:
            return self._auth_error()
        if retry_after is not None:
            return _rate_limited_reply(429, retry_after)
        errors = _tag_validation_errors(body)
        if errors:
            return _error_reply(400, VALIDATION_MESSAGE, errors=errors)
        if any(not 1 <= t <= MAX_TAG_ID for t in body["tag_ids"]):
            return _error_reply(400, TAG_NOT_FOUND_MESSAGE)
        self._tag_assignments.append(
            {
                "tag_ids": list(body["tag_ids"]),
                "assignee_type": body["assignee_type"],
                "assignee_id": body["assignee_id"],
            }
        )
        return _json_reply(200, {"status": "success"})

    async def answer_tags(
        self, method: str, path: str, authorization: str | None, raw: bytes
    ) -> _Reply:
        """Answer one request to ``/v1/tags/assign_to``; record it when the answer is decided."""
        now, wall = trio.current_time(), time.monotonic()
        body: Any = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        before = len(self._tag_assignments)
        if method == "POST":
            reply = self._decide_tag(authorization, body, now)
        else:
            reply = _error_reply(404, NOT_FOUND_MESSAGE)
        assigned = len(self._tag_assignments) > before
        seq = len(self._tag_records) + 1
        self._tag_records.append(
            RecordedRequest(
                seq, now, wall, method, path, authorization, body, raw, reply.status, assigned
            )
        )
        self._notify()
        if self._delay_seconds > 0:
            await trio.sleep(self._delay_seconds)
        return reply

    def _lookup(self, query_string: str) -> _Reply:
        query = parse_qs(query_string)
        try:
            client_id = _query_int(query, "client_id")
            limit = _query_int(query, "limit")
            offset = _query_int(query, "offset")
        except _BadQuery as exc:
            return _error_reply(400, VALIDATION_MESSAGE, errors={str(exc): ["is invalid"]})
        limit = LOOKUP_DEFAULT_LIMIT if limit is None else min(limit, LOOKUP_MAX_LIMIT)
        offset = offset or 0
        wanted_type = query.get("type", [None])[-1]
        matches = [
            m
            for m in self._messages
            if (client_id is None or m["client_id"] == client_id)
            and (wanted_type is None or m["type"] == wanted_type)
        ]
        return _json_reply(
            200,
            {
                "status": "success",
                "data": matches[offset : offset + limit],
                "meta": {"total": len(matches), "limit": limit, "offset": offset},
            },
        )

    def _store(
        self,
        client_id: int,
        text: Any,
        type_: str,
        external_id: str | None,
        transport: Any,
        channel_id: Any,
    ) -> dict[str, Any]:
        message = {
            "id": self._next_message_id,
            "text": text,
            "type": type_,
            "client_id": client_id,
            "external_id": external_id,
            "transport": transport,
            "channel_id": channel_id,
            "created": _utc_iso(time.time()),
        }
        self._next_message_id += 1
        self._messages.append(message)
        return message

    def _deliver(self, body: dict[str, Any]) -> tuple[dict[str, Any], _Reply]:
        """Store the message; return it and the 200 success answer."""
        client_id = body["client_id"]
        dialog_id = self._dialogs.setdefault(str(client_id), FIRST_DIALOG_ID + len(self._dialogs))
        operator_id = body.get("operator_id", DEFAULT_OPERATOR_ID)
        message = self._store(
            int(str(client_id).strip()),
            body.get("text"),
            body.get("type", "to_client"),
            _external_id(body),
            body.get("transport", DEFAULT_TRANSPORT),
            body.get("channel_id", DEFAULT_CHANNEL_ID),
        )
        data = {
            "message_id": message["id"],
            "channel_id": message["channel_id"],
            "operator_id": operator_id,
            "transport": message["transport"],
            "type": message["type"],
            "client_id": client_id,
            "dialog_id": dialog_id,
            "request_id": dialog_id + REQUEST_ID_OFFSET,
        }
        message_for_echo = {**message, "operator_id": operator_id}
        return message_for_echo, _json_reply(200, {"status": "success", "data": data})

    async def answer_messages(
        self, method: str, path: str, authorization: str | None, raw: bytes, query: str = ""
    ) -> _Reply:
        """Answer one request to ``/v1/messages``; record it when the answer is decided."""
        self._seq += 1
        seq, now, wall = self._seq, trio.current_time(), time.monotonic()
        body: Any = None
        if method != "GET":
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        if method == "GET":
            fault = self._decide_lookup(authorization, query, now)
        elif method == "POST":
            fault = self._decide(authorization, body, now)
        else:
            fault = _Fault("reply", _error_reply(404, NOT_FOUND_MESSAGE))
        delivered = fault.kind in _DELIVERY_KINDS

        def record(status: int | None) -> None:
            recorded = RecordedRequest(
                seq, now, wall, method, path, authorization, body, raw, status, delivered, query
            )
            self._records.append(recorded)
            if self.on_record is not None:
                self.on_record(recorded)
            self._notify()

        if fault.kind == "hang":
            record(None)
            return _Reply(None)
        if self._delay_seconds > 0:
            await trio.sleep(self._delay_seconds)
        if not delivered:
            reply = self._lookup(query) if fault.kind == "lookup" else fault.reply
            assert reply is not None
            record(reply.status)
            return reply
        message, reply = self._deliver(body)
        if fault.kind == "accept_then_fail":
            assert fault.reply is not None
            reply = fault.reply
        record(reply.status)
        echo = self._echo
        if echo is not None and echo.before_answer:
            await self._post_echo(echo, message)
        if fault.kind == "accept_slowly":
            await trio.sleep(fault.seconds)
        if echo is not None and not echo.before_answer:
            reply = replace(reply, after=partial(self._start_echo, echo, message))
        return reply

    # -- outbox echoes ---------------------------------------------------------------------------

    @staticmethod
    def _echo_payload(message: dict[str, Any]) -> dict[str, Any]:
        return {
            "hook_type": "outbox",
            "type": message["type"],
            "message_id": message["id"],
            "client_id": message["client_id"],
            "text": message["text"],
            "transport": message["transport"],
            "channel_id": message["channel_id"],
            "operator_id": message.get("operator_id", DEFAULT_OPERATOR_ID),
            "external_id": message["external_id"],
            "event_time": _utc_iso(time.time()),
        }

    def _start_echo(self, echo: _Echo, message: dict[str, Any]) -> None:
        """Post the echo in the server's nursery (never raises)."""
        if self._echo_nursery is None:
            self.echo_failures += 1
            self.last_echo_error = "the fake is not serving"
            self._notify()
            return
        self._echo_nursery.start_soon(self._post_echo, echo, message)

    async def _post_echo(self, echo: _Echo, message: dict[str, Any]) -> None:
        """POST the outbox event with retries; count it; never raises (but can be cancelled)."""
        raw = json.dumps(self._echo_payload(message)).encode()
        headers = {"content-type": "application/json"}
        if echo.hmac_secret:
            digest = hmac.new(echo.hmac_secret.encode(), raw, hashlib.sha256).hexdigest()
            headers[echo.hmac_header] = digest
        for attempt in range(ECHO_ATTEMPTS):
            if attempt:
                await trio.sleep(ECHO_BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                status = await self._post(echo, raw, headers)
            except Exception as exc:  # refused, reset, timeout, bad URL: retry
                self.last_echo_error = repr(exc)
                continue
            if 200 <= status < 300:
                self.echoes_posted += 1
                self._notify()
                return
            self.last_echo_error = f"HTTP {status}"
        self.echo_failures += 1
        self._notify()

    async def _post(self, echo: _Echo, raw: bytes, headers: dict[str, str]) -> int:
        if self._echo_client is not None:
            client = self._echo_client
            response = await client.post(
                echo.url, content=raw, headers=headers, timeout=echo.timeout_seconds
            )
            return response.status_code
        async with httpx.AsyncClient(trust_env=False) as client:  # not serving: a one-off client
            response = await client.post(
                echo.url, content=raw, headers=headers, timeout=echo.timeout_seconds
            )
            return response.status_code

    async def operator_says(self, client_id: int | str, text: str) -> int:
        """Store a message a human operator wrote in Chat2Desk (``to_client``, no external_id,
        the client's last transport and channel) and post its echo (awaited) when
        :meth:`echo_to` is set; return its id."""
        if not _valid_client_id(client_id):
            raise ValueError(f"client_id must be an integer, got {client_id!r}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        cid = int(str(client_id).strip())
        last = next((m for m in reversed(self._messages) if m["client_id"] == cid), None)
        message = self._store(
            cid,
            text,
            "to_client",
            None,
            DEFAULT_TRANSPORT if last is None else last["transport"],
            DEFAULT_CHANNEL_ID if last is None else last["channel_id"],
        )
        self._notify()
        if self._echo is not None:
            await self._post_echo(self._echo, {**message, "operator_id": DEFAULT_OPERATOR_ID})
        return int(message["id"])

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
            "accept_slowly_next": self.accept_slowly_next,
            "accept_then_fail_next": self.accept_then_fail_next,
            "set_accept_slowly": self.set_accept_slowly,
            "lookup_fail_next": self.lookup_fail_next,
            "tag_fail_next": self.tag_fail_next,
            "set_token": self.set_token,
            "echo_to": self.echo_to,
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
                    "tag_assignments": self.tag_assignments,
                },
            )
        if route == ("GET", "/_fake/statistics"):
            return _json_reply(200, asdict(self.statistics()))
        if route == ("GET", "/_fake/messages"):
            client_id = parse_qs(url.query).get("client_id", [None])[-1]
            return _json_reply(
                200,
                {
                    "messages": self.stored_messages(client_id),
                    "duplicates": self.duplicate_deliveries(),
                },
            )
        if route == ("POST", "/_fake/operator_says"):
            try:
                spec = json.loads(raw)
                if not isinstance(spec, dict):
                    raise ValueError("expected {'client_id': N, 'text': '...'}")
                said: Any = (spec.get("client_id"), spec.get("text"))
                message_id = await self.operator_says(*said)
            except ValueError as exc:
                return _error_reply(400, str(exc))
            return _json_reply(200, {"status": "success", "message_id": message_id})
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
        url = urlsplit(target)
        if url.path in ("/v1/messages", "/v1/messages/"):
            return await self.answer_messages(method, url.path, authorization, raw, url.query)
        if url.path in ("/v1/tags/assign_to", "/v1/tags/assign_to/"):
            return await self.answer_tags(method, url.path, authorization, raw)
        if url.path.startswith("/_fake/"):
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
        try:
            await _send_reply(conn, stream, reply)
        finally:
            if reply.after is not None:
                reply.after()  # e.g. start the outbox echo, even if the client went away
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
    """Serve ``fake`` on ``host:port`` until cancelled; ``started()`` with the base URL. Outbox
    echoes are posted from this server's nursery."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(fake, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return  # the client went away or spoke broken HTTP: its connection ends here

    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    shown_host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    fake._base_url = f"http://{shown_host}:{sockname[1]}/v1"
    try:
        # Echo POSTs use one client and run in this nursery: they stop with the server.
        async with (
            httpx.AsyncClient(timeout=None, trust_env=False) as echo_client,  # noqa: S113 - per request
            trio.open_nursery() as nursery,
        ):
            fake._echo_client, fake._echo_nursery = echo_client, nursery
            await nursery.start(trio.serve_listeners, handle, listeners)
            task_status.started(fake.base_url)
    finally:
        fake._echo_client = fake._echo_nursery = None


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
