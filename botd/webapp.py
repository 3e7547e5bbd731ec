"""The HTTP side: the Chat2Desk webhook, health, readiness, version and metrics
(docs/design.md §6, §8).

The webhook answers ``200 {"status": "queued"}`` only after RabbitMQ confirmed the persistent
publish; what botd does not act on gets ``200 {"status": "ignored", "reason": …}``; bad requests
get ``{"status": "error", "reason": …}`` with 400 / 401 / 404 / 405 / 413 / 415, and 503 while the
broker is unavailable or botd is draining. Nothing is queued unless the answer is "queued".

With a signed timestamp (``hmac_timestamp_header``), a request whose signature was already
queued is answered ``200 {"status": "ignored"}`` with a replay reason and not queued again; the
signatures are remembered in Redis after the confirm, and a Redis that does not answer within
:data:`REPLAY_CHECK_SECONDS` lets the request through (the consumer's dedupe still holds).

The path token never reaches a log line: paths are logged through :func:`loggable_path`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Protocol

import trio
from quart import Response, g, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from botd import __version__
from botd.config import WebhookConfig
from botd.errors import InvalidInput, TransientError
from botd.inbound import Ignored, encode_queued, parse_webhook, shard_of
from botd.metrics import Metrics
from botd.openapi import spec

log = logging.getLogger("botd.webhook")

WEBHOOK_PATH = "/webhook/chat2desk"
JSON = "application/json"
# How long the replay check may wait for Redis, each way (look-up, record) before botd goes on
# without it: a slow Redis must not turn webhooks into 503s.
REPLAY_CHECK_SECONDS = 0.5


class SignatureLog(Protocol):
    """Signatures of queued webhooks, for replay detection (Redis:
    :class:`botd.state_store.StateStore`). Both raise TransientError when Redis is unavailable."""

    async def signature_seen(self, signature: str) -> bool:
        """Whether a webhook with this signature was queued within its TTL."""
        ...

    async def remember_signature(self, signature: str, *, ttl_seconds: int) -> None:
        """Record a queued webhook's signature for ``ttl_seconds`` (the first record stays)."""
        ...


@dataclass(frozen=True, slots=True)
class WebDeps:
    """What the web app needs from the daemon, as plain callables (easy to fake in tests)."""

    config: WebhookConfig
    shards: int
    publish: Callable[[int, bytes], Awaitable[None]]  # (shard, body); raises TransientError
    readiness: Callable[[], Awaitable[dict[str, bool]]]
    is_draining: Callable[[], bool]
    metrics: Metrics
    # Replay detection when ``config.hmac_timestamp_header`` is set; the daemon always gives
    # one, and None (app tests about something else) checks no replays.
    signatures: SignatureLog | None = None


def loggable_path(path: str) -> str:
    """``path`` fit for a log line: anything after the webhook path (the path token, or a
    guess at it) is replaced by ``***``."""
    if path.startswith(WEBHOOK_PATH + "/"):
        return WEBHOOK_PATH + "/***"
    return path


ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
# An ASGI fast path: handles the request and says True, or says False having read nothing.
FastPath = Callable[[dict[str, Any], ASGIReceive, ASGISend], Awaitable[bool]]


class _App(QuartTrio):
    """Quart-Trio whose own error log (an exception outside botd's handlers) hides the token,
    with the webhook's common case answered before Quart's request machinery (``fast_path``)."""

    fast_path: FastPath | None = None

    async def asgi_app(self, scope: Any, receive: Any, send: Any) -> None:
        if self.fast_path is not None and await self.fast_path(scope, receive, send):
            return
        await super().asgi_app(scope, receive, send)

    def log_exception(
        self,
        exception_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None],
    ) -> None:
        if not has_request_context():
            super().log_exception(exception_info)
            return
        self.logger.error(
            "Exception on request %s %s",
            request.method,
            loggable_path(request.path),
            exc_info=exception_info,
        )


def _answer(status: int, payload: dict[str, str]) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, content_type=JSON)


_QUEUED = json.dumps({"status": "queued"})
# A replay keeps the outside contract's words: "ignored" (not queued), with the reason.
REPLAY_REASON = "replayed request: this signature was queued already"
_REPLAYED = json.dumps({"status": "ignored", "reason": REPLAY_REASON})


def _error(status: int, reason: str) -> Response:
    response = _answer(status, {"status": "error", "reason": reason})
    if status in (413, 431):  # the rest of this request may still be on the wire
        response.headers["Connection"] = "close"
    return response


