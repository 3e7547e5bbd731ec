"""The webhook boundary (docs/design.md §6, §8): authentication, limits, validation, non-text
messages.

App-level tests build the Quart-Trio app with a recording ``publish`` (so "nothing is queued
unless 200 queued" is checked exactly) and talk to it with Quart's test client, or serve it with
Hypercorn on port 0 when the test is about the HTTP connection itself. Validation and non-text
messages go through the whole running daemon (``running``), with real RabbitMQ, Redis and
PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import hypercorn.trio
import pytest
import redis
import trio
from quart_trio import QuartTrio

from botd import daemon, dialog
from botd.bridge import AsyncioBridge
from botd.config import Config, RedisConfig, WebhookConfig, load_config
from botd.daemon import Running, _hypercorn_config, warn_if_exposed
from botd.errors import TransientError
from botd.inbound import MAX_TEXT_CHARS, QueuedMessage, decode_queued, shard_of
from botd.metrics import Metrics
from botd.state_store import StateStore, open_state_store
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.webapp import (
    REPLAY_CHECK_SECONDS,
    REPLAY_REASON,
    WEBHOOK_PATH,
    SignatureLog,
    WebDeps,
    create_app,
)
from tests.conftest import REDIS_URL, delete_queues
from tests.helpers import inbox_payload, orders, post_webhook

JSON_HEADERS = {"Content-Type": "application/json"}
TOKEN = "Tok3n_" + "x" * 26
SECRET = "webhook-secret-5d1f"
TS_HEADER = "X-Chat2Desk-Timestamp"


# ---- the app with a recorder ---------------------------------------------------------------


@dataclass
class Recorder:
    """The ``publish`` port: records what would have been queued (or fails like a dead broker)."""

    published: list[tuple[int, bytes]] = field(default_factory=list)
    broker_down: bool = False

    async def __call__(self, shard: int, body: bytes) -> None:
        if self.broker_down:
            raise TransientError("broker unavailable (test)")
        self.published.append((shard, body))

    @property
    def messages(self) -> list[QueuedMessage]:
        return [decode_queued(body) for _shard, body in self.published]


@dataclass
class AppUnderTest:
    app: QuartTrio
    recorder: Recorder
    metrics: Metrics
    config: WebhookConfig


def make_app(
    *, draining: bool = False, signatures: SignatureLog | None = None, **webhook: Any
) -> AppUnderTest:
    recorder = Recorder()
    metrics = Metrics()
    cfg = WebhookConfig(**webhook)

    async def readiness() -> dict[str, bool]:
        return {"rabbitmq": True}

    app = create_app(
        WebDeps(
            config=cfg,
            shards=2,
            publish=recorder,
            readiness=readiness,
            is_draining=lambda: draining,
            metrics=metrics,
            signatures=signatures,
        )
    )
    return AppUnderTest(app, recorder, metrics, cfg)


@dataclass(frozen=True)
class Answer:
    status: int
    json: Any
    headers: dict[str, str]  # names in lower case
    raw: bytes


async def call(
    under: AppUnderTest,
    body: bytes | Any,
    *,
    path: str = WEBHOOK_PATH,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request through Quart's test client; the body must be JSON (every answer is)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    client = under.app.test_client()
    send = {
        "POST": client.post,
        "GET": client.get,
        "PUT": client.put,
        "DELETE": client.delete,
        "PATCH": client.patch,
    }[method]
    response = await send(path, data=data, headers=JSON_HEADERS if headers is None else headers)
    raw = await response.get_data()
    assert isinstance(raw, bytes)
    assert response.content_type == "application/json", (response.status_code, raw)
    headers_ = {k.lower(): v for k, v in response.headers.items()}
    return Answer(response.status_code, json.loads(raw), headers_, raw)


def assert_error(answer: Answer, status: int, *words: str) -> None:
    assert answer.status == status, answer
    assert answer.json["status"] == "error", answer
    reason = answer.json["reason"]
    assert isinstance(reason, str) and reason
    for word in words:
        assert word in reason, (word, reason)


def sign(body: bytes, secret: str = SECRET, timestamp: str | None = None) -> str:
    signed = body if timestamp is None else timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def body_of(**extra: Any) -> bytes:
    return json.dumps(inbox_payload(4242, "hello", **extra)).encode()


# ---- 1. authentication ---------------------------------------------------------------------


async def test_path_token_route_is_the_only_way_in() -> None:
    under = make_app(path_token=TOKEN)
    ok = await call(under, body_of(), path=f"{WEBHOOK_PATH}/{TOKEN}")
    assert (ok.status, ok.json) == (200, {"status": "queued"})
    assert len(under.recorder.published) == 1

    wrong_paths = [
        WEBHOOK_PATH,
        f"{WEBHOOK_PATH}/",
        f"{WEBHOOK_PATH}/{TOKEN[:-1]}",
        f"{WEBHOOK_PATH}/{TOKEN}x",
        f"{WEBHOOK_PATH}/{TOKEN.upper()}",
        f"{WEBHOOK_PATH}/{TOKEN}/extra",
        f"{WEBHOOK_PATH}/x/{TOKEN}",
        f"{WEBHOOK_PATH}/{'y' * len(TOKEN)}",
        f"/webhook/{TOKEN}",
    ]
    for path in wrong_paths:
        answer = await call(under, body_of(), path=path)
        assert_error(answer, 404, "not found")
    assert len(under.recorder.published) == 1, "a wrong path must queue nothing"


@pytest.mark.parametrize(
    ("header", "make_signature"),
    [
        ("X-Chat2Desk-Signature", lambda body: sign(body)),
        ("X-Chat2Desk-Signature", lambda body: "sha256=" + sign(body)),
        ("X-Chat2Desk-Signature", lambda body: "SHA256=" + sign(body).upper()),
        ("X-Chat2Desk-Signature", lambda body: f"  {sign(body)} "),
        ("X-Custom-Sig", lambda body: sign(body)),
    ],
)
async def test_right_signature_is_accepted(
    header: str, make_signature: Callable[[bytes], str]
) -> None:
    under = make_app(hmac_secret=SECRET, hmac_header=header)
    body = body_of()
    answer = await call(under, body, headers={**JSON_HEADERS, header: make_signature(body)})
    assert (answer.status, answer.json) == (200, {"status": "queued"})
    assert len(under.recorder.published) == 1


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "sha256=",
        "not-hex-at-all",
        sign(b"another body"),
        sign(body_of(), secret="wrong-secret"),
        sign(body_of())[:-1],
        sign(body_of()) + "0",
        "sha1=" + sign(body_of()),
        "sha256=sha256=" + sign(body_of()),
        hashlib.sha256(body_of()).hexdigest(),  # a plain hash, no secret
    ],
)
async def test_missing_or_wrong_signature_is_401(signature: str | None) -> None:
    under = make_app(hmac_secret=SECRET)
    headers = dict(JSON_HEADERS)
    if signature is not None:
        headers["X-Chat2Desk-Signature"] = signature
    answer = await call(under, body_of(), headers=headers)
    assert_error(answer, 401, "X-Chat2Desk-Signature")
    assert under.recorder.published == []


async def test_signature_in_another_header_is_401() -> None:
    under = make_app(hmac_secret=SECRET, hmac_header="X-Custom-Sig")
    body = body_of()
    answer = await call(under, body, headers={**JSON_HEADERS, "X-Chat2Desk-Signature": sign(body)})
    assert_error(answer, 401, "X-Custom-Sig")
    assert under.recorder.published == []


async def test_signed_timestamp_within_tolerance_is_accepted() -> None:
    under = make_app(hmac_secret=SECRET, hmac_timestamp_header=TS_HEADER)
    body = body_of()
    for ts in (str(int(time.time())), str(int(time.time()) - 290), f"{time.time() + 290:.3f}"):
        headers = {**JSON_HEADERS, TS_HEADER: ts, "X-Chat2Desk-Signature": sign(body, timestamp=ts)}
        answer = await call(under, body, headers=headers)
        assert (answer.status, answer.json) == (200, {"status": "queued"}), ts
    assert len(under.recorder.published) == 3


def _now_plus(seconds: float) -> str:
    return str(int(time.time() + seconds))


@pytest.mark.parametrize(
    ("make_ts", "signed_ts", "words"),
    [
        (lambda: None, None, ["missing", TS_HEADER]),
        (lambda: "", None, ["missing", TS_HEADER]),
        (lambda: _now_plus(-301), None, ["window"]),  # stale
        (lambda: _now_plus(-86400), None, ["window"]),
        (lambda: _now_plus(+301), None, ["window"]),  # from the future
        (lambda: "0", None, ["window"]),
        (lambda: "yesterday", None, ["unix seconds"]),
        (lambda: "12:00", None, ["unix seconds"]),
        (lambda: "nan", None, ["window"]),
        (lambda: "inf", None, ["window"]),
        (lambda: "-inf", None, ["window"]),
        (lambda: "1e400", None, ["window"]),
        # fresh timestamp, but the signature covers another one (a replay with a new timestamp)
        (lambda: _now_plus(0), lambda: _now_plus(-3600), ["signature"]),
        # fresh timestamp, but the signature covers the body alone
        (lambda: _now_plus(0), lambda: "", ["signature"]),
    ],
)
async def test_bad_signed_timestamp_is_401(
    make_ts: Callable[[], str | None],
    signed_ts: Callable[[], str] | None,
    words: list[str],
) -> None:
    under = make_app(
        hmac_secret=SECRET, hmac_timestamp_header=TS_HEADER, hmac_tolerance_seconds=300
    )
    body = body_of()
    ts = make_ts()
    covered = ts if signed_ts is None else signed_ts()
    headers = {
        **JSON_HEADERS,
        "X-Chat2Desk-Signature": sign(body, timestamp=covered or None),
    }
    if ts is not None:
        headers[TS_HEADER] = ts
    answer = await call(under, body, headers=headers)
    assert_error(answer, 401, *words)
    assert under.recorder.published == []


async def test_token_and_signature_together() -> None:
    under = make_app(path_token=TOKEN, hmac_secret=SECRET)
    body = body_of()
    good = {**JSON_HEADERS, "X-Chat2Desk-Signature": sign(body)}
    assert_error(await call(under, body, path=f"{WEBHOOK_PATH}/{TOKEN}"), 401)
    assert_error(await call(under, body, path=WEBHOOK_PATH, headers=good), 404)
    answer = await call(under, body, path=f"{WEBHOOK_PATH}/{TOKEN}", headers=good)
    assert answer.json == {"status": "queued"}
    assert len(under.recorder.published) == 1


async def test_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behaviour only: every secret comparison goes through hmac.compare_digest."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    under = make_app(path_token=TOKEN, hmac_secret=SECRET)
    body = body_of()
    headers = {**JSON_HEADERS, "X-Chat2Desk-Signature": "sha256=" + sign(body)}
    answer = await call(under, body, path=f"{WEBHOOK_PATH}/{TOKEN}", headers=headers)
    assert answer.status == 200
    assert (TOKEN.encode(), TOKEN.encode()) in compared
    assert (sign(body).encode(), sign(body).encode()) in compared
    compared.clear()
    await call(under, body, path=f"{WEBHOOK_PATH}/{TOKEN[::-1]}", headers=headers)
    assert compared == [(TOKEN[::-1].encode(), TOKEN.encode())]


@pytest.mark.parametrize(
    ("env", "exposed"),
    [
        ({"BOTD_WEBHOOK_HOST": "0.0.0.0"}, True),
        ({"BOTD_WEBHOOK_HOST": "::"}, True),
        ({"BOTD_WEBHOOK_HOST": "10.1.2.3"}, True),
        ({}, False),
        ({"BOTD_WEBHOOK_HOST": "127.0.0.1"}, False),
        ({"BOTD_WEBHOOK_HOST": "127.0.0.53"}, False),
        ({"BOTD_WEBHOOK_HOST": "::1"}, False),
        ({"BOTD_WEBHOOK_HOST": "localhost"}, False),
        ({"BOTD_WEBHOOK_HOST": "0.0.0.0", "BOTD_WEBHOOK_PATH_TOKEN": TOKEN}, False),
        ({"BOTD_WEBHOOK_HOST": "0.0.0.0", "BOTD_WEBHOOK_HMAC_SECRET": SECRET}, False),
        # allowed explicitly, still loud
        ({"BOTD_WEBHOOK_HOST": "0.0.0.0", "BOTD_WEBHOOK_ALLOW_UNAUTHENTICATED": "true"}, True),
    ],
)
def test_start_up_warns_loudly_when_exposed_without_auth(
    env: dict[str, str], exposed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="botd.daemon")
    assert warn_if_exposed(load_config(None, env=env)) is exposed
    security = [r for r in caplog.records if "SECURITY" in r.getMessage()]
    if exposed:
        (record,) = security
        assert record.levelno == logging.WARNING
        assert env["BOTD_WEBHOOK_HOST"] in record.getMessage()
        assert "BOTD_WEBHOOK_PATH_TOKEN" in record.getMessage()
    else:
        assert security == []


# ---- 1b. replays of a signed request (real Redis) ------------------------------------------

TOLERANCE = 300
SIG_HEADER = "X-Chat2Desk-Signature"


@pytest.fixture
async def signature_log(bridge: AsyncioBridge, redis_prefix: str) -> AsyncIterator[StateStore]:
    redis_config = RedisConfig(url=REDIS_URL, key_prefix=redis_prefix)
    async with open_state_store(bridge, redis_config, state_ttl_seconds=60) as store:
        yield store


def signed_headers(body: bytes, ts: str | None = None) -> dict[str, str]:
    ts = str(int(time.time())) if ts is None else ts
    return {**JSON_HEADERS, TS_HEADER: ts, SIG_HEADER: sign(body, timestamp=ts)}


def replay_app(signatures: SignatureLog) -> AppUnderTest:
    return make_app(
        hmac_secret=SECRET,
        hmac_timestamp_header=TS_HEADER,
        hmac_tolerance_seconds=TOLERANCE,
        signatures=signatures,
    )


def replay_keys(prefix: str) -> dict[str, int]:
    """The replay records under ``prefix``: key → TTL in seconds."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return {str(k): int(client.ttl(k)) for k in client.keys(f"{prefix}replay:*")}
    finally:
        client.close()


