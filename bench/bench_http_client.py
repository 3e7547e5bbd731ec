"""The reply client alone: CPU per Chat2Desk call, botd's and the ones it replaced.

- ``aiohttp``: :class:`botd.aio_http.AioClient`, aiohttp on the loop through the bridge, what
  ``botd run`` uses;
- ``httpcore``: httpcore's connection pool on Trio (h11), without httpx's client layer (the
  client botd used before);
- ``httpx``: ``httpx.AsyncClient`` on Trio.

Each POSTs the same reply body to the project's fake Chat2Desk (in its own process, keep-alive
connections like the real API) one call at a time, rounds alternating, with Trio the guest of
the uvloop loop as in ``botd run``; printed: the medians of the client's CPU per call (this
process only) and wall time per call, and the ratios.

    python -m bench.bench_http_client [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpcore
import httpx
import msgspec

from bench.common import median
from botd.aio_http import AioClient, JsonAnswer, _Headers
from botd.bridge import open_bridge, run_as_guest

TOKEN = "bench-token"
BODY = {
    "client_id": 17340089,
    "text": "Спасибо! Напишите, пожалуйста, адрес доставки: улица, дом, квартира.",
    "type": "to_client",
    "external_id": "botd-123456-0",
}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(post: Callable[[], Awaitable[Any]], calls: int) -> tuple[float, float]:
    for _ in range(100):  # warm-up: connections open, code paths hot
        await post()
    wall0, cpu0 = time.perf_counter(), cpu()
    for _ in range(calls):
        await post()
    return (cpu() - cpu0) / calls, (time.perf_counter() - wall0) / calls


class HttpcoreClient:
    """httpcore's pool with fixed headers: a JSON POST, the answer read whole."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self._headers.append((b"Content-Type", b"application/json"))
        self._pool = httpcore.AsyncConnectionPool(max_connections=32, keepalive_expiry=30.0)

    async def post(self, url: str, *, json: Any) -> JsonAnswer:
        body = msgspec.json.encode(json)
        headers = [*self._headers, (b"Content-Length", str(len(body)).encode())]
        answer = await self._pool.request("POST", url, headers=headers, content=body)
        return JsonAnswer(answer.status, _Headers(), answer.content)

    async def aclose(self) -> None:
        await self._pool.aclose()


async def measure_all(base_url: str, args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "httpcore": [], "httpx": []}
    async with open_bridge() as bridge:
        url = base_url + "/messages"
        headers = {"Authorization": TOKEN, "User-Agent": "botd-bench"}
        aio = AioClient(bridge, headers=headers, timeout_seconds=10)
        await aio.open()
        core = HttpcoreClient(headers)
        async with httpx.AsyncClient(headers=headers, timeout=10) as hx:
            try:
                for _ in range(args.rounds):
                    for name, client in (("aiohttp", aio), ("httpcore", core), ("httpx", hx)):

                        async def post(c: Any = client) -> None:
                            answer = await c.post(url, json=BODY)
                            answer.json()

                        results[name].append(await measure(post, args.calls))
            finally:
                await aio.aclose()
                await core.aclose()
    print(f"{'client':<9} {'CPU µs/call':>12} {'wall µs/call':>13}   (medians of {args.rounds})")
    for name, rows in results.items():
        cpu_us = median([c for c, _ in rows]) * 1e6
        wall_us = median([w for _, w in rows]) * 1e6
        print(f"{name:<9} {cpu_us:>12.0f} {wall_us:>13.0f}")
    base = median([c for c, _ in results["httpx"]])
    for name in ("aiohttp", "httpcore"):
        ratio = median([c for c, _ in results[name]]) / base
        print(f"{name} / httpx CPU per call: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fake = subprocess.Popen(
        [sys.executable, "-m", "botd.testing.fake_chat2desk", "--token", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        line = fake.stdout.readline()  # "listening http://…/v1"
        if not line.startswith("listening "):
            raise SystemExit(f"the fake did not start: {line!r}")
        run_as_guest(measure_all, line.split()[1], args)
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
