"""How long understanding one message takes: ``understand.read`` and the whole dialog step.

Every customer text of the conversation corpus (``tests/conversations``) is read with the step
it was written at: the conversations are replayed through the pure core (no services), each
turn timed twice — the reading alone and ``handle`` (reading + decision). Reported in µs per
message (p50, p99, max over all turns of several rounds), plus the process's resident memory
after the lexicons and phone metadata are loaded (``VmRSS``), which is what a running botd pays
for the understanding step.

    .venv/bin/python -m bench.bench_understand [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from botd.dialog import DialogSettings, DialogState, TimerKind, Turn, handle
from botd.dialog.step import _expecting
from botd.dialog.understand import read

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "conversations"


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _turns() -> list[list[str]]:
    conversations = []
    for path in sorted(CORPUS.rglob("*.jsonl")):
        texts = []
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line) if line.strip() else {}
            if isinstance(item.get("text"), str):
                texts.append(item["text"])
        conversations.append(texts)
    return conversations


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rss_before = _rss_mib()
    settings = DialogSettings()
    conversations = _turns()
    started = time.perf_counter()
    read("0555 123 456 Токтогула 10 кв 5, три бутылки")  # load lexicons and phone metadata
    warm_ms = (time.perf_counter() - started) * 1e3
    rss_after = _rss_mib()
    reading_us: list[float] = []
    step_us: list[float] = []
    for _ in range(args.rounds):
        for n, texts in enumerate(conversations):
            state: DialogState | None = None
            now = 1_700_000_000.0
            for i, text in enumerate(texts):
                now += 1
                turn = Turn(f"m{i}", f"{n}", text, now)
                expecting = _expecting(state) if state is not None else None
                t0 = time.perf_counter()
                read(text, expecting=expecting)
                t1 = time.perf_counter()
                transition = handle(state, turn, now, settings)
                t2 = time.perf_counter()
                reading_us.append((t1 - t0) * 1e6)
                step_us.append((t2 - t1) * 1e6)
                if transition is not None:
                    state = transition.state
                    assert transition.timer in (None, TimerKind.REMINDER, TimerKind.EXPIRE)
    print(
        f"corpus: {len(conversations)} conversations, {len(step_us) // args.rounds} turns, "
        f"{args.rounds} rounds"
    )
    print(f"first message (loads lexicons + phone metadata): {warm_ms:.1f} ms")
    print(f"{'per message':<28}{'p50 µs':>10}{'p99 µs':>10}{'max µs':>10}{'mean µs':>10}")
    for name, values in (("understand.read", reading_us), ("handle (read + decide)", step_us)):
        print(
            f"{name:<28}{statistics.median(values):>10.0f}{_percentile(values, 0.99):>10.0f}"
            f"{max(values):>10.0f}{statistics.fmean(values):>10.0f}"
        )
    print(
        f"RSS: {rss_before:.1f} MiB after imports, {rss_after:.1f} MiB after the first message, "
        f"{_rss_mib():.1f} MiB at the end"
    )


if __name__ == "__main__":
    main()