def head_size(method: str, raw_path: bytes, query: bytes, headers: Any) -> int:
    """Bytes of an HTTP/1.1 request head as sent: request line and header lines."""
    line = len(method) + 1 + len(raw_path) + (len(query) + 1 if query else 0) + len(" HTTP/1.1\r\n")
    return line + sum(len(k) + 2 + len(v) + 2 for k, v in headers.items()) + 2


def verify_signature(
    secret: str, body: bytes, signature: str | None, *, timestamp: str | None = None
) -> bool:
    """Constant-time check of a hex HMAC-SHA256 (``sha256=`` prefix allowed).

    Signed bytes: the raw body, or ``<timestamp>.<body>`` when a timestamp is given.
    """
    if not signature:
        return False
    signed = body if timestamp is None else timestamp.encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), normalised_signature(signature).encode())


def normalised_signature(signature: str) -> str:
    """The hex digest of a signature header, however it is written (``sha256=``, case, spaces):
    after :func:`verify_signature` accepted it, the id of the signed request."""
    signature = signature.strip()
    if signature.lower().startswith("sha256="):
        signature = signature[7:]
    return signature.lower()


def check_signature(cfg: WebhookConfig, body: bytes, headers: Any, now: float) -> str | None:
    """None when the request is authentic, else the reason for a 401."""
    if not cfg.hmac_secret:
        return None
    timestamp = None
    if cfg.hmac_timestamp_header:
        timestamp = headers.get(cfg.hmac_timestamp_header)
        if not timestamp:
            return f"missing {cfg.hmac_timestamp_header}"
        try:
            skew = abs(now - float(timestamp))
        except ValueError:
            return f"{cfg.hmac_timestamp_header} must be unix seconds"
        if not skew <= cfg.hmac_tolerance_seconds:
            return f"{cfg.hmac_timestamp_header} is outside the accepted window"
    if not verify_signature(
        cfg.hmac_secret, body, headers.get(cfg.hmac_header), timestamp=timestamp
    ):
        return f"missing or wrong signature in {cfg.hmac_header}"
    return None


