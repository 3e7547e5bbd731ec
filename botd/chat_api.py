"""Chat2Desk API adapter (aiohttp on the bridge's loop: botd.aio_http) and the reply sender
(docs/design.md §3.3, §3.5).

:class:`ChatApi` makes one call and classifies the answer: success → the Chat2Desk message id;
429 or an "exceeded" body → :class:`RateLimited`; 401/403 or an auth error body →
:class:`~botd.errors.AuthRejected`; a timeout after the request went out, a cut-off answer, a 5xx
other than 503 or a 2xx without success → :class:`~botd.errors.DeliveryUnknown` (it may have
been taken); connect errors and 503 → :class:`~botd.errors.TransientError`; other 4xx and an
error body with HTTP 200 → :class:`~botd.errors.PermanentError`. ``GET /messages`` lists what
the customer was sent (:func:`parse_message_page`, the one parser of that answer);
``POST /tags/assign_to`` puts a tag on a request or a client (``dialog.order_tag``).

:class:`Sender` adds the shared rate limiter, ``chat2desk.attempts`` attempts 1 s / 2 s / 4 s apart
(with jitter), the look-up by ``external_id`` before re-sending after an ambiguous failure, the
process-wide pause while the token is refused, and the caller's guard before every call
(:mod:`botd.send_guard`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, TypeVar

import httpx
import trio

from botd import __version__
from botd.aio_http import AioClient, Answer, JsonClient
from botd.bridge import AsyncioBridge
from botd.config import Chat2DeskConfig
from botd.errors import AuthRejected, DeliveryUnknown, PermanentError, TransientError
from botd.liveness import deliberately_waiting
from botd.ports import Route
from botd.ratelimit import RateLimiter

log = logging.getLogger("botd.chat2desk")

T = TypeVar("T")
# Runs right before each Chat2Desk call for a customer: may wait (another process is mid-send to
# the customer) or raise (the delivery is no longer ours: DeliveryLost).
Guard = Callable[[], Awaitable[None]]

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
    reconciled: int = 0  # sends found already delivered by their external id (not sent again)
    lookups: int = 0  # GET /messages calls made to find out
    auth_failing: bool = False
    auth_reason: str = ""


@dataclass(frozen=True, slots=True)
class Sent:
    """What Chat2Desk answered to one send: the message id (may be "") and the request
    (обращение) the message went into — what a tag is put on; None when the answer did not say
    (the real API may give null) or the message was found by lookup rather than sent."""

    message_id: str
    request_id: int | None


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One message Chat2Desk holds for a customer, as ``GET /messages`` lists it."""

    id: str
    external_id: str | None
    text: str
    type: str


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: tuple[SentMessage, ...]
    total: int
    limit: int
    offset: int