async def test_a_replayed_signed_request_is_answered_ignored_and_not_queued_again(
    signature_log: StateStore, redis_prefix: str
) -> None:
    under = replay_app(signature_log)
    body = body_of()
    headers = signed_headers(body)
    first = await call(under, body, headers=headers)
    assert (first.status, first.json) == (200, {"status": "queued"})
    respelled = {**headers, SIG_HEADER: "sha256=" + headers[SIG_HEADER].upper()}
    for replay in (headers, respelled):
        again = await call(under, body, headers=replay)
        assert (again.status, again.json) == (200, {"status": "ignored", "reason": REPLAY_REASON})
    assert len(under.recorder.published) == 1
    # remembered under the key prefix, for twice the tolerance (a timestamp is accepted that
    # long either side of its time)
    ((key, ttl),) = replay_keys(redis_prefix).items()
    assert key == f"{redis_prefix}replay:{headers[SIG_HEADER]}"
    assert 2 * TOLERANCE - 10 <= ttl <= 2 * TOLERANCE
    # the same body signed at another time is another sending (a Chat2Desk retry): queued, and
    # the consumer drops the repeated message_id
    other = await call(under, body, headers=signed_headers(body, str(int(time.time()) - 10)))
    assert other.json == {"status": "queued"}
    assert len(under.recorder.published) == 2


