"""Chaos run: customers complete dialogs while botd processes are kill -9'd and services restart.

Two ``botd run`` processes (active + hot standby) serve simulated customers, each completing
dialogs turn by turn (posting like Chat2Desk: retry on 503 or a refused connection). Meanwhile a
chaos task, one action at a time, kill -9s a random botd process and starts a replacement,
restarts the RabbitMQ application or restarts PostgreSQL. (Redis is not restarted: it runs
without persistence here, so its restart loses dialogs in progress by design — proven
separately in tests/faults/test_service_restarts.py.) At the end every customer is audited
against a model of its dialog: replies exactly as modelled in turn order (a re-sent block is
allowed: replies are at-least-once), exactly one order per confirmed dialog, with its values.

    scripts/chaos [--seconds 150] [--customers 16] [--seed N]
    scripts/chaos pytest          # runs `pytest -m slow tests/faults` instead
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import trio

from botd.config import Config
from botd.testing.fake_chat2desk import open_fake_chat2desk
from tests.faults.support import (
    Botds,
    Replies,
    Traffic,
    botds,
    dialog_texts,
    match_blocks,
    orders_by_client,
    service_down,
)


@dataclass
class ChaosReport:
    dialogs_started: int = 0
    orders_expected: int = 0
    orders_found: int = 0
    lost: int = 0
    doubled: int = 0
    replies_missing: int = 0
    order_violations: int = 0
    messages: int = 0
    resent_blocks: int = 0
    kills: int = 0
    restarts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"chaos run: {self.seconds:.0f}s, {self.messages} customer messages, botd kill -9 "
            f"x{self.kills}, service restarts {self.restarts or '{}'}",
            f"dialogs started        {self.dialogs_started}",
            f"orders expected        {self.orders_expected}",
            f"orders found           {self.orders_found}",
            f"lost                   {self.lost}",
            f"doubled                {self.doubled}",
            f"replies missing        {self.replies_missing}",
            f"order violations       {self.order_violations}",
            f"(re-sent reply blocks  {self.resent_blocks}: at-least-once replies after kills)",
            *self.problems[:10],
        ]

    @property
    def ok(self) -> bool:
        zero = (self.lost, self.doubled, self.replies_missing, self.order_violations)
        return not any(zero) and self.orders_found == self.orders_expected


async def run_chaos(
    config: Config,
    replies: Replies,
    *,
    seconds: float,
    customers: int,
    seed: int = 1,
    services: tuple[str, ...] = ("rabbitmq", "postgres"),
    say: Callable[[str], None] = print,
) -> ChaosReport:
    rng = random.Random(seed)
    report = ChaosReport()
    started_at = time.monotonic()
    async with botds(config) as group, httpx.AsyncClient() as http:
        await group.start()
        await group.start()

        def url() -> str:
            live = [p for p in group.procs if p.process.returncode is None]
            return (live[-1] if live else group.procs[-1]).url

        traffic = Traffic(config, replies, url, reply_timeout=120)
        started: dict[int, int] = {}

        async def customer(cid: int) -> None:
            c = traffic.customer(cid)
            n = 0
            try:
                while not traffic.stop:
                    started[cid] = started.get(cid, 0) + 1
                    for text in dialog_texts(n, cid):
                        await traffic.turn(http, c, text)
                    n += 1
            except AssertionError as exc:  # the model and the replies disagree: stop this one
                report.problems.append(f"customer {cid}: {exc}")
            except trio.TooSlowError:
                report.problems.append(f"customer {cid}: replies did not come in time")

        async def chaos(group: Botds) -> None:
            while time.monotonic() - started_at < seconds - 10:
                await trio.sleep(rng.uniform(3, 6))  # pace of faults (a schedule, not a sync)
                action = rng.choice(["kill", "kill", *services])
                if action == "kill":
                    live = [p for p in group.procs if p.process.returncode is None]
                    victim = rng.choice(live)
                    victim.kill9()
                    await victim.wait_exit()
                    report.kills += 1
                    say(
                        f"[{time.monotonic() - started_at:5.1f}s] kill -9 botd pid {victim.process.pid}"
                    )
                    await group.start()
                else:
                    say(f"[{time.monotonic() - started_at:5.1f}s] restarting {action}")
                    async with service_down(action):
                        await trio.sleep(rng.uniform(1, 3))
                    report.restarts[action] = report.restarts.get(action, 0) + 1

        async with trio.open_nursery() as nursery:
            for i in range(customers):
                nursery.start_soon(customer, 900_001 + i * 13)
            await chaos(group)
            with trio.move_on_after(max(0.0, seconds - (time.monotonic() - started_at))):
                await trio.sleep_forever()
            traffic.stop = True  # customers finish the dialog they are in

    report.seconds = time.monotonic() - started_at
    rows = orders_by_client(config.postgres.dsn)
    for c in traffic.customers.values():
        report.dialogs_started += started.get(c.cid, 0)
        report.messages += c.sent
        try:
            complete, resent = match_blocks(replies.texts[str(c.cid)], c.blocks)
            report.resent_blocks += resent
            if not complete:
                report.replies_missing += 1
        except AssertionError:
            report.order_violations += 1
        got = [
            (r["delivery_address"], r["client_phone"], r["quantity"])
            for r in rows.get(str(c.cid), [])
        ]
        want = [(d.address, d.phone, d.quantity) for d in c.model.orders]
        report.orders_expected += len(want)
        report.orders_found += len(got)
        report.lost += sum(1 for w in want if w not in got)
        report.doubled += sum(max(0, got.count(w) - 1) for w in set(got))
        report.order_violations += sum(1 for g, w in zip(got, want, strict=False) if g != w)
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--customers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    from bench.common import bench_config

    print(f"seed {args.seed}", flush=True)
    async with open_fake_chat2desk(token="test-token") as fake:
        replies = Replies()
        fake.on_record = replies
        async with bench_config(
            fake.base_url,
            BOTD_RABBITMQ_SHARDS="4",
            BOTD_RABBITMQ_RECONNECT_MAX_SECONDS="2",
            BOTD_CHAT2DESK_TIMEOUT_SECONDS="2",
            BOTD_LOG_LEVEL="WARNING",
        ) as config:
            report = await run_chaos(
                config,
                replies,
                seconds=args.seconds,
                customers=args.customers,
                seed=args.seed,
                say=lambda s: print(s, flush=True),
            )
    print("\n".join(report.lines()))
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    trio.run(main)