def parse_message_page(payload: Any) -> MessagePage:
    """``{"status":"success","data":[{id,text,type,client_id,external_id,created}],
    "meta":{total,limit,offset}}`` → a page; TransientError if it is not that shape."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        raise TransientError(f"chat2desk message list is not a success: {str(payload)[:200]!r}")
    data, meta = payload.get("data"), payload.get("meta")
    if not isinstance(data, list):
        raise TransientError("chat2desk message list has no data list")
    messages = []
    for item in data:
        if not isinstance(item, dict) or item.get("id") is None:
            continue
        external = item.get("external_id")
        messages.append(
            SentMessage(
                id=str(item["id"]),
                external_id=str(external) if external not in (None, "") else None,
                text=str(item.get("text") or ""),
                type=str(item.get("type") or ""),
            )
        )
    meta = meta if isinstance(meta, dict) else {}

    def number(name: str, default: int) -> int:
        value = meta.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    return MessagePage(
        tuple(messages),
        number("total", len(messages)),
        number("limit", len(messages)),
        number("offset", 0),
    )


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


def _is_auth_error(status: int, message: str) -> bool:
    lowered = message.lower()
    return status in (401, 403) or "auth" in lowered or "token" in lowered


class ChatApi:
    """One Chat2Desk API call at a time per caller; the client pools connections."""

    def __init__(self, config: Chat2DeskConfig, client: JsonClient) -> None:
        self._config = config
        self._client = client
        self._url = config.base_url.rstrip("/") + "/messages"
        self._tags_url = config.base_url.rstrip("/") + "/tags/assign_to"

    async def _call(self, what: str, request: Awaitable[Answer]) -> tuple[int, Any, str]:
        """Make one call; (status, parsed JSON or None, the body's message) or botd's error for
        what every Chat2Desk call can answer: unreachable, rate-limited, token refused, 5xx."""
        try:
            response = await request
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # nothing reached Chat2Desk
            raise TransientError(f"chat2desk unreachable: {type(exc).__name__}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise DeliveryUnknown(f"{what} timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryUnknown(f"{what} cut off: {type(exc).__name__}: {exc}") from exc
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        message = payload.get("message", "") if isinstance(payload, dict) else ""
        message = message if isinstance(message, str) else str(message)
        status = response.status_code
        failed = status >= 400 or (isinstance(payload, dict) and payload.get("status") == "error")
        if status == 429 or "exceeded" in message.lower():
            if "per month" in message.lower():
                raise TransientError(f"chat2desk monthly API quota exhausted: {message}")
            raise RateLimited(
                f"chat2desk rate limit ({status}): {message}",
                _retry_after(response.headers.get("retry-after")),
            )
        if failed and _is_auth_error(status, message):
            raise AuthRejected(f"chat2desk refused the token ({status}): {message[:200]}")
        if status == 503:  # "unavailable": refused before any work was done
            raise TransientError(f"{what} answered {status}")
        if status >= 500:  # a 500, or a proxy's 502/504 that may come after the accept
            raise DeliveryUnknown(f"{what} answered {status}")
        if status >= 400 or failed:
            raise PermanentError(f"{what} answered {status}: {message or response.text[:200]}")
        return status, payload, message

    async def send_message(
        self,
        client_id: str,
        text: str,
        *,
        external_id: str | None = None,
        route: Route | None = None,
        message_type: str = "to_client",
    ) -> str:
        """Send ``text`` to the customer (or, with ``message_type="comment"``, an internal note
        into their dialog that they do not see); return Chat2Desk's message id (may be "")."""
        sent = await self.send_message_sent(
            client_id, text, external_id=external_id, route=route, message_type=message_type
        )
        return sent.message_id

    async def send_message_sent(
        self,
        client_id: str,
        text: str,
        *,
        external_id: str | None = None,
        route: Route | None = None,
        message_type: str = "to_client",
    ) -> Sent:
        """:meth:`send_message`, answering the request id too (a caller that tags the request
        needs it; the answer is the only place it is given)."""
        body: dict[str, Any] = {"client_id": int(client_id), "text": text, "type": message_type}
        if external_id is not None:
            body["external_id"] = external_id
        if route is not None and route.transport:
            body["transport"] = route.transport
        if route is not None and route.channel_id is not None:
            body["channel_id"] = route.channel_id
        status, payload, message = await self._call(
            "chat2desk", self._client.post(self._url, json=body)
        )
        if not isinstance(payload, dict) or payload.get("status") != "success":
            # a 2xx that is neither success nor a readable error: it may have been taken
            raise DeliveryUnknown(f"chat2desk answered {status} without success: {message!r}")
        data = payload.get("data")
        data = data if isinstance(data, dict) else {}
        mid, request_id = data.get("message_id"), data.get("request_id")
        if isinstance(request_id, str) and request_id.isdigit():
            request_id = int(request_id)
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            request_id = None  # null (the real API may say so) or unreadable: not known
        return Sent("" if mid is None else str(mid), request_id)

    async def assign_tag(self, tag_id: int, *, assignee_type: str, assignee_id: int) -> None:
        """Put tag ``tag_id`` on a request or a client (``POST /tags/assign_to``); the answer is
        classified like a send's (an unknown tag id: PermanentError). Putting a tag on twice
        does no harm, so an unclear answer is a plain TransientError (try again)."""
        body = {"tag_ids": [tag_id], "assignee_type": assignee_type, "assignee_id": assignee_id}
        status, payload, message = await self._call(
            "chat2desk tag", self._client.post(self._tags_url, json=body)
        )
        if not isinstance(payload, dict) or payload.get("status") != "success":
            raise TransientError(f"chat2desk tag answered {status} without success: {message!r}")

    async def list_messages(
        self, client_id: str, *, limit: int, offset: int, message_type: str = "to_client"
    ) -> MessagePage:
        """One page of the messages sent to the customer (``GET /messages``) of one type."""
        params: dict[str, str | int] = {
            "client_id": client_id,
            "type": message_type,
            "limit": limit,
            "offset": offset,
        }
        _, payload, _ = await self._call("lookup", self._client.get(self._url, params=params))
        return parse_message_page(payload)


LOOKUP_PAGE = 200  # the most GET /messages gives per page


class Sender:
    """Sends replies through the shared limiter with bounded retries for transient failures.

    Idempotent in effect: a send whose outcome is unknown (:class:`DeliveryUnknown`) is looked up
    by its ``external_id`` before it is sent again. A refused token pauses every send of this
    process (:class:`AuthRejected` at once, no call) except one probe per
    ``chat2desk.auth_retry_seconds``.
    """

    def __init__(self, api: ChatApi, limiter: RateLimiter, config: Chat2DeskConfig) -> None:
        self._api = api
        self._limiter = limiter
        self._config = config
        self._ok = self._retried = self._failed_t = self._failed_p = self._limited = 0
        self._reconciled = self._lookups = 0
        self._auth_reason = ""  # set while Chat2Desk refuses the token
        self._auth_probe_at = 0.0
        self._lookup_unsupported = False

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    @property
    def auth_retry_seconds(self) -> float:
        return self._config.auth_retry_seconds

    @property
    def auth_failure(self) -> str:
        """Why sending is paused ("" while the token works)."""
        return self._auth_reason

    def statistics(self) -> SendStatistics:
        return SendStatistics(
            self._ok,
            self._retried,
            self._failed_t,
            self._failed_p,
            self._limited,
            self._reconciled,
            self._lookups,
            bool(self._auth_reason),
            self._auth_reason,
        )

    async def _limited_call(self, call: Callable[[], Awaitable[T]], guard: Guard | None) -> T:
        """One rate-limited call within ``timeout_seconds``; rate-limit and auth answers pause.
        ``guard`` runs right before the call (it may wait, or raise to stop it)."""
        now = trio.current_time()
        if self._auth_reason:
            if now < self._auth_probe_at:
                raise AuthRejected(f"sending paused: {self._auth_reason}")
            self._auth_probe_at = now + self.auth_retry_seconds  # this call is the probe
        with deliberately_waiting():  # the rate limit and a 429's Retry-After: no hang
            await self._limiter.acquire()
        if guard is not None:
            await guard()
        try:
            with trio.fail_after(self._config.timeout_seconds):
                result = await call()
        except trio.TooSlowError:
            raise DeliveryUnknown(
                f"chat2desk did not answer within {self._config.timeout_seconds}s"
            ) from None
        except RateLimited as exc:
            self._limited += 1
            pause = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_PAUSE
            await self._limiter.pause_for(pause)
            raise
        except AuthRejected as exc:
            if not self._auth_reason:
                log.error("%s; sending paused until it works (replies wait in the outbox)", exc)
            self._auth_reason = str(exc)
            self._auth_probe_at = trio.current_time() + self.auth_retry_seconds
            raise
        if self._auth_reason:
            log.warning("chat2desk accepts the token again; sending resumes")
            self._auth_reason = ""
        return result

    async def _page(self, client_id: str, offset: int, message_type: str) -> MessagePage:
        return await self._api.list_messages(
            client_id, limit=LOOKUP_PAGE, offset=offset, message_type=message_type
        )

    async def find_sent(
        self,
        client_id: str,
        external_ids: tuple[str, ...],
        *,
        guard: Guard | None = None,
        message_type: str = "to_client",
    ) -> dict[str, str]:
        """Which of ``external_ids`` Chat2Desk already holds for the customer: {id: message id}.

        Reads the first page and, when there are more, the last one (the newest messages are at
        one end or the other): at most two rate-limited calls. If the API has no message list
        (a permanent error), nothing is found: botd then sends again (at least once).
        """
        wanted = set(external_ids)
        if not wanted or self._lookup_unsupported:
            return {}
        found: dict[str, str] = {}
        offsets = [0]
        while offsets:
            offset = offsets.pop()
            self._lookups += 1
            try:
                page = await self._limited_call(
                    partial(self._page, client_id, offset, message_type), guard
                )
            except PermanentError as exc:
                log.warning("chat2desk message lookup unavailable (%s): sends are re-sent", exc)
                self._lookup_unsupported = True
                return found
            for m in page.messages:
                if m.external_id in wanted:
                    found[m.external_id] = m.id
            if offset == 0 and len(found) < len(wanted) and page.total > len(page.messages):
                offsets.append(max(len(page.messages), page.total - LOOKUP_PAGE))
        return found

    async def _found_before(
        self,
        client_id: str,
        external_id: str | None,
        *,
        unsure: bool,
        guard: Guard | None,
        message_type: str,
    ) -> str | None:
        """With ``unsure`` (an earlier attempt may have gone through), the id of the message
        Chat2Desk already holds under ``external_id``; None: send it."""
        if not unsure or external_id is None:
            return None
        found = await self.find_sent(
            client_id, (external_id,), guard=guard, message_type=message_type
        )
        if external_id not in found:
            return None
        self._reconciled += 1
        log.info(
            "reply %s to client %s had reached chat2desk; not sent again", external_id, client_id
        )
        return found[external_id]

    async def send_once(
        self,
        client_id: str,
        text: str,
        *,
        external_id: str | None = None,
        route: Route | None = None,
        unsure: bool = False,
        guard: Guard | None = None,
        message_type: str = "to_client",
    ) -> str:
        """One attempt: with ``unsure`` (an earlier attempt may have gone through), look the
        message up by ``external_id`` first and return its id if Chat2Desk has it."""
        found = await self._found_before(
            client_id, external_id, unsure=unsure, guard=guard, message_type=message_type
        )
        if found is not None:
            return found
        mid = await self._limited_call(
            lambda: self._api.send_message(
                client_id, text, external_id=external_id, route=route, message_type=message_type
            ),
            guard,
        )
        self._ok += 1
        return mid

    async def send_once_sent(
        self,
        client_id: str,
        text: str,
        *,
        external_id: str | None = None,
        unsure: bool = False,
        message_type: str = "to_client",
    ) -> Sent:
        """:meth:`send_once` answering the request id as well (to tag the request). A message
        found by the lookup was not answered now: its request id is unknown (None)."""
        found = await self._found_before(
            client_id, external_id, unsure=unsure, guard=None, message_type=message_type
        )
        if found is not None:
            return Sent(found, None)
        sent = await self._limited_call(
            lambda: self._api.send_message_sent(
                client_id, text, external_id=external_id, message_type=message_type
            ),
            None,
        )
        self._ok += 1
        return sent

    async def assign_tag(self, tag_id: int, *, assignee_type: str, assignee_id: int) -> None:
        """One attempt to put a tag on a request or client, through the shared rate limiter and
        the token pause like every call (the caller retries: it is harmless to repeat)."""
        await self._limited_call(
            partial(
                self._api.assign_tag, tag_id, assignee_type=assignee_type, assignee_id=assignee_id
            ),
            None,
        )

    async def send(
        self,
        client_id: str,
        text: str,
        *,
        external_id: str | None = None,
        route: Route | None = None,
        unsure: bool = False,
        guard: Guard | None = None,
    ) -> str:
        """Send with up to ``attempts`` attempts (1 s, 2 s, 4 s … apart, ±25 % jitter).

        Raises PermanentError at once, AuthRejected at once (sending is paused), else the last
        TransientError when every attempt failed — as DeliveryUnknown if any attempt may have
        reached Chat2Desk (the caller keeps ``unsure`` for the next try).
        """
        attempts = self._config.attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self.send_once(
                    client_id,
                    text,
                    external_id=external_id,
                    route=route,
                    unsure=unsure,
                    guard=guard,
                )
            except PermanentError:
                self._failed_p += 1
                raise
            except AuthRejected:
                self._failed_t += 1
                raise
            except TransientError as exc:
                unsure = unsure or isinstance(exc, DeliveryUnknown)
                if attempt == attempts:
                    self._failed_t += 1
                    if unsure and not isinstance(exc, DeliveryUnknown):
                        raise DeliveryUnknown(str(exc)) from exc
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
async def open_chat_api(config: Chat2DeskConfig, bridge: AsyncioBridge) -> AsyncIterator[ChatApi]:
    """The Chat2Desk API over aiohttp on the bridge's loop (:class:`botd.aio_http.AioClient`:
    keep-alive connections, a C parser), closed on exit."""
    headers = {"Authorization": config.token, "User-Agent": f"botd/{__version__}"}
    client = AioClient(bridge, headers=headers, timeout_seconds=config.timeout_seconds)
    await client.open()
    try:
        yield ChatApi(config, client)
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
