"""Sending replies (docs/design.md §3.5–3.6): classification, inline retries, 429 pauses, the
limiter.

Two halves:
- under ``autojump_clock`` with an in-memory httpx transport (no sockets, so simulated time is
  exact): :class:`ChatApi`'s classification of answers, :class:`Sender`'s 1 s / 2 s / 4 s
  (±25 %) backoff and timeouts, and the shared pause after a rate-limit answer;
- against the Chat2Desk fake over real HTTP on loopback (real clock, real waits kept short):
  the same behaviour end to end, and the limiter paced against the fake's enforced window.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import botd.ratelimit
import botd.testing.fake_chat2desk
from botd.chat_api import (
    DEFAULT_RATE_LIMIT_PAUSE,
    ChatApi,
    RateLimited,
    Sender,
)
from botd.config import Chat2DeskConfig
from botd.errors import AuthRejected, DeliveryUnknown, PermanentError, TransientError
from botd.ratelimit import TokenBucket
from botd.testing.fake_chat2desk import FakeChat2Desk, RecordedRequest
from tests.conftest import OpenApi
from tests.helpers import max_in_any_window

TOKEN = "test-token"
CLIENT = "4242"
OK_BODY = {"status": "success", "data": {"message_id": 777, "client_id": 4242}}
EXCEEDED = {"status": "error", "message": "Number of API requests exceeded"}


def c2d_config(base_url: str = "http://chat2desk.invalid/v1", **kw: Any) -> Chat2DeskConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "token": TOKEN,
        "timeout_seconds": 2.0,
        "requests_per_minute": 60000,
        "burst": 1000,
        "attempts": 3,
    }
    values.update(kw)
    return Chat2DeskConfig(**values)


# ---- a scripted in-memory Chat2Desk (simulated time) ---------------------------------------


Step = httpx.Response | str  # a response, or "hang" / "connect-error"


@dataclass
class Scripted:
    """Answers requests from a script (then 200 success), recording ``trio.current_time()``."""

    script: list[Step] = field(default_factory=list)
    latency: float = 0.0
    started: list[float] = field(default_factory=list)
    answered: list[tuple[float, int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.started.append(trio.current_time())
        self.texts.append(str(httpx.Response(200, content=request.content).json()["text"]))
        step: Step = self.script.pop(0) if self.script else httpx.Response(200, json=OK_BODY)
        if step == "hang":
            await trio.sleep_forever()
        if step == "connect-error":
            raise httpx.ConnectError("connection refused", request=request)
        assert isinstance(step, httpx.Response)
        if self.latency:
            await trio.sleep(self.latency)
        self.answered.append((trio.current_time(), step.status_code))
        return step


def make_sender(
    scripted: Scripted, limiter: TokenBucket | None = None, **kw: Any
) -> tuple[Sender, httpx.AsyncClient]:
    config = c2d_config(**kw)
    client = httpx.AsyncClient(transport=httpx.MockTransport(scripted))
    api = ChatApi(config, client)
    bucket = limiter or TokenBucket(config.requests_per_minute, config.burst)
    return Sender(api, bucket, config), client


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# ---- classification --------------------------------------------------------------------------

RETRY_DATE = "<an HTTP date 30 s from now>"  # made when the test runs, not at collection


@pytest.mark.parametrize(
    ("response", "expected", "retry_after"),
    [
        (httpx.Response(200, json=OK_BODY), "777", None),
        (httpx.Response(200, json={"status": "success", "data": {}}), "", None),
        (httpx.Response(429, json=EXCEEDED, headers={"Retry-After": "7"}), RateLimited, 7.0),
        (httpx.Response(429, json=EXCEEDED), RateLimited, None),
        (httpx.Response(429, json=EXCEEDED, headers={"Retry-After": "99999"}), RateLimited, 300),
        (httpx.Response(200, json=EXCEEDED, headers={"Retry-After": "3"}), RateLimited, 3.0),
        (httpx.Response(429, text="slow", headers={"Retry-After": RETRY_DATE}), RateLimited, 30),
        (httpx.Response(400, json={"status": "error", "message": "Limit per month exceeded"}),
         TransientError, None),
        # a 5xx or a broken 200 may come after Chat2Desk took the message: look before resending
        (httpx.Response(500, text="<html>oops</html>"), DeliveryUnknown, None),
        (httpx.Response(502, text="<html>Bad gateway</html>"), DeliveryUnknown, None),
        # but a 503 is "unavailable": nothing was taken
        (httpx.Response(503, json={"status": "error", "message": "down"}), TransientError, None),
        (httpx.Response(200, text="<html>captive portal</html>"), DeliveryUnknown, None),
        # HTTP 200 with an error body is a refusal: retrying the same request won't help
        (httpx.Response(200, json={"status": "error", "message": "?"}), PermanentError, None),
        (httpx.Response(400, json={"status": "error", "message": "Validation failed"}),
         PermanentError, None),
        # a refused token pauses sending (AuthRejected), whatever the HTTP status says
        (httpx.Response(401, json={"status": "error", "message": "You need to auth"}),
         AuthRejected, None),
        (httpx.Response(200, json={"status": "error", "message": "You need to auth"}),
         AuthRejected, None),
        (httpx.Response(403, text="forbidden"), AuthRejected, None),
        (httpx.Response(404, json={"status": "error", "message": "Page not found"}),
         PermanentError, None),
        (httpx.Response(422, json={"status": "error", "message": "bad"}), PermanentError, None),
        ("connect-error", TransientError, None),
    ],
)  # fmt: skip
async def test_chat_api_classifies_answers(
    response: Step, expected: str | type[Exception], retry_after: float | None
) -> None:
    if isinstance(response, httpx.Response) and response.headers.get("Retry-After") == RETRY_DATE:
        response = httpx.Response(
            response.status_code,
            content=response.content,
            headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)},
        )
    scripted = Scripted([response])
    async with httpx.AsyncClient(transport=httpx.MockTransport(scripted)) as client:
        api = ChatApi(c2d_config(), client)
        if isinstance(expected, str):
            assert await api.send_message(CLIENT, "hello") == expected
            return
        with pytest.raises(expected) as info:
            await api.send_message(CLIENT, "hello")
    error = info.value
    assert type(error) is expected, repr(error)
    if expected is RateLimited:
        assert isinstance(error, RateLimited)
        if retry_after is None:
            assert error.retry_after is None
        else:
            assert error.retry_after is not None
            assert abs(error.retry_after - retry_after) < 2
    else:
        assert not isinstance(error, RateLimited)
    if expected is PermanentError and isinstance(response, httpx.Response):
        assert str(response.status_code) in str(error)  # the answer is recorded in the reason


async def test_chat_api_request_shape() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=OK_BODY)

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), headers={"Authorization": TOKEN}
    ) as client:
        await ChatApi(c2d_config("http://c2d.invalid/v1/"), client).send_message("17", "привет")
    (request,) = seen
    assert request.method == "POST" and str(request.url) == "http://c2d.invalid/v1/messages"
    assert request.headers["authorization"] == TOKEN
    assert httpx.Response(200, content=request.content).json() == {
        "client_id": 17,
        "text": "привет",
        "type": "to_client",
    }


# ---- inline retries (simulated time) ---------------------------------------------------------


async def test_5xx_twice_then_success_is_one_send_after_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scripted = Scripted([httpx.Response(503, text="x"), httpx.Response(502, text="y")])
    sender, client = make_sender(scripted)
    async with client:
        t0 = trio.current_time()
        assert await sender.send(CLIENT, "hello") == "777"
    assert scripted.texts == ["hello"] * 3
    first, second = gaps(scripted.started)
    assert 0.75 <= first <= 1.25  # 1 s ± 25 %
    assert 1.5 <= second <= 2.5  # 2 s ± 25 %
    assert scripted.started[0] == t0
    stats = sender.statistics()
    assert (stats.sent_ok, stats.retried, stats.failed_transient, stats.failed_permanent) == (
        1,
        2,
        0,
        0,
    )


async def test_timeouts_twice_then_success(autojump_clock: trio.testing.MockClock) -> None:
    scripted = Scripted(["hang", "hang"])
    sender, client = make_sender(scripted, timeout_seconds=2.0)
    async with client:
        assert await sender.send(CLIENT, "hello") == "777"
    first, second = gaps(scripted.started)
    # each attempt is cut at timeout_seconds, then the 1 s / 2 s backoff (±25 %) runs
    assert 2.0 + 0.75 <= first <= 2.0 + 1.25
    assert 2.0 + 1.5 <= second <= 2.0 + 2.5
    assert sender.statistics().retried == 2 and sender.statistics().sent_ok == 1


async def test_slow_answer_within_timeout_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scripted = Scripted(latency=1.9)
    sender, client = make_sender(scripted, timeout_seconds=2.0)
    async with client:
        assert await sender.send(CLIENT, "hello") == "777"
    assert len(scripted.started) == 1 and sender.statistics().retried == 0


@pytest.mark.parametrize("attempts", [1, 3, 5])
async def test_transient_failures_use_every_attempt_then_raise(
    autojump_clock: trio.testing.MockClock, attempts: int
) -> None:
    scripted = Scripted([httpx.Response(503, text="down")] * 10)
    sender, client = make_sender(scripted, attempts=attempts)
    async with client:
        with pytest.raises(TransientError) as info:
            await sender.send(CLIENT, "hello")
    assert not isinstance(info.value, PermanentError)
    assert "503" in str(info.value)
    assert len(scripted.started) == attempts
    for k, gap in enumerate(gaps(scripted.started)):
        assert 0.75 * 2**k <= gap <= 1.25 * 2**k, (k, gap)
    stats = sender.statistics()
    assert (stats.sent_ok, stats.retried, stats.failed_transient) == (0, attempts - 1, 1)


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_permanent_errors_are_not_retried(
    autojump_clock: trio.testing.MockClock, status: int
) -> None:
    scripted = Scripted([httpx.Response(status, json={"status": "error", "message": "nope"})])
    sender, client = make_sender(scripted)
    async with client:
        with pytest.raises(PermanentError, match=str(status)):
            await sender.send(CLIENT, "hello")
    assert len(scripted.started) == 1
    stats = sender.statistics()
    assert (stats.failed_permanent, stats.retried, stats.sent_ok) == (1, 0, 0)


# ---- 429: one pause for every sender (simulated time) ----------------------------------------


@pytest.mark.parametrize(
    ("limited", "pause"),
    [
        (httpx.Response(429, json=EXCEEDED, headers={"Retry-After": "7"}), 7.0),
        (httpx.Response(200, json=EXCEEDED, headers={"Retry-After": "5"}), 5.0),
        (httpx.Response(429, json=EXCEEDED), DEFAULT_RATE_LIMIT_PAUSE),
    ],
)
async def test_rate_limit_answer_pauses_every_sender(
    autojump_clock: trio.testing.MockClock, limited: httpx.Response, pause: float
) -> None:
    scripted = Scripted([limited], latency=0.05)
    limiter = TokenBucket(600, 1)  # 10/s: senders queue at the bucket
    senders = [make_sender(scripted, limiter) for _ in range(4)]
    results: list[str] = []

    async def run(sender: Sender, n: int) -> None:
        for i in range(3):
            results.append(await sender.send(CLIENT, f"s{n}-{i}"))

    async with trio.open_nursery() as nursery:
        for n, (sender, _) in enumerate(senders):
            nursery.start_soon(run, sender, n)
    for _, client in senders:
        await client.aclose()

    assert len(results) == 12  # every reply went out in the end
    (t_limited,) = [t for t, status in scripted.answered if status == limited.status_code][:1]
    after = [t for t in scripted.started if t > t_limited]
    assert len(after) == 12  # 11 other sends + the retry of the limited one
    assert min(after) >= t_limited + pause - 1e-9
    # the pause hit every sender: each one's later sends were held
    assert {text.split("-")[0] for text, t in zip(scripted.texts, scripted.started, strict=True)
            if t > t_limited} == {"s0", "s1", "s2", "s3"}  # fmt: skip
    assert sum(s.statistics().rate_limited for s, _ in senders) == 1
    stats = limiter.statistics()
    assert stats.pauses == 1 and stats.paused_until == pytest.approx(t_limited + pause)
    assert stats.total_wait_seconds >= pause  # the limiter's wait is accounted


# ---- against the fake over real HTTP (real clock) --------------------------------------------


async def test_fake_5xx_twice_then_success(fake: FakeChat2Desk, open_api: OpenApi) -> None:
    config = c2d_config(fake.base_url)
    fake.fail_next(2, status=503)
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        mid = await sender.send(CLIENT, "hello")
    assert mid.isdigit()
    requests = fake.requests
    assert [r.status for r in requests] == [503, 503, 200]
    assert fake.texts_for(CLIENT) == ["hello"]
    first, second = gaps([r.monotonic for r in requests])
    print(f"\ninline backoff over HTTP (5xx): {first:.3f}s, {second:.3f}s")
    assert 0.75 <= first <= 1.25 + 0.2
    assert 1.5 <= second <= 2.5 + 0.2
    assert sender.statistics().retried == 2 and sender.statistics().sent_ok == 1


async def test_fake_timeouts_twice_then_success(fake: FakeChat2Desk, open_api: OpenApi) -> None:
    config = c2d_config(fake.base_url, timeout_seconds=0.5)
    fake.hang_next(2)
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        await sender.send(CLIENT, "hello")
    requests = fake.requests
    assert [r.status for r in requests] == [None, None, 200]  # two hung, one answered
    assert fake.texts_for(CLIENT) == ["hello"]
    first, second = gaps([r.monotonic for r in requests])
    print(f"\ninline backoff over HTTP (timeouts of 0.5s): {first:.3f}s, {second:.3f}s")
    assert 0.5 + 0.75 <= first <= 0.5 + 1.25 + 0.2
    assert 0.5 + 1.5 <= second <= 0.5 + 2.5 + 0.2


@pytest.mark.parametrize("status", [400, 404])
async def test_fake_permanent_error_is_one_request(
    fake: FakeChat2Desk, open_api: OpenApi, status: int
) -> None:
    config = c2d_config(fake.base_url)
    fake.reject_next(1, status=status)
    async with open_api(config) as api:
        sender = Sender(api, TokenBucket(60000, 1000), config)
        with pytest.raises(PermanentError, match=f"{status}: \\w"):
            await sender.send(CLIENT, "hello")
    assert [r.status for r in fake.requests] == [status]
    assert fake.delivered() == []


@pytest.mark.parametrize("exceeded_with_200", [False, True])
async def test_fake_rate_limit_pauses_every_sender(
    fake: FakeChat2Desk, exceeded_with_200: bool, open_api: OpenApi
) -> None:
    config = c2d_config(fake.base_url, requests_per_minute=1200, burst=1)  # 20/s
    fake.rate_limit_next(1, retry_after=1, exceeded_with_200=exceeded_with_200)
    async with open_api(config) as api:
        limiter = TokenBucket(config.requests_per_minute, config.burst)
        senders = [Sender(api, limiter, config) for _ in range(3)]

        async def run(n: int) -> None:
            for i in range(3):
                await senders[n].send(str(100 + n), f"m{i}")

        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(run, n)
    requests = fake.requests
    limited = [r for r in requests if not r.delivered]
    assert len(limited) == 1 and limited[0].status == (200 if exceeded_with_200 else 429)
    later = [r for r in requests if r.seq > limited[0].seq]
    assert {r.client_id for r in later} == {"100", "101", "102"}
    held = min(r.monotonic for r in later) - limited[0].monotonic
    print(f"\nfirst request after a 429 with Retry-After 1: {held:.3f}s later")
    assert held >= 1.0
    assert len(fake.delivered()) == 9
    assert sum(s.statistics().rate_limited for s in senders) == 1


async def drive_backlog(
    fake: FakeChat2Desk, config: Chat2DeskConfig, n: int, open_api: OpenApi
) -> list[RecordedRequest]:
    """Send ``n`` replies through 8 concurrent senders sharing one limiter."""
    queue = list(range(n))
    async with open_api(config) as api:
        limiter = TokenBucket(config.requests_per_minute, config.burst)

        async def worker() -> None:
            sender = Sender(api, limiter, config)
            while queue:
                i = queue.pop(0)
                await sender.send(str(1000 + i % 50), f"reply {i}")

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(worker)
    return fake.requests


# The daemon's limiter is the shared one (test_shared_limiter.py, faults/test_shared_limit.py);
# these two run the in-process TokenBucket against the fake's window: `scripts/chaos pytest`.
@pytest.mark.slow
async def test_limiter_end_to_end_paces_a_backlog(fake: FakeChat2Desk, open_api: OpenApi) -> None:
    rpm, burst, n = 600, 5, 65  # 10/s for ~6 s
    fake.enforce_rate_limit(rpm)
    requests = await drive_backlog(
        fake, c2d_config(fake.base_url, requests_per_minute=rpm, burst=burst), n, open_api
    )
    assert len(requests) == n and all(r.delivered for r in requests)
    assert fake.limit_violations == 0
    times = [r.monotonic for r in requests]
    rate = rpm / 60
    # the bucket's shape at the fake: any interval of length w holds at most burst + rate·w
    for w in (0.5, 1.0, 2.0, 5.0):
        assert max_in_any_window(times, w) <= burst + math.ceil(rate * w) + 1, w
    # under a backlog, after the burst, the rate is the configured one
    steady = sorted(times)[burst:]
    utilisation = (len(steady) - 1) / (steady[-1] - steady[0]) / rate
    print(f"\nlimiter utilisation at {rpm}/min under backlog: {utilisation:.2%}")
    assert 0.95 <= utilisation <= 1.02


@pytest.mark.slow
async def test_limiter_window_cap_end_to_end(
    fake: FakeChat2Desk, monkeypatch: pytest.MonkeyPatch, open_api: OpenApi
) -> None:
    """The sliding-window cap at a window boundary, with both 60 s windows scaled to 4 s.

    Under a backlog the limiter's next burst is due exactly one window after the first one; the
    fake counts *arrivals*, so latency differences (the first requests open connections) put
    limit + 1 in its window unless the limiter keeps a margin (scaled here as 1 s is to 60 s).
    """
    window = 4.0
    monkeypatch.setattr(botd.ratelimit, "WINDOW_SECONDS", window)
    monkeypatch.setattr(botd.ratelimit, "WINDOW_MARGIN_SECONDS", window / 60)
    monkeypatch.setattr(botd.testing.fake_chat2desk, "RATE_WINDOW_SECONDS", window)
    limit, burst, n = 40, 10, 100  # 40 per 4 s window = 10/s, bursts of 10
    fake.enforce_rate_limit(limit)
    config = c2d_config(fake.base_url, requests_per_minute=limit, burst=burst, attempts=1)
    requests = await drive_backlog(fake, config, n, open_api)
    times = sorted(r.monotonic for r in requests)
    assert fake.limit_violations == 0 and all(r.delivered for r in requests)
    assert max_in_any_window(times, window) == limit  # the cap is reached, never passed
    # utilisation: the sends in the run's whole windows over what those windows allow
    whole = math.floor((times[-1] - times[0]) / window)
    in_whole = sum(1 for t in times if t < times[0] + whole * window)
    utilisation = in_whole / (whole * limit)
    print(
        f"\nscaled window ({window:g}s): {n} sends in {times[-1] - times[0]:.2f}s, "
        f"{in_whole} in {whole} whole windows = {utilisation:.2%} of the limit, "
        f"violations {fake.limit_violations}"
    )
    assert utilisation >= 0.95
