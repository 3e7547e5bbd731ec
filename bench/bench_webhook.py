"""Webhook throughput: botd's durable webhook vs a do-nothing Quart-Trio endpoint, same run.

Both are driven by ``wrk`` (one thread, 32 connections) with unique Chat2Desk inbox bodies; the
rounds alternate (noop, botd, noop, botd, …) and the medians and their ratio are printed, with
botd's peak memory. botd runs for real: every 200 is a publisher-confirmed persistent message,
and its consumers process them (replies go to a fake Chat2Desk process) while wrk runs.

    python -m bench.bench_webhook [--rounds 3] [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import trio

from bench.common import add_env_option, bench_config, env_option, median, peak_rss_mb, rss_mb
from botd.testing.process import start_botd

HERE = Path(__file__).resolve().parent
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(
    url: str, seconds: int, connections: int, id_base: int
) -> tuple[float, dict[str, float], int]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "webhook.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"BENCH_ID_BASE": str(id_base), "PATH": "/usr/bin:/bin"},
    ).stdout
    rps = float(_RPS.search(out).group(1))  # type: ignore[union-attr]
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    lat = {f"p{m.group(1)}": float(m.group(2)) * scale[m.group(3)] for m in _LAT.finditer(out)}
    bad = _NON2XX.search(out)
    return rps, lat, int(bad.group(1)) if bad else 0


async def start_line_process(nursery: trio.Nursery, argv: list[str]) -> tuple[trio.Process, str]:
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    buffer = b""
    with trio.fail_after(20):
        while b"\n" not in buffer:
            chunk = await proc.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"{argv} exited before it was ready")
            buffer += chunk
    return proc, buffer.split(b"\n")[0].decode().split()[1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    add_env_option(parser)
    args = parser.parse_args()

    async with trio.open_nursery() as nursery:
        fake, fake_url = await start_line_process(
            nursery, [sys.executable, "-m", "botd.testing.fake_chat2desk", "--port", "0"]
        )
        noop, noop_url = await start_line_process(
            nursery, [sys.executable, str(HERE / "noop_app.py"), "0"]
        )
        async with bench_config(fake_url) as config:
            botd = await start_botd(nursery, config, extra_env=env_option(args))
            results: dict[str, list[float]] = {"noop": [], "botd": []}
            lat: dict[str, list[float]] = {"noop": [], "botd": []}
            errors = 0
            id_base = 10**9
            for rnd in range(args.rounds):
                for name, url in (("noop", noop_url), ("botd", botd.url)):
                    id_base += 10**7
                    rps, latency, bad = await trio.to_thread.run_sync(
                        wrk, f"{url}/webhook/chat2desk", args.seconds, args.connections, id_base
                    )
                    results[name].append(rps)
                    lat[name].append(latency.get("p50", float("nan")))
                    if name == "botd":
                        errors += bad
                    print(
                        f"round {rnd + 1} {name:>4}: {rps:8.0f} req/s  p50 {latency.get('p50', 0):6.2f} ms  "
                        f"p99 {latency.get('p99', 0):6.2f} ms  non-2xx {bad}",
                        flush=True,
                    )
            print(
                f"botd RSS now {rss_mb(botd.process.pid):.0f} MiB, peak {peak_rss_mb(botd.process.pid):.0f} MiB"
            )
            n, b = median(results["noop"]), median(results["botd"])
            print(
                f"median noop {n:.0f} req/s, botd {b:.0f} req/s: ratio {b / n:.2f} "
                f"(p50 {median(lat['noop']):.2f} vs {median(lat['botd']):.2f} ms); botd non-2xx {errors}"
            )
            botd.process.terminate()
            await botd.wait_exit()
        noop.terminate()
        fake.terminate()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