async def test_a_signature_is_remembered_only_after_the_publish_is_confirmed(
    signature_log: StateStore, redis_prefix: str
) -> None:
    under = replay_app(signature_log)
    body = body_of()
    headers = signed_headers(body)
    under.recorder.broker_down = True
    assert_error(await call(under, body, headers=headers), 503, "retry")
    assert replay_keys(redis_prefix) == {}
    under.recorder.broker_down = False
    retried = await call(under, body, headers=headers)  # Chat2Desk's retry of the same request
    assert (retried.status, retried.json) == (200, {"status": "queued"})
    assert len(under.recorder.published) == 1


async def test_without_a_signed_timestamp_no_signature_is_remembered(
    signature_log: StateStore, redis_prefix: str
) -> None:
    under = make_app(hmac_secret=SECRET, signatures=signature_log)
    body = body_of()
    headers = {**JSON_HEADERS, SIG_HEADER: sign(body)}
    for _ in range(2):
        assert (await call(under, body, headers=headers)).json == {"status": "queued"}
    assert replay_keys(redis_prefix) == {}


@pytest.mark.parametrize("fault", ["silent", "refusing"])
async def test_replay_check_lets_the_request_through_when_redis_cannot_answer(
    fault: str, bridge: AsyncioBridge, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that does not answer (a listener that never replies) or is not there: each
    request is queued within the replay budget, with a warning; nothing is refused."""
    caplog.set_level(logging.WARNING, logger="botd.webhook")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if fault == "silent":
            sock.listen(16)  # connections complete in the kernel; nobody ever answers
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
        async with open_state_store(bridge, RedisConfig(url=url), state_ttl_seconds=60) as store:
            under = replay_app(store)
            body = body_of()
            headers = signed_headers(body)
            for _ in range(2):
                started = trio.current_time()
                answer = await call(under, body, headers=headers)
                took = trio.current_time() - started
                assert (answer.status, answer.json) == (200, {"status": "queued"})
                assert took < 2 * REPLAY_CHECK_SECONDS + 1.0, took  # check + record, bounded
    assert len(under.recorder.published) == 2
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert [m.split(" of ")[0] for m in skipped] == ["replay check", "replay record"] * 2, skipped


async def test_the_running_daemon_answers_a_replay_ignored(
    make_config: Callable[..., Config], redis_prefix: str
) -> None:
    """The daemon gives the web app its Redis state store as the signature log."""
    cfg = make_config(webhook_hmac_secret=SECRET, webhook_hmac_timestamp_header=TS_HEADER)
    body = json.dumps(inbox_payload(7301, "Здравствуйте")).encode()
    headers = signed_headers(body)
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        running: Running = await nursery.start(partial(daemon.serve, cfg, stop=stop))
        try:
            async with httpx.AsyncClient() as client:
                answers = [
                    (
                        await client.post(
                            f"{running.url}{WEBHOOK_PATH}", content=body, headers=headers
                        )
                    )
                    for _ in range(2)
                ]
            assert [(a.status_code, a.json()) for a in answers] == [
                (200, {"status": "queued"}),
                (200, {"status": "ignored", "reason": REPLAY_REASON}),
            ]
            assert list(replay_keys(cfg.redis.key_prefix)) == [
                f"{cfg.redis.key_prefix}replay:{headers[SIG_HEADER]}"
            ]
            with trio.fail_after(15):
                await running.consumers.wait_handled(1)
        finally:
            stop.set()
    await delete_queues(cfg)


# ---- 2. limits -----------------------------------------------------------------------------


def padded_body(size: int) -> bytes:
    """A valid inbox body of exactly ``size`` bytes (padding in an ignored field)."""
    base = json.loads(body_of())
    base["extra_data"] = {"pad": ""}
    raw = json.dumps(base).encode()
    base["extra_data"]["pad"] = "p" * (size - len(raw))
    out = json.dumps(base).encode()
    assert len(out) == size
    return out


async def test_declared_body_over_the_limit_is_413_and_nothing_queued() -> None:
    under = make_app(max_body_bytes=1024)
    at_limit = await call(under, padded_body(1024))
    assert at_limit.json == {"status": "queued"}
    answer = await call(under, padded_body(1025))
    assert_error(answer, 413, "1024")
    assert answer.headers.get("connection") == "close"
    assert len(under.recorder.published) == 1


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "text/json",
        "application/jsonp",
    ],
)
async def test_wrong_content_type_is_415(content_type: str) -> None:
    under = make_app()
    answer = await call(under, body_of(), headers={"Content-Type": content_type})
    assert_error(answer, 415, "application/json")
    assert under.recorder.published == []


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd+json"]
)
async def test_json_content_types_are_accepted(content_type: str) -> None:
    under = make_app()
    answer = await call(under, body_of(), headers={"Content-Type": content_type})
    assert answer.json == {"status": "queued"}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("token", ["", TOKEN])
async def test_other_methods_are_405_with_a_json_error(method: str, token: str) -> None:
    under = make_app(path_token=token)
    path = f"{WEBHOOK_PATH}/{token}" if token else WEBHOOK_PATH
    answer = await call(under, body_of(), path=path, method=method)
    assert_error(answer, 405, "method not allowed")
    assert "POST" in answer.headers.get("allow", "")
    assert under.recorder.published == []


async def test_broker_unavailable_is_503_and_not_queued() -> None:
    under = make_app()
    under.recorder.broker_down = True
    assert_error(await call(under, body_of()), 503, "retry")
    under.recorder.broker_down = False
    assert (await call(under, body_of())).json == {"status": "queued"}
    assert len(under.recorder.published) == 1


async def test_draining_is_503_and_not_queued() -> None:
    under = make_app(draining=True)
    assert_error(await call(under, body_of()), 503, "shutting down")
    assert under.recorder.published == []


async def test_long_text_is_normalised_and_capped_before_queueing() -> None:
    under = make_app()
    text = "Ба\u0306\x07\u200bx " + "я" * 5000
    answer = await call(under, json.dumps(inbox_payload(77, text)).encode())
    assert answer.json == {"status": "queued"}
    (msg,) = under.recorder.messages
    assert msg.text is not None
    assert len(msg.text) == MAX_TEXT_CHARS
    assert msg.text.startswith(unicodedata.normalize("NFC", "Ба\u0306") + "x я")
    assert unicodedata.is_normalized("NFC", msg.text)


# ---- limits on a real connection (Hypercorn on port 0) -------------------------------------


@asynccontextmanager
async def serve_app(under: AppUnderTest) -> AsyncIterator[str]:
    """Serve the app as the daemon does (its Hypercorn settings); yield the base URL."""
    config = Config(webhook=under.config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(
                hypercorn.trio.serve,
                under.app,
                _hypercorn_config(config),
                shutdown_trigger=stop.wait,
            )
        )
        try:
            yield str(binds[0])
        finally:
            stop.set()


async def open_raw(url: str) -> trio.SocketStream:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:
        pass
    return received


class Chunks(httpx.AsyncByteStream):
    """A streamed request body of unknown length (sent chunked), in 300-byte pieces.

    A class rather than an async generator: when the server answers 413 and closes early the
    stream is left unfinished, and an unfinished async generator warns when collected.
    """

    def __init__(self, body: bytes) -> None:
        self._pieces = iter([body[i : i + 300] for i in range(0, len(body), 300)])

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            return next(self._pieces)
        except StopIteration:
            raise StopAsyncIteration from None


async def post_chunked(client: httpx.AsyncClient, url: str, body: bytes) -> httpx.Response:
    headers = {**JSON_HEADERS, "Transfer-Encoding": "chunked"}
    request = client.build_request("POST", f"{url}{WEBHOOK_PATH}", headers=headers)
    request.stream = Chunks(body)
    return await client.send(request)


async def test_chunked_body_over_the_limit_is_413_and_the_client_can_go_on() -> None:
    under = make_app(port=0, max_body_bytes=1024)
    async with serve_app(under) as url, httpx.AsyncClient() as client:
        small = await post_chunked(client, url, padded_body(1000))
        assert small.request.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in small.request.headers
        assert (small.status_code, small.json()) == (200, {"status": "queued"})
        big = await post_chunked(client, url, padded_body(8000))
        assert big.status_code == 413
        assert big.json() == {"status": "error", "reason": "body larger than 1024 bytes"}
        assert big.headers["Connection"] == "close"
        declared = await client.post(
            f"{url}{WEBHOOK_PATH}", content=padded_body(5000), headers=JSON_HEADERS
        )
        assert declared.status_code == 413
        # the same client goes on (it must not reuse the connection the server is closing)
        after = await client.post(f"{url}{WEBHOOK_PATH}", content=body_of(), headers=JSON_HEADERS)
        assert after.json() == {"status": "queued"}
    assert len(under.recorder.published) == 2


async def test_a_request_whose_body_is_not_read_ends_its_connection() -> None:
    """Found by schemathesis: a 405 (or an OPTIONS answer) to a request with a body, and the
    client's next request on that keep-alive connection got no answer at all. A connection
    whose request body botd did not read now closes after the answer."""
    under = make_app(port=0, path_token=TOKEN)
    good_path = f"{WEBHOOK_PATH}/{TOKEN}"
    unread = [
        ("QUERY", good_path, 405),
        ("PUT", good_path, 405),
        ("OPTIONS", good_path, 200),
        ("POST", WEBHOOK_PATH, 404),
        ("GET", "/health", 200),
    ]
    async with serve_app(under) as url, httpx.AsyncClient() as client:
        with trio.fail_after(10):
            for _ in range(4):
                for method, path, status in unread:
                    answer = await client.request(
                        method, f"{url}{path}", content=body_of(), headers=JSON_HEADERS
                    )
                    assert answer.status_code == status, (method, path)
                    assert answer.headers["Connection"] == "close", (method, path)
                    assert (await client.get(f"{url}{good_path}")).status_code == 405
                ok = await client.post(f"{url}{good_path}", content=body_of(), headers=JSON_HEADERS)
                assert ok.json() == {"status": "queued"}
                assert "close" not in ok.headers.get("Connection", "")
                refused = await client.post(
                    f"{url}{good_path}", content=b"[]", headers=JSON_HEADERS
                )
                assert refused.status_code == 400
                assert "close" not in refused.headers.get("Connection", "")
    assert len(under.recorder.published) == 4


async def test_request_head_over_max_header_bytes_is_431() -> None:
    under = make_app(port=0, max_header_bytes=4096)
    async with serve_app(under) as url, httpx.AsyncClient() as client:
        fits = await client.post(
            f"{url}{WEBHOOK_PATH}", content=body_of(), headers={**JSON_HEADERS, "X-Pad": "a" * 3000}
        )
        assert fits.json() == {"status": "queued"}
        # under 64 KiB the whole head arrives in one read, which h11's limit does not see
        for size in (4096, 20_000, 60_000):
            big = await client.post(
                f"{url}{WEBHOOK_PATH}",
                content=body_of(),
                headers={**JSON_HEADERS, "X-Pad": "a" * size},
            )
            assert big.status_code == 431, size
            assert big.json()["status"] == "error"
        long_url = await client.get(f"{url}/health?{'q' * 5000}")
        assert long_url.status_code == 431
        assert (await client.get(f"{url}/health")).status_code == 200
    assert len(under.recorder.published) == 1


async def test_huge_header_is_rejected_by_hypercorn_and_the_server_lives_on() -> None:
    under = make_app(port=0)
    async with serve_app(under) as url:
        stream = await open_raw(url)
        head = b"POST /webhook/chat2desk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        received = b""
        with trio.fail_after(10):
            try:
                await stream.send_all(head)
                for _ in range(64):  # 1 MiB of one header, in pieces
                    await stream.send_all(b"X-Huge: " + b"h" * 16384 + b"\r\n")
            except trio.BrokenResourceError:
                pass  # the server closed while we were still sending: rejected
            received = await read_until_closed(stream)
        await stream.aclose()
        assert received == b"" or received.startswith(b"HTTP/1.1 431"), received[:200]
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/health")).status_code == 200
            ok = await client.post(f"{url}{WEBHOOK_PATH}", content=body_of(), headers=JSON_HEADERS)
            assert ok.json() == {"status": "queued"}
    assert len(under.recorder.published) == 1


READ_TIMEOUT = 1.0


async def _closed_after(url: str, sent: bytes) -> tuple[float, bytes] | None:
    """Send ``sent`` and stall; (seconds until the server closed, what it sent), or None if it
    kept the connection open for read_timeout + 2 s."""
    stream = await open_raw(url)
    await stream.send_all(sent)
    started = trio.current_time()
    try:
        with trio.move_on_after(READ_TIMEOUT + 2):
            received = await read_until_closed(stream)
            return trio.current_time() - started, received
    finally:
        await stream.aclose()
    return None


async def test_slow_body_is_disconnected_after_read_timeout() -> None:
    under = make_app(port=0, read_timeout_seconds=READ_TIMEOUT)
    head = (
        b"POST /webhook/chat2desk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n"
    )
    async with serve_app(under) as url:
        closed = await _closed_after(url, head + body_of()[:100])
    assert closed is not None, "the server kept a stalled upload open"
    waited, received = closed
    assert waited >= READ_TIMEOUT * 0.9
    assert b" 200 " not in received
    assert under.recorder.published == []


async def test_half_request_line_is_disconnected_after_read_timeout() -> None:
    under = make_app(port=0, read_timeout_seconds=READ_TIMEOUT)
    async with serve_app(under) as url:
        closed = await _closed_after(url, b"POST /webhook/chat")
    assert closed is not None, "a half request line kept the connection open"
    waited, received = closed
    assert waited >= READ_TIMEOUT * 0.9
    assert received == b""


# ---- 3. validation against the running daemon ----------------------------------------------


def _without(key: str) -> dict[str, Any]:
    body = inbox_payload(5001, "hi")
    del body[key]
    return body


def _with(**extra: Any) -> dict[str, Any]:
    body = inbox_payload(5002, "hi")
    body.update(extra)
    return body


BAD_INPUTS: list[tuple[bytes | dict[str, Any], str]] = [
    (b"{not json", "JSON"),
    (b"", "JSON"),
    (b'{"message_id": 1,', "JSON"),
    (b"\xff\xfe{}", "JSON"),
    (b'{"text": "\xc3\x28"}', "JSON"),
    (b"[1, 2, 3]", "JSON object"),
    (b"[]", "JSON object"),
    (b'"from_client"', "JSON object"),
    (b"42", "JSON object"),
    (b"null", "JSON object"),
    (_without("message_id"), "message_id"),
    (_with(message_id=None), "message_id"),
    (_with(message_id="abc"), "message_id"),
    (_with(message_id=-5), "message_id"),
    (_with(message_id=0), "message_id"),
    (_with(message_id=1.5), "message_id"),
    (_with(message_id=True), "message_id"),
    (_with(message_id=[1]), "message_id"),
    (_with(message_id=2**64), "message_id"),
    (_without("client_id"), "client_id"),
    (_with(client_id={}), "client_id"),
    (_with(client_id="12a"), "client_id"),
    (_with(client_id=""), "client_id"),
    (_with(client_id=False), "client_id"),
    (_with(client_id=3.0), "client_id"),
    (_without("type"), "type"),
    (_with(type=5), "type"),
    (_with(type=None), "type"),
    (_with(type=["from_client"]), "type"),
    (_with(text=42), "text"),
    (_with(text=["hi"]), "text"),
    (_with(text={"body": "hi"}), "text"),
    (_with(text=True), "text"),
    (_with(channel_id="abc"), "channel_id"),
    (_with(channel_id=-1), "channel_id"),
    (_with(channel_id=True), "channel_id"),
    (_with(channel_id={}), "channel_id"),
    (_with(channel_id=1.5), "channel_id"),
    (_with(transport=5), "transport"),
    (_with(hook_type=7), "hook_type"),
]

IGNORED_INPUTS: list[tuple[dict[str, Any], str]] = [
    (_with(hook_type="outbox", type="autoreply"), "hook_type='outbox'"),
    (_with(hook_type="outbox", type="system"), "hook_type='outbox'"),
    (_with(type="system"), "type='system'"),
    (_with(type="autoreply"), "type='autoreply'"),
    (_with(type="to_client"), "type='to_client'"),
    (_with(hook_type="new_client"), "hook_type='new_client'"),
    (_with(hook_type="close_dialog", message_id=None, client_id=None), "hook_type"),
    ({"hook_type": "outbox_status", "type": "to_client"}, "hook_type"),
]


def _queued_inputs() -> list[dict[str, Any]]:
    return [
        inbox_payload(6001, "Здравствуйте"),
        inbox_payload("6002", "hi"),  # client_id as a string
        inbox_payload(6003, None, photo="https://cdn.example/img.jpg"),  # media only
        inbox_payload(6004, "", photo="https://cdn.example/img.jpg"),
        inbox_payload(6005, "hi", hook_type=None),
        inbox_payload(6006, "hi", channel_id=""),
        inbox_payload(6007, "hi", extra_data=[]),
    ]


def _client_in_shard(shard: int, start: int) -> int:
    return next(c for c in range(start, start + 100) if shard_of(str(c), 2) == shard)


async def assert_consumers_got_exactly(
    client: httpx.AsyncClient,
    running: Running,
    fake: FakeChat2Desk,
    *,
    handled_before: int,
    queued: int,
) -> None:
    """The consumers handled exactly ``queued`` deliveries since ``handled_before``.

    One last message goes to each shard: a shard handles its messages in order, so once that
    one was answered everything published to the shard before it was handled too, and any
    message queued without a "queued" answer would show up as one delivery too many.
    """
    sentinels = [_client_in_shard(shard, 987_650_000 + 100 * shard) for shard in range(2)]
    replies_before = {s: len(fake.texts_for(s)) for s in sentinels}
    for sentinel in sentinels:
        response = await post_webhook(client, running.url, inbox_payload(sentinel, "hi"))
        assert response.json() == {"status": "queued"}
    with trio.fail_after(20):
        for sentinel in sentinels:
            while len(fake.texts_for(sentinel)) == replies_before[sentinel]:
                await fake.wait_for_requests(len(fake.requests) + 1)
        await running.consumers.wait_handled(handled_before + queued + len(sentinels))
    assert running.consumers.handled - handled_before == queued + len(sentinels)
    for shard in range(2):
        assert await running.broker.queue_depth(running.broker.topology.shard(shard)) == 0
    assert running.consumers.stats.poison == 0


async def test_validation_on_the_running_daemon_queues_exactly_the_200_queued(
    running: Running, fake: FakeChat2Desk
) -> None:
    handled_before = running.consumers.handled
    queued = 0
    async with httpx.AsyncClient() as client:
        for bad, field_name in BAD_INPUTS:
            response = await post_webhook(client, running.url, bad)
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["status"] == "error"
            assert field_name in response.json()["reason"], (bad, response.json())
            assert "Traceback" not in response.text
        for ignored, reason in IGNORED_INPUTS:
            response = await post_webhook(client, running.url, ignored)
            assert response.status_code == 200, (ignored, response.text)
            assert response.json()["status"] == "ignored"
            assert reason in response.json()["reason"]
        for good in _queued_inputs():
            response = await post_webhook(client, running.url, good)
            assert (response.status_code, response.json()) == (200, {"status": "queued"}), good
            queued += 1
        # The outbox echo of a message sent to the customer: ignored, or (with the operator
        # hand-off) queued for the consumer to tell botd's own echo from a human operator.
        echo = _with(hook_type="outbox", type="to_client", operator_id=41164)
        response = await post_webhook(client, running.url, echo)
        assert response.status_code == 200, response.text
        assert response.json()["status"] in ("ignored", "queued"), response.json()
        queued += response.json()["status"] == "queued"
        await assert_consumers_got_exactly(
            client, running, fake, handled_before=handled_before, queued=queued
        )
    for good in _queued_inputs():
        assert fake.texts_for(good["client_id"]), f"no reply to {good['client_id']}"


# ---- 4. non-text customer messages, end to end ---------------------------------------------


NON_TEXT: dict[str, dict[str, Any]] = {
    "photo": {"photo": "https://cdn.example/p.jpg"},
    "sticker": {"sticker": "https://cdn.example/s.webp"},
    "voice": {"audio": "https://cdn.example/v.ogg"},
    "pdf": {"pdf": "https://cdn.example/d.pdf"},
    "attachment": {"attachments": [{"name": "a.jpg", "link": "https://cdn.example/a.jpg"}]},
    "location": {"coordinates": {"lat": 42.8746, "lon": 74.5698}},
    "contact": {"contact": {"phone": "+996555123456", "name": "Peter"}},
}


async def _turn(
    client: httpx.AsyncClient, running: Running, fake: FakeChat2Desk, body: dict[str, Any]
) -> list[str]:
    """Post one message, wait until it is handled; return the replies it produced."""
    before = len(fake.texts_for(body["client_id"]))
    handled = running.consumers.handled
    response = await post_webhook(client, running.url, body)
    assert (response.status_code, response.json()) == (200, {"status": "queued"}), body
    with trio.fail_after(10):
        await running.consumers.wait_handled(handled + 1)
    return fake.texts_for(body["client_id"])[before:]


async def test_non_text_messages_get_a_polite_reply_and_never_break_the_consumer(
    running: Running, fake: FakeChat2Desk
) -> None:
    text_expected = dialog.render(dialog.Reply("text_expected"), "ru")
    ask_address = dialog.render(dialog.Reply("ask_address"), "ru")
    ask_phone = dialog.render(dialog.Reply("ask_phone"), "ru")
    client_id = 8100
    async with httpx.AsyncClient() as client:
        for kind, fields in NON_TEXT.items():
            for text in (None, ""):
                client_id += 1
                greeting = await _turn(
                    client, running, fake, inbox_payload(client_id, "Здравствуйте")
                )
                assert ask_address in greeting
                replies = await _turn(
                    client, running, fake, inbox_payload(client_id, text, **fields)
                )
                assert replies, (kind, text)
                if kind == "location":  # a shared location is an address
                    assert replies == [ask_phone], replies
                elif kind == "contact":  # a shared contact is the phone; the address is next
                    assert replies == [ask_address], replies
                else:
                    assert replies == [text_expected, ask_address], (kind, replies)
        # a conversation that starts with a sticker is greeted like any other
        client_id += 1
        first = await _turn(
            client, running, fake, inbox_payload(client_id, None, **NON_TEXT["sticker"])
        )
        assert ask_address in first
        # and the consumer still takes text after all of that
        moved_on = await _turn(client, running, fake, inbox_payload(client_id, "ул. Токтогула 125"))
        assert moved_on == [ask_phone]
    assert running.consumers.stats.poison == 0
    assert running.consumers.stats.transient_retries == 0
    metrics = running.metrics.render()[0].decode()
    assert 'botd_webhook_requests_total{code="500"}' not in metrics


async def test_text_is_normalised_before_it_reaches_the_dialog_and_the_order(
    running: Running, fake: FakeChat2Desk, config: Config
) -> None:
    client_id = 8300
    raw_address = "ул.\t\tБаи\u0306тик\u200b Баатыра\x07 12,\u00a0\u00a0кв. 4\x00"
    expected = "ул. Байтик Баатыра 12, кв. 4"
    assert unicodedata.normalize("NFC", raw_address) != raw_address
    async with httpx.AsyncClient() as client:
        for text in ("Здравствуйте", raw_address, "0555\u00a0123\u00a0456", "3\x1b", "да"):
            await _turn(client, running, fake, inbox_payload(client_id, text))
    (order,) = orders(config.postgres.dsn)
    assert order["delivery_address"] == expected
    assert order["client_phone"] == "+996555123456"
    assert order["quantity"] == 3
    summary = fake.texts_for(client_id)[-2]
    assert expected in summary


async def test_the_common_case_skips_quarts_request_machinery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A well-formed webhook is answered by the ASGI fast path (botd.webapp.fast_webhook); a
    request it does not take whole (here: no declared length, a chunked body) goes through
    Quart, with the same answer."""
    under = make_app()
    dispatched: list[str] = []
    real = under.app.full_dispatch_request

    async def spy(*args: Any, **kwargs: Any) -> Any:
        dispatched.append("quart")
        return await real(*args, **kwargs)

    monkeypatch.setattr(under.app, "full_dispatch_request", spy)
    answer = await call(under, body_of())
    assert (answer.status, answer.json) == (200, {"status": "queued"})
    assert dispatched == [] and len(under.recorder.published) == 1
    assert under.metrics.render()[0].count(b'botd_webhook_requests_total{code="200"} 1.0') == 1

    async with serve_app(under) as url:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(*_host_port(url))
            body = body_of()
            await stream.send_all(
                f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode()
                + body
                + b"\r\n0\r\n\r\n"
            )
            raw = b""
            while b'"queued"' not in raw:
                raw += await stream.receive_some(4096)
            await stream.aclose()
    assert raw.startswith(b"HTTP/1.1 200") and dispatched == ["quart"]
    assert len(under.recorder.published) == 2


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)
