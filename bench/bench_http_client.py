"""The reply client alone: CPU per Chat2Desk call, httpx.AsyncClient vs botd.lean_http.LeanClient.

Both POST the same reply body to the project's fake Chat2Desk (in this process, keep-alive
connections like the real API) one call at a time, rounds alternating; printed: the medians of
CPU per call (client + the fake's side, which is the same for both, so the difference is the
client's) and wall time per call, and the ratio.

    python -m bench.bench_http_client [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from bench.common import median
from botd.lean_http import LeanClient
from botd.testing.fake_chat2desk import open_fake_chat2desk

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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"httpx": [], "lean": []}
    async with open_fake_chat2desk(token=TOKEN) as fake:
        url = fake.base_url + "/messages"
        headers = {"Authorization": TOKEN, "User-Agent": "botd-bench"}
        async with httpx.AsyncClient(headers=headers, timeout=10) as hx:
            lean = LeanClient(headers=headers, timeout_seconds=10)
            try:
                for _ in range(args.rounds):
                    for name, client in (("httpx", hx), ("lean", lean)):
                        fake.reset()

                        async def post(c: Any = client) -> None:
                            answer = await c.post(url, json=BODY)
                            answer.json()

                        results[name].append(await measure(post, args.calls))
            finally:
                await lean.aclose()
    print(f"{'client':<8} {'CPU µs/call':>12} {'wall µs/call':>13}   (medians of {args.rounds})")
    for name, rows in results.items():
        cpu_us = median([c for c, _ in rows]) * 1e6
        wall_us = median([w for _, w in rows]) * 1e6
        print(f"{name:<8} {cpu_us:>12.0f} {wall_us:>13.0f}")
    ratio = median([c for c, _ in results["lean"]]) / median([c for c, _ in results["httpx"]])
    print(f"lean / httpx CPU per call: {ratio:.2f} (the fake's share is in both)")


if __name__ == "__main__":
    trio.run(main)
