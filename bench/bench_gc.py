"""Garbage-collector pauses under load: botd with its GC tuning off and on, alternating.

Each run starts a fresh ``botd run`` (real services, fake Chat2Desk in this process, rate limiter
lifted), warms it up, then drives K paced customers for S seconds — each customer completes the
5-turn order dialog of bench_e2e, a turn at a time, waiting for botd's replies, and a new
customer follows — and reads ``botd_gc_*`` from ``/metrics`` before and after the load. The runs
alternate (off, on, off, on, …; ``--try`` adds tuned runs with other thresholds) and the table
gives, per variant, the medians over its runs of: collections per generation, the longest pause
and the p99 pause (interpolated in the histogram's buckets, all generations), the time spent in
GC (share of the wall time), messages/s, botd's CPU per message and its peak RSS.

``off`` is ``BOTD_TEST_GC_TUNING=0`` (Python's own collector: thresholds 700/10/10, nothing
frozen); ``on`` is botd's default (:data:`botd.gc_tuning.THRESHOLDS`).

    python -m bench.bench_gc [--rounds 2] [--seconds 30] [--concurrency 8] [--try 10000,10,10]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_e2e import REPLIES, TURNS, Watcher
from bench.common import bench_config, cpu_seconds, median, peak_rss_mb
from botd.gc_tuning import ENV_ENABLED, ENV_THRESHOLDS, GENERATIONS, THRESHOLDS
from botd.testing.fake_chat2desk import open_fake_chat2desk
from botd.testing.process import start_botd

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Result:
    collections: dict[str, float]
    longest_ms: float
    p99_ms: float
    gc_share: float
    msgs_per_s: float
    cpu_ms_per_msg: float
    peak_rss_mb: float


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    response = await http.get(f"{url}/metrics")
    response.raise_for_status()
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def bucket_deltas(before: Samples, after: Samples) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the pauses during the load, all generations."""
    bounds: dict[float, float] = defaultdict(float)
    for (name, labels), v in after.items():
        if name == "botd_gc_pause_seconds_bucket":
            le = float(dict(labels)["le"])
            bounds[le] += v - before.get((name, labels), 0.0)
    return sorted(bounds.items())


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile as Prometheus computes it (linear within the bucket)."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = le, cumulative
    return lower


