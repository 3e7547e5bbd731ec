"""End-to-end dialog throughput: customers complete orders through a real ``botd run`` process.

The shape of the issue's yardstick (``drive.py e2e``): C customers, K at a time, each completing
D dialogs of 5 turns (greeting, address, phone, quantity, "да") against botd running as a
subprocess on the real services, the rate limiter lifted; replies go to the in-process fake
Chat2Desk (keep-alive connections, like the real API). Two modes, one after the other:

- ``paced``: a customer sends a turn, waits for botd's replies, then sends the next (per-turn
  latency = webhook POST → last reply of the turn at the fake);
- ``burst``: 40 customers type all 5 turns at once without waiting (the old bot's failure case),
  then wait for all replies.

Printed per mode: messages/s, per-turn p50/p99, botd's CPU per message (user+system CPU of the
process over the messages driven) and of the load generator; then the order audit (count and
values in PostgreSQL) and botd's peak RSS. Internal notes (``comment``) are not replies.

    python -m bench.bench_e2e [--customers 600] [--concurrency 8] [--dialogs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import httpx
import psycopg
import trio

from bench.common import (
    add_env_option,
    bench_config,
    context_switches,
    cpu_seconds,
    env_option,
    median,
    pct,
    peak_rss_mb,
    system_cpu_seconds,
)
from botd import home_shards
from botd.testing.fake_chat2desk import RecordedRequest, open_fake_chat2desk
from botd.testing.process import start_botd

TURNS = ("Здравствуйте", "ул. Токтогула {n}, кв. 4", "0555 {phone}", "{qty}", "да")
REPLIES = (2, 1, 1, 1, 1)  # replies botd sends for each turn


class Watcher:
    """Counts replies per customer as the fake records them."""

    def __init__(self) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.changed: dict[str, trio.Event] = defaultdict(trio.Event)

    def __call__(self, record: RecordedRequest) -> None:
        if record.delivered and record.visible and record.client_id is not None:
            cid = record.client_id
            self.count[cid] += 1
            self.changed[cid].set()
            self.changed[cid] = trio.Event()

    async def wait(self, cid: str, n: int) -> None:
        while self.count[cid] < n:
            await self.changed[cid].wait()


async def crossings(urls: list[str]) -> int:
    """Bridge crossings so far, summed over the processes (``botd_bridge_crossings``)."""
    total = 0
    async with httpx.AsyncClient() as http:
        for url in urls:
            text = (await http.get(f"{url}/metrics")).text
            for line in text.splitlines():
                if line.startswith("botd_bridge_crossings_total "):
                    total += int(float(line.split()[1]))
    return total


async def run_mode(
    mode: str,
    urls: list[str],
    watcher: Watcher,
    customers: list[int],
    dialogs: int,
    ids: list[int],
    concurrency: int,
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    messages = 0

    async def customer(cid: int, http: httpx.AsyncClient) -> None:
        nonlocal messages
        key = str(cid)
        for d in range(dialogs):
            turns = [
                t.format(
                    n=cid % 1000 + d, phone=f"{(cid * 7 + d) % 1000000:06d}", qty=(cid + d) % 50 + 1
                )
                for t in TURNS
            ]
            if mode == "paced":
                for text, replies in zip(turns, REPLIES, strict=True):
                    target = watcher.count[key] + replies
                    started = time.perf_counter()
                    await post(http, cid, text)
                    await watcher.wait(key, target)
                    latencies.append(time.perf_counter() - started)
                    messages += 1
            else:
                target = watcher.count[key] + sum(REPLIES)
                for text in turns:
                    await post(http, cid, text)
                    messages += 1
                await watcher.wait(key, target)

    async def post(http: httpx.AsyncClient, cid: int, text: str) -> None:
        ids[0] += 1
        body = {
            "message_id": ids[0],
            "type": "from_client",
            "hook_type": "inbox",
            "client_id": cid,
            "text": text,
        }
        response = await http.post(
            f"{urls[cid % len(urls)]}/webhook/chat2desk",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text}")

    waiting = list(reversed(customers))

    async def lane(http: httpx.AsyncClient) -> None:
        while waiting:
            await customer(waiting.pop(), http)

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http, trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(lane, http)
    return time.perf_counter() - started, latencies, messages


def audit(
    dsn: str, customers: list[int], dialogs_by_customer: dict[int, int]
) -> tuple[int, int, int]:
    """(orders expected, found, wrong): each dialog's order must carry exactly its values."""
    expected = sum(dialogs_by_customer.values())
    found = wrong = 0
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT chat2desk_client_id, delivery_address, client_phone, quantity FROM orders ORDER BY id"
        ).fetchall()
    by_client: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for client, address, phone, qty in rows:
        by_client[client].append((address, phone, qty))
    for cid in customers:
        got = by_client.get(str(cid), [])
        found += len(got)
        want = [
            (
                f"ул. Токтогула {cid % 1000 + d}, кв. 4",
                f"+996555{(cid * 7 + d) % 1000000:06d}"[:13],
                (cid + d) % 50 + 1,
            )
            for d in range(dialogs_by_customer[cid])
        ]
        wrong += sum(1 for g, w in zip(got, want, strict=False) if g != w) + abs(
            len(got) - len(want)
        )
    return expected, found, wrong


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=600, help="paced mode")
    parser.add_argument("--concurrency", type=int, default=8, help="paced customers at a time")
    parser.add_argument("--dialogs", type=int, default=1, help="dialogs per paced customer")
    parser.add_argument("--burst", type=int, default=40, help="burst customers (all at once)")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="botd processes sharing the shards (active-active, rabbitmq.instances)",
    )
    add_env_option(parser)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record botd with py-spy during the paced mode (collapsed stacks, for flame graphs)",
    )
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument(
        "--floor",
        metavar="SPEC",
        help="drive bench/floor_app.py instead of botd (guest|asyncio[+httpcore][+uvicorn]): "
        "the components' own cost per message",
    )
    args = parser.parse_args()
    argv = None
    if args.floor:
        argv = [sys.executable, "-m", "bench.floor_app", args.floor]
    watcher = Watcher()
    async with open_fake_chat2desk(token="test-token") as fake:
        fake.on_record = watcher
        async with (
            bench_config(fake.base_url, BOTD_RABBITMQ_SHARDS=str(args.shards)) as config,
            trio.open_nursery() as nursery,
        ):
            extra = env_option(args)
            procs = []
            try:
                for n in range(args.processes):
                    sharing = {
                        "BOTD_RABBITMQ_INSTANCES": str(args.processes),
                        "BOTD_RABBITMQ_INSTANCE": str(n),
                    }
                    if args.processes == 1:
                        sharing = {}  # the default (and what a botd without sharing knows)
                    procs.append(
                        await start_botd(nursery, config, extra_env={**sharing, **extra}, argv=argv)
                    )
                botd = procs[0]
                pids = [p.process.pid for p in procs]
                urls = [p.url for p in procs]
                await trio.sleep(home_shards.STANDBY_DELAY_SECONDS + 1)  # everyone standing by
                ids = [2 * 10**9]
                done: dict[int, int] = defaultdict(int)
                plan = (
                    ("paced", 1_000_000, args.customers, args.concurrency, args.dialogs),
                    ("burst", 2_000_000, args.burst, args.burst, 1),
                )
                for mode, base, count, concurrency, dialogs in plan:
                    customers = [base + i * 1009 for i in range(count)]
                    spy = None
                    if args.profile and mode == "paced":
                        spy = subprocess.Popen(
                            ["py-spy", "record", "--pid", str(botd.process.pid), "--format", "raw",
                             "--rate", "250", "--threads", "--gil", "--output", args.profile, "--nonblocking"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                        await trio.sleep(1.0)  # py-spy attaches
                    cross0 = await crossings(urls)
                    cpu0, own0 = sum(map(cpu_seconds, pids)), cpu_seconds(os.getpid())
                    sys0 = sum(map(system_cpu_seconds, pids))
                    switches0 = sum(map(context_switches, pids))
                    elapsed, lat, messages = await run_mode(
                        mode, urls, watcher, customers, dialogs, ids, concurrency
                    )
                    cpu = sum(map(cpu_seconds, pids)) - cpu0
                    kernel = sum(map(system_cpu_seconds, pids)) - sys0
                    switches = sum(map(context_switches, pids)) - switches0
                    crossed = await crossings(urls) - cross0
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=60)
                    own = cpu_seconds(os.getpid()) - own0
                    for cid in customers:
                        done[cid] = dialogs
                    line = f"{mode:>5}: {messages} msgs in {elapsed:.2f}s = {messages / elapsed:.0f} msg/s"
                    if lat:
                        line += f"; per-turn p50 {median(lat) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms"
                    line += (
                        f"; botd CPU {cpu / messages * 1000:.2f} ms/msg (system {kernel / messages * 1000:.2f})"
                        f" ({cpu / elapsed:.0%} of a core"
                        f"{f' over {len(pids)} processes' if len(pids) > 1 else ''})"
                        f", load generator + fake {own / messages * 1000:.2f} ms/msg"
                        f"; {crossed / messages:.1f} bridge crossings/msg"
                        f", {switches / messages:.1f} context switches/msg"
                    )
                    print(line, flush=True)
                if args.floor:
                    with psycopg.connect(config.postgres.dsn) as conn:
                        row = conn.execute("SELECT count(*) FROM floor_orders").fetchone()
                    print(
                        f"floor ({args.floor}): {row[0] if row else 0} rows (no dialog, no audit)"
                    )
                else:
                    expected, found, wrong = audit(config.postgres.dsn, list(done), done)
                    print(f"orders expected {expected}, found {found}, wrong or missing {wrong}")
                for proc in procs:
                    print(
                        f"botd pid {proc.process.pid} peak RSS {peak_rss_mb(proc.process.pid):.0f} MiB"
                    )
                    proc.process.terminate()
                    await proc.wait_exit()
            finally:  # a failed run must not leave botd (or the floor) running
                for proc in procs:
                    if proc.process.returncode is None:
                        proc.process.kill()


if __name__ == "__main__":
    trio.run(main)
