"""Client CPU of the state store's load: the load script (one EVALSHA) vs the pipeline it replaced.

Both read the same keys on the real Redis (a dialog with a state, the rest missing, as on a new
message), on uvloop with redis-py's asyncio client and hiredis, as botd does. Rounds alternate the
two; each prints the CPU per load (``time.process_time``: the client's Python and syscalls, not
Redis's work), then the medians.

    python -m bench.bench_state_load [--rounds 5] [--loads 3000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
import uvloop

from botd.state_store import _LOAD

REDIS_URL = os.environ.get("BOTD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def main(rounds: int, loads: int) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    prefix = f"bench-load-{uuid.uuid4().hex[:8]}:"
    names = ("dialog:1", "version:1", "seen:9", "outbox:1", "own:9", "said:1")
    keys = [prefix + n for n in names]
    await client.hset(keys[0], mapping={"v": 3, "s": '{"step": "address", "lang": "ru"}'})
    script = client.register_script(_LOAD)

    async def pipeline() -> Any:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hmget(keys[0], "v", "s")
            pipe.get(keys[1])
            pipe.hmget(keys[2], "r", "sent")
            pipe.llen(keys[3])
            pipe.exists(keys[4])
            return await pipe.execute()

    async def load_script() -> Any:
        return await script(keys, [""])

    per_load: dict[str, list[float]] = {"pipeline": [], "script": []}
    try:
        for rnd in range(rounds):
            for name, fn in (("pipeline", pipeline), ("script", load_script)):
                await fn()  # warm (the script is loaded on first use)
                started = time.process_time()
                for _ in range(loads):
                    await fn()
                us = (time.process_time() - started) / loads * 1e6
                per_load[name].append(us)
                print(f"round {rnd + 1} {name:>8}: {us:6.0f} µs CPU per load", flush=True)
    finally:
        await client.delete(*keys)
        await client.aclose()
    p, s = (statistics.median(per_load[n]) for n in ("pipeline", "script"))
    print(f"medians: pipeline {p:.0f} µs, script {s:.0f} µs per load ({s / p:.2f}×)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loads", type=int, default=3000)
    args = parser.parse_args()
    uvloop.run(main(args.rounds, args.loads))
