"""The Chat2Desk client on the asyncio side: aiohttp, through the bridge (docs/design.md §9).

botd calls Chat2Desk about 1.2 times per customer message. Measured end to end (py-spy, the
same run shape), a call through httpcore + h11 on Trio cost about 0.8 ms of CPU, through
aiohttp (its HTTP parser is C) on the loop about 0.4 ms, the bridge crossing included.
:class:`AioClient` offers exactly what :class:`botd.chat_api.ChatApi` calls (:class:`JsonClient`:
``post(url, json=…)`` and ``get(url, params=…)``, answering status, headers, text and JSON; an
``httpx.AsyncClient``, which tests give a mock transport, fits the same place) and raises
aiohttp's errors as the httpx errors :meth:`ChatApi._call` classifies:

- nothing reached Chat2Desk (refused, no route, no free connection or no connection within
  the timeout): ``httpx.ConnectError`` / ``httpx.ConnectTimeout``;
- anything later (no answer in time, the connection cut, a broken answer): a read error or
  timeout, so the reply is *unknown* and the sender looks it up before sending again.

Every call runs on the loop as one bridged call; a Trio cancel (a deadline, the drain) cancels
the aiohttp request and waits until it has unwound (:mod:`botd.bridge`), and aiohttp closes a
connection whose request was cancelled half-way, so no later call reads its answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import httpx
import msgspec

from botd.bridge import AsyncioBridge

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_JSON = {"Content-Type": "application/json"}


class Answer(Protocol):
    """What :class:`botd.chat_api.ChatApi` reads of an HTTP answer (``httpx.Response`` fits)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class JsonClient(Protocol):
    """The two calls :class:`botd.chat_api.ChatApi` makes (``httpx.AsyncClient`` fits)."""

    async def post(self, url: str, *, json: Any) -> Answer: ...

    async def get(self, url: str, *, params: Mapping[str, str | int]) -> Answer: ...


class _Headers(dict[str, str]):
    """Response headers by lower-case name (what :class:`Answer` needs of them)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    status_code: int
    headers: _Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not (like httpx)."""
        try:
            return _decode(self.content)
        except msgspec.DecodeError as exc:
            raise ValueError(str(exc)) from exc


def _httpx_error(exc: BaseException) -> httpx.HTTPError:
    """aiohttp's error (or the loop's timeout) → the httpx error of the same meaning."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connect, or waiting for the pool
        return httpx.ConnectTimeout(text)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS
        return httpx.ConnectError(text)
    if isinstance(exc, TimeoutError):  # a read (SocketTimeoutError) or the total: maybe sent
        return httpx.ReadTimeout(text)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(text)
    return httpx.ReadError(text)


class AioClient:
    """POST/GET JSON with fixed headers through an aiohttp session on the bridge's loop."""

    def __init__(
        self,
        bridge: AsyncioBridge,
        *,
        headers: Mapping[str, str],
        timeout_seconds: float,
        max_connections: int = 32,
    ) -> None:
        self._bridge = bridge
        self._headers = dict(headers)
        t = timeout_seconds
        # per phase, like httpcore's: connect (pool wait included), then each read; the total
        # bounds a server that trickles its answer
        self._timeout = aiohttp.ClientTimeout(total=3 * t, connect=t, sock_connect=t, sock_read=t)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def _aio_open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=30.0, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=self._timeout, connector=connector
        )

    async def open(self) -> None:
        await self._bridge.run(self._aio_open)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await self._bridge.run(session.close)

    async def post(self, url: str, *, json: Any) -> JsonAnswer:
        return await self._bridge.run(self._aio_request, "POST", url, _encode(json), _JSON)

    async def get(self, url: str, *, params: Mapping[str, str | int]) -> JsonAnswer:
        return await self._bridge.run(self._aio_request, "GET", f"{url}?{urlencode(params)}")

    async def _aio_request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JsonAnswer:
        if self._session is None:
            raise httpx.ConnectError("the Chat2Desk client is closed")
        try:
            async with self._session.request(method, url, data=body, headers=headers) as answer:
                content = await answer.read()
                status = answer.status
                raw = answer.raw_headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _httpx_error(exc) from exc
        answer_headers = _Headers(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw
        )
        return JsonAnswer(status, answer_headers, content)