class _LowerHeaders(dict[str, str]):
    """An ASGI request's headers by lower-case name; ``get`` takes any case (like Quart's)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


_JSON_HEADERS = [(b"content-type", JSON.encode())]


async def fast_webhook(
    cfg: WebhookConfig,
    scope: dict[str, Any],
    receive: ASGIReceive,
    send: ASGISend,
    *,
    accept: Callable[[bytes, Any, float], Awaitable[tuple[int, str]]],
    is_draining: Callable[[], bool],
    answered: Callable[[int, float], None],
) -> bool:
    """The webhook's common case without Quart: a POST to the webhook path (with the right
    token) with a JSON body of an acceptable length (declared, or bounded while read; never
    chunked), from a head within the limit,
    while botd is not draining. Anything else (every refusal that leaves a body unread, and
    every other route) says False having read nothing, and Quart answers it as before.

    Measured: Quart's request machinery costs about 0.2 ms of CPU per request on this machine
    (a do-nothing Quart route against a plain ASGI answer, both on Hypercorn)."""
    if scope.get("type") != "http" or scope.get("method") != "POST" or is_draining():
        return False
    path = scope.get("path", "")
    if cfg.path_token:
        if not path.startswith(WEBHOOK_PATH + "/") or len(path) == len(WEBHOOK_PATH) + 1:
            return False
        given = path[len(WEBHOOK_PATH) + 1 :]
        if not hmac.compare_digest(given.encode(), cfg.path_token.encode()):
            # as Quart's route answers it (once compared); the body stays unread: close
            await _send(send, 404, error_body_of("not found"), close=True)
            return True
    elif path != WEBHOOK_PATH:
        return False
    raw_headers = scope.get("headers", ())
    headers = _LowerHeaders(
        (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw_headers
    )
    size = head_size("POST", scope.get("raw_path", b""), scope.get("query_string", b""), headers)
    length = headers.get("content-length")
    if (
        size > cfg.max_header_bytes
        or (length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes))
        or "transfer-encoding" in headers
    ):
        return False
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype and ctype != JSON and not ctype.endswith("+json"):
        return False
    started = time.perf_counter()
    body = bytearray()
    with trio.move_on_after(cfg.read_timeout_seconds) as reading:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return True  # the client left: nothing to answer
            body += message.get("body", b"")
            if len(body) > cfg.max_body_bytes:  # more than it declared
                await _send(
                    send,
                    413,
                    error_body_of(f"body larger than {cfg.max_body_bytes} bytes"),
                    close=True,
                )
                answered(413, started)
                return True
            if not message.get("more_body", False):
                break
    if reading.cancelled_caught:
        answered(408, started)
        await _send(send, 408, error_body_of("request body not received in time"), close=True)
        return True
    try:
        with trio.move_on_after(cfg.response_timeout_seconds) as answering:
            status, payload = await accept(bytes(body), headers, started)
    except Exception:
        # as Quart's handler of the unexpected: logged without the path token, answered 500
        log.exception("unexpected error answering POST %s", loggable_path(path))
        await _send(send, 500, error_body_of("internal error"), close=False)
        return True
    if answering.cancelled_caught:
        status, payload = 503, error_body_of("botd did not answer in time; retry later")
        answered(503, started)
    await _send(send, status, payload, close=False)
    return True


def error_body_of(reason: str) -> str:
    return json.dumps({"status": "error", "reason": reason}, ensure_ascii=False)


async def _send(send: ASGISend, status: int, payload: str, *, close: bool) -> None:
    data = payload.encode()
    headers = [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def create_app(deps: WebDeps) -> QuartTrio:
    app: _App = _App("botd")
    cfg = deps.config
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    # A body that trickles in is cut at the same read timeout as an idle connection; a
    # response may take the broker's confirm and a little more, never longer than this.
    app.config["BODY_TIMEOUT"] = cfg.read_timeout_seconds
    app.config["RESPONSE_TIMEOUT"] = cfg.response_timeout_seconds
    metrics = deps.metrics

    @app.before_request
    async def limit_head() -> Response | None:
        # h11 only bounds a head that is still incomplete; one that arrives in a single read
        # (up to 64 KiB) would pass, so max_header_bytes is enforced here as well.
        scope = request.scope
        size = head_size(
            request.method,
            scope.get("raw_path", b""),
            scope.get("query_string", b""),
            request.headers,
        )
        if size > cfg.max_header_bytes:
            if request.path.startswith(WEBHOOK_PATH):
                metrics.webhook_answered(431, 0.0)
            return _error(431, f"request head larger than {cfg.max_header_bytes} bytes")
        return None

    @app.after_request
    async def close_if_body_unread(response: Response) -> Response:
        # A request whose body botd did not read (refused, 404/405, OPTIONS, 413 …) leaves that
        # body unread or still on the wire; a client reusing the connection then got no answer
        # to its next request (found by schemathesis: a read timeout). Such a connection ends.
        has_body = (
            bool(request.content_length)
            or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        )
        if has_body and not g.get("body_read", False):
            response.headers["Connection"] = "close"
        return response

    def answered(code: int, started: float) -> None:
        metrics.webhook_answered(code, time.perf_counter() - started)

    # Replays: only a signed timestamp makes a signature unique to one sending; it is accepted
    # for hmac_tolerance_seconds either side of its time, so it is remembered twice that long.
    signatures = deps.signatures if cfg.hmac_secret and cfg.hmac_timestamp_header else None
    replay_ttl_seconds = 2 * cfg.hmac_tolerance_seconds

    async def bounded(
        what: str, message_id: str, call: Callable[[], Awaitable[bool | None]]
    ) -> bool | None:
        """``call()`` within REPLAY_CHECK_SECONDS; None (with a warning) when Redis cannot."""
        reason = f"Redis did not answer within {REPLAY_CHECK_SECONDS} s"
        with trio.move_on_after(REPLAY_CHECK_SECONDS):
            try:
                return await call()
            except TransientError as exc:
                reason = str(exc)
        log.warning(
            "replay %s of webhook message %s skipped (%s); the consumer still drops a repeated "
            "message_id",
            what,
            message_id,
            reason,
        )
        return None

    async def already_queued(signature: str, message_id: str) -> bool:
        """Whether this signed request was queued before (False when Redis cannot tell in time)."""
        if signatures is None:
            return False
        call = partial(signatures.signature_seen, signature)
        return bool(await bounded("check", message_id, call))

    async def record_queued(signature: str, message_id: str) -> None:
        if signatures is not None:
            call = partial(signatures.remember_signature, signature, ttl_seconds=replay_ttl_seconds)
            await bounded("record", message_id, call)

    async def accept(body: bytes, headers: Any, started: float) -> tuple[int, str]:
        """The answer to a webhook body that was read whole (both paths): (status, JSON)."""
        refusal = check_signature(cfg, body, headers, time.time())
        if refusal is not None:
            answered(401, started)
            return 401, error_body_of(refusal)
        try:
            verdict = parse_webhook(body, received_at=time.time())
        except InvalidInput as exc:
            answered(400, started)
            return 400, error_body_of(exc.reason)
        if isinstance(verdict, Ignored):
            metrics.ignored(verdict.kind)
            answered(200, started)
            ignored = {"status": "ignored", "reason": verdict.reason}
            return 200, json.dumps(ignored, ensure_ascii=False)
        signature = normalised_signature(headers.get(cfg.hmac_header, "") or "")
        if await already_queued(signature, verdict.message_id):
            log.info(
                "webhook message %s: a replay of a queued request; not queued again",
                verdict.message_id,
            )
            answered(200, started)
            return 200, _REPLAYED
        shard = shard_of(verdict.client_id, deps.shards)
        try:
            await deps.publish(shard, encode_queued(verdict))
        except TransientError as exc:
            log.warning("webhook message %s not queued: %s", verdict.message_id, exc)
            answered(503, started)
            return 503, error_body_of("message broker unavailable; retry later")
        # Only now: a signature recorded before the confirm would turn the retry of a request
        # that was never queued into an "ignored" replay, and lose it.
        await record_queued(signature, verdict.message_id)
        answered(200, started)
        return 200, _QUEUED

    async def handle_webhook() -> Response:
        started = time.perf_counter()
        if deps.is_draining():
            answered(503, started)
            return _error(503, "botd is shutting down; retry later")
        length = request.content_length
        if length is not None and length > cfg.max_body_bytes:
            answered(413, started)
            return _error(413, f"body larger than {cfg.max_body_bytes} bytes")
        ctype = (request.mimetype or "").lower()
        if ctype and ctype != JSON and not ctype.endswith("+json"):
            answered(415, started)
            return _error(415, "content type must be application/json")
        body = await request.get_data(cache=False, as_text=False)
        assert isinstance(body, bytes)
        g.body_read = True
        status, payload = await accept(body, request.headers, started)
        return Response(payload, status=status, content_type=JSON)

    app.fast_path = partial(
        fast_webhook, cfg, accept=accept, is_draining=deps.is_draining, answered=answered
    )

    if cfg.path_token:
        token = cfg.path_token

        @app.route(f"{WEBHOOK_PATH}/<path:given>", methods=["POST"])
        async def webhook_with_token(given: str) -> Response:
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(404, "not found")
            return await handle_webhook()
    else:

        @app.route(WEBHOOK_PATH, methods=["POST"])
        async def webhook() -> Response:
            return await handle_webhook()

    @app.route("/health")
    async def health() -> Response:
        return _answer(200, {"status": "ok"})

    @app.route("/ready")
    async def ready() -> Response:
        parts = await deps.readiness()
        ok = all(parts.values()) and not deps.is_draining()
        body = {
            "status": "ready" if ok else "not ready",
            **{k: ("up" if v else "down") for k, v in parts.items()},
        }
        if deps.is_draining():
            body["draining"] = "yes"
        return _answer(200 if ok else 503, body)

    @app.route("/")
    async def index() -> Response:
        return _answer(200, {"name": "botd", "version": __version__})

    openapi = json.dumps(
        spec(
            path_token=bool(cfg.path_token),
            hmac_header=cfg.hmac_header if cfg.hmac_secret else None,
            hmac_timestamp_header=cfg.hmac_timestamp_header or None,
        )
    )

    @app.route("/openapi.json")
    async def openapi_json() -> Response:
        return Response(openapi, status=200, content_type=JSON)

    @app.route("/metrics")
    async def metrics_page() -> Response:
        data, content_type = metrics.render()
        return Response(data, status=200, content_type=content_type)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if request.path.startswith(WEBHOOK_PATH):
            metrics.webhook_answered(code, 0.0)
        reasons = {
            404: "not found",
            405: "method not allowed",
            413: f"body larger than {cfg.max_body_bytes} bytes",
        }
        response = _error(code, reasons.get(code, exc.name.lower()))
        allowed = getattr(exc, "valid_methods", None)
        if code == 405 and allowed:  # a 405 must say what is allowed (RFC 9110 §15.5.6)
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception(
            "unexpected error answering %s %s", request.method, loggable_path(request.path)
        )
        return _error(500, "internal error")

    return app
