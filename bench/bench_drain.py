"""Backlog drain: N customer greetings already queued, then ``botd run`` starts and works them off.

The backlog is what the webhook would have queued while botd's consumers were down (a deploy, an
outage): N inbox bodies ("Здравствуйте", each from a distinct customer, so each gets its two
replies), parsed by the webhook's own ``parse_webhook`` and published with publisher confirms
through botd's broker adapter into the customer's shard queue — the webhook's path without
HTTP, which is not what is measured here. Then ``botd run`` starts (real services; replies go
to a fake Chat2Desk process; the Chat2Desk limiter at its ceiling, 100,000 calls a minute, i.e.
at most ~830 greetings/s) and every ``--every`` seconds a line gives the messages still queued
(ready, not yet delivered to a consumer), those processed, the rate over the interval, botd's
CPU share and RSS. The summary: total time from the start of the process and from READY, the
mean and best interval rate, botd's CPU per message (all its CPU since exec, start-up included,
over N) and its peak RSS.

N=100,000 takes a while: ~35 s to publish, then ~13 minutes to drain on two cores (measured:
~130 messages/s), and some seconds to clean the Redis keys afterwards; ``--messages 30000`` is a
quicker look (~4 minutes).

    python -m bench.bench_drain [--messages 100000] [--shards 8] [--every 5]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_webhook import start_line_process
from bench.common import add_env_option, bench_config, cpu_seconds, env_option, peak_rss_mb, rss_mb
from botd.bridge import open_bridge
from botd.broker import Broker, layout, open_broker
from botd.config import Config
from botd.inbound import QueuedMessage, encode_queued, parse_webhook, shard_of
from botd.testing.process import start_botd

FIRST_CLIENT = 5_000_000


def greeting(i: int) -> tuple[int, bytes]:
    """(shard-able client id, queued body) of customer ``i``'s greeting."""
    client_id = FIRST_CLIENT + i
    raw = json.dumps(
        {
            "message_id": 6 * 10**9 + i,
            "type": "from_client",
            "hook_type": "inbox",
            "client_id": client_id,
            "text": "Здравствуйте",
            "transport": "telegram",
            "channel_id": 17,
        }
    ).encode()
    verdict = parse_webhook(raw, received_at=time.time())
    assert isinstance(verdict, QueuedMessage)
    return client_id, encode_queued(verdict)


async def publish_backlog(broker: Broker, config: Config, n: int, concurrency: int) -> None:
    shards = config.rabbitmq.shards
    todo = iter(range(n))

    async def publisher() -> None:
        for i in todo:
            client_id, body = greeting(i)
            queue = broker.topology.shard(shard_of(str(client_id), shards))
            await broker.publish(queue, body, timeout=60)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(publisher)


async def queued(broker: Broker, shards: int) -> int:
    return sum([await broker.queue_depth(broker.topology.shard(s)) for s in range(shards)])


async def counters(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    response = await http.get(f"{url}/metrics")
    response.raise_for_status()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            key = s.name + "".join(f"|{v}" for _, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


def handled(c: dict[str, float]) -> float:
    """Messages the consumers finished (processed, duplicate or poison)."""
    outcomes = ("processed", "duplicate", "poison")
    return sum(c.get(f"botd_messages_processed_total|{o}", 0.0) for o in outcomes)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000, help="backlog size (N)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between report lines")
    parser.add_argument("--publishers", type=int, default=64, help="concurrent publishes")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after (s)")
    add_env_option(parser)
    args = parser.parse_args()
    n = args.messages

    async with trio.open_nursery() as nursery:
        fake, fake_url = await start_line_process(
            nursery, [sys.executable, "-m", "botd.testing.fake_chat2desk", "--port", "0"]
        )
        async with (
            bench_config(fake_url, BOTD_RABBITMQ_SHARDS=str(args.shards)) as config,
            open_bridge() as bridge,
            open_broker(bridge, config.rabbitmq, **layout(config)) as broker,
            httpx.AsyncClient(timeout=30) as http,
        ):
            await broker.connect_once()
            started = time.perf_counter()
            await publish_backlog(broker, config, n, args.publishers)
            took = time.perf_counter() - started
            backlog = await queued(broker, args.shards)
            print(
                f"backlog: {backlog} greetings from {n} customers in {args.shards} shard queues "
                f"(published in {took:.1f} s, {n / took:.0f}/s)",
                flush=True,
            )

            launched = time.perf_counter()
            botd = await start_botd(nursery, config, ready_timeout=120, extra_env=env_option(args))
            ready = time.perf_counter() - launched
            pid = botd.process.pid
            print(f"botd READY {ready:.2f} s after exec\n", flush=True)
            print(f"{'t s':>7}{'queued':>9}{'done':>9}{'msg/s':>8}{'CPU':>7}{'RSS MiB':>9}")
            last_t, last_done, last_cpu = launched, 0.0, 0.0
            rates: list[float] = []
            next_line = launched + args.every
            done = 0.0
            with trio.fail_after(args.timeout):
                while True:
                    done = handled(await counters(http, botd.url))
                    now = time.perf_counter()
                    if done >= n or now >= next_line:
                        cpu = cpu_seconds(pid)
                        interval = now - last_t
                        rate = (done - last_done) / interval
                        rates.append(rate)
                        print(
                            f"{now - launched:>7.1f}{await queued(broker, args.shards):>9}"
                            f"{done:>9.0f}{rate:>8.0f}{(cpu - last_cpu) / interval:>7.0%}"
                            f"{rss_mb(pid):>9.0f}",
                            flush=True,
                        )
                        last_t, last_done, last_cpu = now, done, cpu
                        next_line = now + args.every
                    if done >= n:
                        break
                    await trio.sleep(0.25)
            total = time.perf_counter() - launched
            cpu = cpu_seconds(pid)
            final = await counters(http, botd.url)
            peak = peak_rss_mb(pid)
            botd.process.terminate()
            await botd.wait_exit()

            sends = final.get("botd_sends_total|ok", math.nan)
            waited = final.get("botd_limiter_wait_seconds_total", math.nan)
            print(
                f"\n{'messages':<28}{n}\n"
                f"{'drained in':<28}{total:.1f} s from exec, {total - ready:.1f} s from READY\n"
                f"{'rate':<28}{n / total:.0f} msg/s mean from exec, {n / (total - ready):.0f} from "
                f"READY, best {args.every:g} s interval {max(rates):.0f}\n"
                f"{'botd CPU':<28}{cpu:.1f} s = {cpu / n * 1000:.2f} ms/msg "
                f"({cpu / total:.0%} of a core)\n"
                f"{'botd peak RSS':<28}{peak:.0f} MiB\n"
                f"{'replies sent':<28}{sends:.0f} ({sends / n:.2f} per message); limiter wait "
                f"{waited:.1f} s"
            )
            print("cleaning up (Redis keys, queues, schema)…", flush=True)
        fake.terminate()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
