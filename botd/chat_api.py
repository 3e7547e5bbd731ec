"""Chat2Desk API adapter (httpx on Trio) and the reply sender with retries and the rate limit.

:class:`ChatApi` makes one ``POST {base_url}/messages`` and classifies the answer:
success → the Chat2Desk message id; 429 or an "exceeded" body → :class:`RateLimited`;
connect errors, timeouts, 5xx, unparsable bodies → :class:`~botd.errors.TransientError`;
other 4xx → :class:`~botd.errors.PermanentError`. :class:`Sender` adds the shared token bucket
and ``chat2desk.attempts`` attempts 1 s / 2 s / 4 s apart (with jitter) for transient failures.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import trio

from botd import __version__
from botd.config import Chat2DeskConfig
from botd.errors import PermanentError, TransientError
from botd.ratelimit import TokenBucket

log = logging.getLogger("botd.chat2desk")

DEFAULT_RATE_LIMIT_PAUSE = 2.0
MAX_RATE_LIMIT_PAUSE = 300.0


class RateLimited(TransientError):
    """Chat2Desk said we are over its limit; ``retry_after`` seconds if it said how long."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SendStatistics:
    sent_ok: int
    retried: int
    failed_transient: int
    failed_permanent: int
    rate_limited: int


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, min(float(value), MAX_RATE_LIMIT_PAUSE))
    except ValueError:
        pass
    try:
        return max(
            0.0, min(parsedate_to_datetime(value).timestamp() - time.time(), MAX_RATE_LIMIT_PAUSE)
        )
    except (TypeError, ValueError):
        return None


class ChatApi:
    """One Chat2Desk API call at a time per caller; the client pools connections."""

    def __init__(self, config: Chat2DeskConfig, client: httpx.AsyncClient) -> None:
        self._config = config
        self._client = client
        self._url = config.base_url.rstrip("/") + "/messages"

    async def send_message(self, client_id: str, text: str) -> str:
        """Send ``text`` to the customer; return Chat2Desk's message id (may be "")."""
        body = {"client_id": int(client_id), "text": text, "type": "to_client"}
        try:
            response = await self._client.post(self._url, json=body)
        except httpx.TimeoutException as exc:
            raise TransientError(f"chat2desk timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise TransientError(f"chat2desk unreachable: {type(exc).__name__}: {exc}") from exc
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        message = payload.get("message", "") if isinstance(payload, dict) else ""
        message = message if isinstance(message, str) else str(message)
        if response.status_code == 429 or "exceeded" in message.lower():
            if "per month" in message.lower():
                raise TransientError(f"chat2desk monthly API quota exhausted: {message}")
            raise RateLimited(
                f"chat2desk rate limit ({response.status_code}): {message}",
                _retry_after(response.headers.get("retry-after")),
            )
        if response.status_code >= 500:
            raise TransientError(f"chat2desk answered {response.status_code}")
        if response.status_code >= 400:
            raise PermanentError(
                f"chat2desk answered {response.status_code}: {message or response.text[:200]}"
            )
        if not isinstance(payload, dict) or payload.get("status") != "success":
            raise TransientError(
                f"chat2desk answered {response.status_code} without success: {message!r}"
            )
        data = payload.get("data")
        mid = data.get("message_id") if isinstance(data, dict) else None
        return "" if mid is None else str(mid)


class Sender:
    """Sends replies through the shared limiter with bounded retries for transient failures."""

    def __init__(self, api: ChatApi, limiter: TokenBucket, config: Chat2DeskConfig) -> None:
        self._api = api
        self._limiter = limiter
        self._config = config
        self._ok = self._retried = self._failed_t = self._failed_p = self._limited = 0

    @property
    def limiter(self) -> TokenBucket:
        return self._limiter

    def statistics(self) -> SendStatistics:
        return SendStatistics(
            self._ok, self._retried, self._failed_t, self._failed_p, self._limited
        )

    async def send_once(self, client_id: str, text: str) -> str:
        """One rate-limited attempt; a rate-limit answer pauses every sender."""
        await self._limiter.acquire()
        try:
            with trio.fail_after(self._config.timeout_seconds):
                mid = await self._api.send_message(client_id, text)
        except trio.TooSlowError:
            raise TransientError(
                f"chat2desk did not answer within {self._config.timeout_seconds}s"
            ) from None
        except RateLimited as exc:
            self._limited += 1
            pause = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_PAUSE
            self._limiter.pause_until(trio.current_time() + pause)
            raise
        self._ok += 1
        return mid

    async def send(self, client_id: str, text: str) -> str:
        """Send with up to ``attempts`` attempts (1 s, 2 s, 4 s … apart, ±25 % jitter).

        Raises the last TransientError when every attempt failed, PermanentError at once.
        """
        attempts = self._config.attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self.send_once(client_id, text)
            except PermanentError:
                self._failed_p += 1
                raise
            except TransientError as exc:
                if attempt == attempts:
                    self._failed_t += 1
                    raise
                self._retried += 1
                delay = 2.0 ** (attempt - 1) * random.uniform(0.75, 1.25)
                log.info(
                    "send to client %s failed (%s); attempt %d/%d in %.1fs",
                    client_id,
                    exc,
                    attempt + 1,
                    attempts,
                    delay,
                )
                await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def open_chat_api(config: Chat2DeskConfig) -> AsyncIterator[ChatApi]:
    headers = {"Authorization": config.token, "User-Agent": f"botd/{__version__}"}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
    timeout = httpx.Timeout(config.timeout_seconds)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout) as client:
        yield ChatApi(config, client)
