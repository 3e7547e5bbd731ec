"""A lean JSON-over-HTTP client for the hot path: httpcore's connection pool, without httpx's
client layer (docs/design.md §9).

botd calls Chat2Desk about once per customer message. httpx builds a ``Request``, a ``URL``,
merges headers, cookies and auth, runs event hooks and wraps every stream on each call; measured
against the project's keep-alive fake that layer costs about 0.4 ms of CPU per call, more than
the HTTP exchange itself (``bench/bench_http_client.py``). :class:`LeanClient` keeps httpcore
(the connection pool, HTTP/1.1 keep-alive and timeouts httpx itself uses) and offers exactly
what :class:`botd.chat_api.ChatApi` calls — ``post(url, json=…)`` and ``get(url, params=…)``,
answering an object with ``status_code``, ``headers``, ``json()`` and ``text`` — so an
``httpx.AsyncClient`` (tests give one with a mock transport) still fits the same place.
httpcore's errors are raised as the httpx errors of the same name, which is what callers catch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import httpcore
import httpx
import msgspec

# httpcore error → the httpx error callers know (httpx maps them the same way)
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
)

_encode = msgspec.json.encode
_decode = msgspec.json.decode


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
class LeanAnswer:
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


class LeanClient:
    """POST/GET JSON with fixed headers over a keep-alive connection pool."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        timeout_seconds: float,
        max_connections: int = 32,
        max_keepalive_connections: int = 16,
    ) -> None:
        base = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self._json_headers = [*base, (b"Content-Type", b"application/json")]
        self._headers = base
        t = timeout_seconds
        self._extensions = {"timeout": {"connect": t, "read": t, "write": t, "pool": t}}
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=30.0,
        )

    async def post(self, url: str, *, json: Any) -> LeanAnswer:
        return await self._request("POST", url, self._json_headers, _encode(json))

    async def get(self, url: str, *, params: Mapping[str, str | int]) -> LeanAnswer:
        return await self._request("GET", f"{url}?{urlencode(params)}", self._headers, None)

    async def _request(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> LeanAnswer:
        if body is not None:
            headers = [*headers, (b"Content-Length", str(len(body)).encode())]
        try:
            response = await self._pool.request(
                method, url, headers=headers, content=body, extensions=self._extensions
            )
        except httpcore.TimeoutException as exc:
            raise _httpx_error(exc) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise _httpx_error(exc) from exc
        answer_headers = _Headers(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers
        )
        return LeanAnswer(response.status, answer_headers, response.content)

    async def aclose(self) -> None:
        await self._pool.aclose()


def _httpx_error(exc: Exception) -> httpx.HTTPError:
    for core, mapped in _ERRORS:
        if isinstance(exc, core):
            return mapped(str(exc) or type(exc).__name__)
    return httpx.TransportError(str(exc) or type(exc).__name__)
