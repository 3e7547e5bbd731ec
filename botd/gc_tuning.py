"""The cyclic garbage collector: tuned once after start-up, and its pauses recorded.

CPython's collector stops the whole process (both threads: it holds the GIL) while it walks the
objects of the generation it collects. A gen-2 ("full") collection walks every tracked container
— after start-up about 100,000 of them (modules, functions, classes, the dialog tables, Quart,
aiormq, psycopg…), almost none of which will ever be garbage — and paused botd for 30-150 ms
under load (bench/bench_gc.py).

:func:`after_startup` (called by the daemon once the webhook serves, before ``READY=1``) runs one
full collection, then ``gc.freeze()``: the survivors move to the permanent generation, which no
collection walks again; and it raises the thresholds (:data:`THRESHOLDS`, measured with
``bench/bench_gc.py``) so that the young generation is collected less often. It happens once per
process (a second daemon in the same test process does not freeze again). The cost: a frozen
object that later becomes part of a garbage cycle is never freed — bounded by what existed at
start-up, each at most once.
``BOTD_TEST_GC_TUNING=0`` leaves the collector as Python sets it (the benchmark's baseline);
``BOTD_TEST_GC_THRESHOLDS=a,b,c`` tries other thresholds.

:class:`PauseRecorder` times every collection through ``gc.callbacks`` (per generation) into a
:class:`~botd.histogram.BucketHistogram`; :mod:`botd.metrics` exposes it as
``botd_gc_pause_seconds{generation}``, ``botd_gc_pause_max_seconds{generation}`` and
``botd_gc_collections_total{generation}`` (with ``botd_gc_frozen_objects``).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from botd.histogram import BucketHistogram, HistogramSnapshot

log = logging.getLogger("botd.gc")

# Measured with bench/bench_gc.py and per-collection timings (2 cores, paced dialogs): once the
# start-up objects are frozen, a full collection takes 2-8 ms instead of 50-150 ms, and a young
# collection costs about 0.3 ms per 1,000 net new objects, mostly botd's own cyclic garbage (an
# httpx Response and its stream, ~45 objects per Chat2Desk call), freed in the pause: 700 (Python's
# default) -> 0.3 ms pauses but ~10 collections a second; 10,000 -> 2-3.5 ms, one every few seconds
# and the least time in GC; 50,000 -> 25-78 ms (worse than no tuning). Gen-1 and gen-2 keep
# Python's 10 and 10: after the freeze they walk only what survived since start-up.
THRESHOLDS = (10_000, 10, 10)
PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
GENERATIONS = ("0", "1", "2")
ENV_ENABLED = "BOTD_TEST_GC_TUNING"
ENV_THRESHOLDS = "BOTD_TEST_GC_THRESHOLDS"

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class GcStatistics:
    """What the metrics read at scrape time: per generation (``"0"``, ``"1"``, ``"2"``) the
    pauses and the longest one, the process's collections, and the objects frozen at start-up."""

    pauses: Mapping[str, HistogramSnapshot]
    longest: Mapping[str, float]
    collections: Mapping[str, int]
    frozen: int


class PauseRecorder:
    """A ``gc.callbacks`` callback: the time from each collection's ``start`` to its ``stop``.

    A collection never overlaps another (CPython collects under the GIL and does not re-enter
    the collector), so one start time is enough, whichever thread triggered it.
    """

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._started: float | None = None
        self._pauses = {g: BucketHistogram(PAUSE_BUCKETS) for g in GENERATIONS}
        self._longest = dict.fromkeys(GENERATIONS, 0.0)

    def __call__(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        started, self._started = self._started, None
        if started is None:  # installed half-way through a collection
            return
        pause = self._clock() - started
        generation = str(info.get("generation", 2))
        self._pauses[generation].observe(pause)
        if pause > self._longest[generation]:
            self._longest[generation] = pause

    @property
    def installed(self) -> bool:
        return any(callback is self for callback in gc.callbacks)

    def install(self) -> None:
        """Add to ``gc.callbacks`` (once)."""
        if not self.installed:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        gc.callbacks[:] = [callback for callback in gc.callbacks if callback is not self]

    def statistics(self) -> GcStatistics:
        return GcStatistics(
            pauses={g: h.snapshot() for g, h in self._pauses.items()},
            longest=dict(self._longest),
            collections={
                g: s["collections"] for g, s in zip(GENERATIONS, gc.get_stats(), strict=True)
            },
            frozen=gc.get_freeze_count(),
        )


RECORDER = PauseRecorder()
_tuned = False


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether to tune (``BOTD_TEST_GC_TUNING=0`` turns it off; any other value or none: on)."""
    return (os.environ if env is None else env).get(ENV_ENABLED, "1").strip() != "0"


def thresholds(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """:data:`THRESHOLDS`, or ``BOTD_TEST_GC_THRESHOLDS=a,b,c`` when set."""
    raw = (os.environ if env is None else env).get(ENV_THRESHOLDS, "").strip()
    if not raw:
        return THRESHOLDS
    parts = [int(p) for p in raw.split(",")]
    if len(parts) != 3 or min(parts) < 1:
        raise ValueError(
            f"{ENV_THRESHOLDS}={raw!r}: give three positive integers, e.g. 10000,10,10"
        )
    return parts[0], parts[1], parts[2]


def tune(limits: tuple[int, int, int] = THRESHOLDS) -> int:
    """Collect everything, freeze the survivors, set ``limits``; return the objects frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*limits)
    return gc.get_freeze_count()


def after_startup(env: Mapping[str, str] | None = None) -> None:
    """Start recording pauses; tune the collector unless turned off (once per process)."""
    global _tuned
    if not _tuned and enabled(env):
        _tuned = True
        limits = thresholds(env)
        started = time.perf_counter()
        frozen = tune(limits)
        log.info(
            "gc: %d start-up objects frozen in %.0f ms; thresholds %s",
            frozen,
            (time.perf_counter() - started) * 1000,
            limits,
        )
    RECORDER.install()  # after the start-up collection: the pauses are those of serving


def statistics() -> GcStatistics:
    """The process's collector statistics (:data:`RECORDER`'s pauses since it was installed)."""
    return RECORDER.statistics()