async def drive(url: str, watcher: Watcher, seconds: float, concurrency: int, base: int) -> int:
    """K lanes of paced customers until the deadline; returns the messages sent."""
    deadline = time.perf_counter() + seconds
    sent = 0
    ids = [base * 10]
    next_customer = [base]

    async def lane(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            cid = next_customer[0]
            next_customer[0] += 1
            turns = [
                t.format(n=cid % 1000, phone=f"{cid % 1000000:06d}", qty=cid % 50 + 1)
                for t in TURNS
            ]
            for text, replies in zip(turns, REPLIES, strict=True):
                target = watcher.count[str(cid)] + replies
                ids[0] += 1
                body = {
                    "message_id": ids[0],
                    "type": "from_client",
                    "hook_type": "inbox",
                    "client_id": cid,
                    "text": text,
                }
                response = await http.post(f"{url}/webhook/chat2desk", json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"webhook answered {response.status_code}: {response.text}")
                sent += 1
                with trio.fail_after(60):
                    await watcher.wait(str(cid), target)
                if time.perf_counter() >= deadline:
                    return

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http, trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(lane, http)
    return sent


async def one_run(
    env: dict[str, str], args: argparse.Namespace, watcher: Watcher, fake_url: str, base: int
) -> Result:
    async with (
        bench_config(fake_url, BOTD_RABBITMQ_SHARDS="8") as config,
        trio.open_nursery() as nursery,
        httpx.AsyncClient(timeout=30) as http,
    ):
        botd = await start_botd(nursery, config, extra_env=env)
        pid = botd.process.pid
        await drive(botd.url, watcher, args.warmup, args.concurrency, base)  # imports, caches
        before = await scrape(http, botd.url)
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        messages = await drive(botd.url, watcher, args.seconds, args.concurrency, base + 10**6)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
        after = await scrape(http, botd.url)
        buckets = bucket_deltas(before, after)
        spent = sum(
            get(after, "botd_gc_pause_seconds_sum", generation=g)
            - get(before, "botd_gc_pause_seconds_sum", generation=g)
            for g in GENERATIONS
        )
        result = Result(
            collections={
                g: get(after, "botd_gc_collections_total", generation=g)
                - get(before, "botd_gc_collections_total", generation=g)
                for g in GENERATIONS
            },
            longest_ms=max(
                get(after, "botd_gc_pause_max_seconds", generation=g) for g in GENERATIONS
            )
            * 1000,
            p99_ms=quantile(0.99, buckets) * 1000,
            gc_share=spent / elapsed,
            msgs_per_s=messages / elapsed,
            cpu_ms_per_msg=cpu / max(messages, 1) * 1000,
            peak_rss_mb=peak_rss_mb(pid),
        )
        botd.process.terminate()
        await botd.wait_exit()
        return result


def row(name: str, r: Result) -> str:
    c = r.collections
    return (
        f"{name:<22} {c['0']:>7.0f} {c['1']:>6.0f} {c['2']:>5.0f} {r.longest_ms:>8.1f} "
        f"{r.p99_ms:>7.2f} {r.gc_share:>6.1%} {r.msgs_per_s:>7.0f} {r.cpu_ms_per_msg:>7.2f} "
        f"{r.peak_rss_mb:>6.0f}"
    )


HEADER = (
    f"{'variant':<22} {'gen0':>7} {'gen1':>6} {'gen2':>5} {'max ms':>8} {'p99 ms':>7} "
    f"{'in GC':>6} {'msg/s':>7} {'CPU ms':>7} {'RSS':>6}"
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="load per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="load before measuring")
    parser.add_argument("--concurrency", type=int, default=8, help="paced customers at a time")
    parser.add_argument(
        "--try",
        dest="tries",
        action="append",
        default=[],
        metavar="A,B,C",
        help="also run the tuning with these thresholds (repeatable)",
    )
    args = parser.parse_args()
    variants: list[tuple[str, dict[str, str]]] = [
        ("off (700/10/10)", {ENV_ENABLED: "0"}),
        ("on " + "/".join(map(str, THRESHOLDS)), {ENV_ENABLED: "1"}),
    ]
    for t in args.tries:
        variants.append(("on " + t.replace(",", "/"), {ENV_ENABLED: "1", ENV_THRESHOLDS: t}))
    results: dict[str, list[Result]] = defaultdict(list)
    watcher = Watcher()
    base = 3 * 10**9
    print(f"{'round':<6}{HEADER}", flush=True)
    async with open_fake_chat2desk(token="test-token") as fake:
        fake.on_record = watcher
        for rnd in range(args.rounds):
            for name, env in variants:
                base += 10**7
                r = await one_run(env, args, watcher, fake.base_url, base)
                results[name].append(r)
                print(f"{rnd + 1:<6}{row(name, r)}", flush=True)
                fake.reset()  # its recordings grow with every run
                watcher.count.clear()
    print(f"\nmedians of {args.rounds} rounds, {args.seconds:.0f} s of load each "
          f"({args.concurrency} paced customers at a time):")  # fmt: skip
    print(f"      {HEADER}")
    for name, _ in variants:
        rs = results[name]
        med = Result(
            collections={g: median([r.collections[g] for r in rs]) for g in GENERATIONS},
            longest_ms=median([r.longest_ms for r in rs]),
            p99_ms=median([r.p99_ms for r in rs]),
            gc_share=median([r.gc_share for r in rs]),
            msgs_per_s=median([r.msgs_per_s for r in rs]),
            cpu_ms_per_msg=median([r.cpu_ms_per_msg for r in rs]),
            peak_rss_mb=median([r.peak_rss_mb for r in rs]),
        )
        print(f"      {row(name, med)}")
    print("max ms: longest pause since start-up (any generation); p99 ms: of the pauses during "
          "the load; in GC: their sum / wall time")  # fmt: skip


if __name__ == "__main__":
    trio.run(main)
