"""Idle webhook answer latency: one request at a time, botd vs a do-nothing Quart-Trio app.

Nothing else loads botd: a single keep-alive HTTP/1.1 connection (``http.client``, in a thread,
so the client adds ~0.1 ms) POSTs unique Chat2Desk inbox bodies one after another — the next
only once the answer is read, after ``--gap-ms`` (default 0) — and times each from the first byte
sent to the last byte of the answer. botd runs for real (``botd run``; every 200 is a
publisher-confirmed persistent message, processed by its consumers, replies to a fake Chat2Desk
process); the baseline is bench/noop_app.py (reads the body, answers the same JSON). Each round
warms up both, then measures noop and botd in turn; the table gives p50/p90/p99 per round, then
the medians over the rounds and botd's ratio to the baseline. botd's resident memory is printed
10 s after it is ready (idle: the issue's "≤ 80 MB idle") and after the rounds.

With ``--gap-ms 0`` botd's consumer handles the previous message while the next request is
answered (the two threads share the GIL); ``--gap-ms 20`` lets it finish first.

    python -m bench.bench_idle [--rounds 3] [--requests 2000] [--warmup 200] [--gap-ms 0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import trio

from bench.bench_webhook import start_line_process
from bench.common import add_env_option, bench_config, env_option, median, pct, rss_mb
from botd.testing.process import start_botd

HERE = Path(__file__).resolve().parent
PATH = "/webhook/chat2desk"
IDLE_SETTLE_SECONDS = 10.0


def body(message_id: int) -> bytes:
    return json.dumps(
        {
            "message_id": message_id,
            "type": "from_client",
            "hook_type": "inbox",
            "client_id": 100_000 + message_id % 1000,
            "text": "hello",
            "transport": "telegram",
            "channel_id": 17,
        }
    ).encode()


def sequential(url: str, first_id: int, count: int, gap: float) -> list[float]:
    """``count`` POSTs one at a time over one keep-alive connection; latencies in seconds."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    latencies: list[float] = []
    try:
        for i in range(count):
            payload = body(first_id + i)
            started = time.perf_counter()
            conn.request("POST", PATH, payload, headers)
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")
            if gap:
                time.sleep(gap)
    finally:
        conn.close()
    return latencies


def ms(values: list[float], q: float) -> float:
    return pct(values, q) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="measured, per round and app")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured, before each")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause after each answer")
    add_env_option(parser)
    args = parser.parse_args()
    gap = args.gap_ms / 1000

    async with trio.open_nursery() as nursery:
        fake, fake_url = await start_line_process(
            nursery, [sys.executable, "-m", "botd.testing.fake_chat2desk", "--port", "0"]
        )
        noop, noop_url = await start_line_process(
            nursery, [sys.executable, str(HERE / "noop_app.py"), "0"]
        )
        async with bench_config(fake_url) as config:
            botd = await start_botd(nursery, config, extra_env=env_option(args))
            await trio.sleep(IDLE_SETTLE_SECONDS)  # start-up's last allocations, a first GC
            pid = botd.process.pid
            print(f"botd RSS {IDLE_SETTLE_SECONDS:g} s after ready (idle): {rss_mb(pid):.1f} MiB")
            quantiles: dict[str, dict[int, list[float]]] = {
                name: {50: [], 90: [], 99: []} for name in ("noop", "botd")
            }
            next_id = 4 * 10**9
            print(
                f"{args.requests} sequential POSTs per app and round, gap {args.gap_ms:g} ms",
                flush=True,
            )
            print(f"{'round':<6}{'app':<6}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}")
            for rnd in range(args.rounds):
                for name, url in (("noop", noop_url), ("botd", botd.url)):
                    await trio.to_thread.run_sync(sequential, url, next_id, args.warmup, gap)
                    next_id += args.warmup
                    lat = await trio.to_thread.run_sync(
                        sequential, url, next_id, args.requests, gap
                    )
                    next_id += args.requests
                    for q in (50, 90, 99):
                        quantiles[name][q].append(ms(lat, q))
                    print(
                        f"{rnd + 1:<6}{name:<6}{ms(lat, 50):>8.2f}{ms(lat, 90):>8.2f}"
                        f"{ms(lat, 99):>8.2f}{max(lat) * 1000:>8.1f}",
                        flush=True,
                    )
            print(f"\nmedians of {args.rounds} rounds:")
            print(f"{'app':<12}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}")
            for name in ("noop", "botd"):
                mid = {k: median(v) for k, v in quantiles[name].items()}
                print(f"{name:<12}{mid[50]:>8.2f}{mid[90]:>8.2f}{mid[99]:>8.2f}")
            ratio = {
                k: median(quantiles["botd"][k]) / median(quantiles["noop"][k]) for k in (50, 90, 99)
            }
            print(f"{'botd / noop':<12}{ratio[50]:>8.2f}{ratio[90]:>8.2f}{ratio[99]:>8.2f}")
            print(f"botd RSS after the rounds: {rss_mb(pid):.1f} MiB")
            botd.process.terminate()
            await botd.wait_exit()
        noop.terminate()
        fake.terminate()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
