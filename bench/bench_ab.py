"""Builds of botd side by side: ``bench_e2e`` in alternating runs (A B B A …), then medians.

Each build is a checkout (e.g. ``git worktree add /tmp/before <commit>``); a run is
``python -m bench.bench_e2e`` started in that checkout, so botd and the driver are that build's
(the driver file itself is the same for both when you copy this one's ``bench/`` there first).
This machine kind is noisy: the same build can measure 4.3 and 7.5 ms of CPU per message ten
minutes apart, so only many alternating runs mean much. ``--restart-rabbitmq`` restarts the
local broker before every run (quorum-queue logs grow across runs and slow it down; needs root).

    python -m bench.bench_ab --rounds 5 before=/tmp/before after=. [-- --customers 600 --env K=V]

One checkout with a switch on one side: ``--build-env NAME:K=V`` adds ``--env K=V`` to that build's
runs only, e.g. ``--build-env threaded:BOTD_TEST_THREADED_BRIDGE=1 threaded=. guest=.``;
``--build-arg NAME:ARG`` adds a ``bench_e2e`` argument, e.g. the floor of the components
(``bench/floor_app.py``) beside botd, three builds in one sitting:

    python -m bench.bench_ab --rounds 3 --restart-rabbitmq \
        --build-arg floor:--floor=guest --build-arg asyncio:--floor=asyncio \
        botd=. floor=. asyncio=.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

PACED = re.compile(
    r"paced: \d+ msgs in [\d.]+s = (?P<rate>\d+) msg/s; per-turn p50 (?P<p50>[\d.]+) ms, "
    r"p99 (?P<p99>[\d.]+) ms; botd CPU (?P<cpu>[\d.]+) ms/msg \(system (?P<sys>[\d.]+)\)"
    r"(?:.*?; (?P<cross>[\d.]+) bridge crossings/msg)?"
    r"(?:, (?P<switches>[\d.]+) context switches/msg)?"
)
AUDIT = re.compile(r"orders expected (\d+), found (\d+), wrong or missing (\d+)")
FLOOR = re.compile(r"floor \(([\w+]+)\): (\d+) rows")
RSS = re.compile(r"peak RSS (\d+) MiB")
COLUMNS = ("rate", "p50", "p99", "cpu", "sys", "cross", "switches")


def restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "stop"], capture_output=True, check=False)
    subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, check=True)
    deadline = time.monotonic() + 120
    # await_startup fails at once while the new node has not registered yet: ask until it waits
    while subprocess.run(["rabbitmqctl", "await_startup"], capture_output=True).returncode:
        if time.monotonic() > deadline:
            raise SystemExit("RabbitMQ did not start again within 120 s")
        time.sleep(1)


def one_run(checkout: str, bench_args: list[str]) -> dict[str, float] | None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_e2e", *bench_args],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    paced, audit = PACED.search(out.stdout), AUDIT.search(out.stdout)
    floor = FLOOR.search(out.stdout)
    if paced is None or (audit is None and floor is None):
        print(f"  run in {checkout} failed:\n{out.stdout[-800:]}{out.stderr[-1500:]}", flush=True)
        return None
    row = {k: float(v) for k, v in paced.groupdict().items() if v is not None}
    if audit is not None:  # the floor has no dialog, so no orders to audit
        row["wrong"] = float(audit[3])
    row["rss"] = float(m[1]) if (m := RSS.search(out.stdout)) else 0.0
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each build")
    parser.add_argument("--restart-rabbitmq", action="store_true")
    parser.add_argument(
        "--build-env",
        action="append",
        default=[],
        metavar="NAME:K=V",
        help="environment for one build's botd only (repeatable)",
    )
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME:ARG",
        help="a bench_e2e argument for one build's runs only (repeatable)",
    )
    parser.add_argument("builds", nargs="+", metavar="NAME=CHECKOUT", help="two or more")
    parser.add_argument("bench_args", nargs="*", help="after --: arguments for bench_e2e")
    args = parser.parse_args()
    builds = dict(b.split("=", 1) for b in args.builds)
    names = list(builds)
    if len(names) < 2:
        parser.error("give at least two builds (NAME=CHECKOUT, distinct names)")
    extra: dict[str, list[str]] = {n: [] for n in names}
    for item in args.build_env:
        name, _, assignment = item.partition(":")
        if name not in extra or "=" not in assignment:
            parser.error(f"--build-env {item!r}: expected NAME:K=V with NAME one of {names}")
        extra[name] += ["--env", assignment]
    for item in args.build_arg:
        name, _, arg = item.partition(":")
        if name not in extra or not arg:
            parser.error(f"--build-arg {item!r}: expected NAME:ARG with NAME one of {names}")
        extra[name].append(arg)
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if args.restart_rabbitmq:
                restart_rabbitmq()
            row = one_run(builds[name], [*args.bench_args, *extra[name]])
            if row is not None:
                rows[name].append(row)
                shown = "  ".join(f"{k} {row[k]:g}" for k in (*COLUMNS, "wrong") if k in row)
                print(f"{name:>10}: {shown}", flush=True)
    print(f"\nmedians ({', '.join(f'{n}: {len(rows[n])} runs' for n in names)})")
    print(f"{'build':>10} " + " ".join(f"{c:>7}" for c in (*COLUMNS, "wrong")) + "  cpu range")
    for name in names:
        if not rows[name]:
            continue
        cells = []
        for c in (*COLUMNS, "wrong"):
            values = [row[c] for row in rows[name] if c in row]
            cells.append(f"{statistics.median(values):7.2f}" if values else f"{'-':>7}")
        cpus = [row["cpu"] for row in rows[name]]
        print(f"{name:>10} " + " ".join(cells) + f"  {min(cpus):.2f}-{max(cpus):.2f}")
    a = names[0]
    for b in names[1:]:
        if rows[a] and rows[b]:
            ratio = statistics.median(r["cpu"] for r in rows[b]) / statistics.median(
                r["cpu"] for r in rows[a]
            )
            print(f"CPU per message, {b} / {a}: {ratio:.2f}")


if __name__ == "__main__":
    main()
