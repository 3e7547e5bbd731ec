"""The garbage-collector lever (botd.gc_tuning): pauses recorded per generation, start-up objects
frozen, thresholds set once per process, and the metric families the dashboard reads."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from botd import gc_tuning
from botd.gc_tuning import PAUSE_BUCKETS, PauseRecorder
from botd.metrics import _gc_metrics


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """Put the collector back as it was: thresholds, frozen objects, callbacks, once-flag."""
    thresholds = gc.get_threshold()
    frozen = gc.get_freeze_count()
    callbacks = list(gc.callbacks)
    tuned = gc_tuning._tuned
    yield
    if gc.get_freeze_count() != frozen:
        gc.unfreeze()  # also what an earlier daemon in this process froze: harmless
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks
    gc_tuning._tuned = tuned


def test_recorder_times_a_forced_full_collection(restore_gc: None) -> None:
    recorder = PauseRecorder()
    before = recorder.statistics()
    recorder.install()
    recorder.install()  # once only
    assert sum(cb is recorder for cb in gc.callbacks) == 1
    gc.collect(2)
    recorder.uninstall()
    gc.collect(2)  # no longer recorded
    after = recorder.statistics()

    full = after.pauses["2"]
    assert full.count == 1 and full.total > 0
    assert full.total == pytest.approx(after.longest["2"])
    assert after.collections["2"] >= before.collections["2"] + 2  # the process's own count
    assert not recorder.installed


def test_pauses_land_in_their_bucket_by_generation() -> None:
    ticks = itertools.count()
    times = [0.0, 0.003, 1.0, 1.0004, 2.0, 2.2]  # 3 ms, 0.4 ms, 200 ms
    recorder = PauseRecorder(clock=lambda: times[next(ticks)])
    recorder("start", {"generation": 1})
    recorder("stop", {"generation": 1, "collected": 0, "uncollectable": 0})
    recorder("start", {"generation": 0})
    recorder("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    recorder("stop", {"generation": 2})  # a stop without its start: not a pause
    recorder("start", {"generation": 2})
    recorder("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    stats = recorder.statistics()

    def per_bucket(generation: str) -> dict[float, int]:
        h = stats.pauses[generation]
        return dict(zip(h.bounds, h.cumulative, strict=True))

    assert per_bucket("1")[0.0025] == 0 and per_bucket("1")[0.005] == 1
    assert per_bucket("0")[0.0005] == 1
    assert stats.pauses["2"].count == 1 and per_bucket("2")[PAUSE_BUCKETS[-1]] == 0  # > 100 ms
    assert stats.longest == pytest.approx({"0": 0.0004, "1": 0.003, "2": 0.2})


def test_tune_freezes_what_exists_and_sets_the_thresholds(restore_gc: None) -> None:
    startup_object: list[list[int]] = [[1], [2]]  # a tracked container alive at start-up
    assert any(o is startup_object for o in gc.get_objects())
    frozen = gc_tuning.tune((12_345, 7, 9))
    assert frozen == gc.get_freeze_count() > 0
    assert gc.get_threshold() == (12_345, 7, 9)
    # out of the collector's view: no generation holds it any more, and young counts restart
    assert not any(o is startup_object for o in gc.get_objects())
    assert gc.get_count()[1:] == (0, 0)
    later: list[int] = [3]
    assert any(o is later for o in gc.get_objects(generation=0))


def test_after_startup_tunes_once_and_always_records(restore_gc: None) -> None:
    gc_tuning._tuned = False
    gc_tuning.RECORDER.uninstall()
    gc_tuning.after_startup({gc_tuning.ENV_ENABLED: "0"})
    assert gc_tuning.RECORDER.installed  # off: no tuning, but the pauses are still recorded
    assert not gc_tuning._tuned

    gc_tuning.after_startup({gc_tuning.ENV_THRESHOLDS: "20000,5,5"})
    assert gc.get_threshold() == (20_000, 5, 5) and gc.get_freeze_count() > 0
    gc.set_threshold(700, 10, 10)
    gc_tuning.after_startup({})  # a second daemon in this process: not again
    assert gc.get_threshold() == (700, 10, 10)
    assert sum(cb is gc_tuning.RECORDER for cb in gc.callbacks) == 1


def test_environment_switches() -> None:
    assert gc_tuning.enabled({}) and gc_tuning.enabled({gc_tuning.ENV_ENABLED: "1"})
    assert not gc_tuning.enabled({gc_tuning.ENV_ENABLED: "0"})
    assert gc_tuning.thresholds({}) == gc_tuning.THRESHOLDS
    assert gc_tuning.thresholds({gc_tuning.ENV_THRESHOLDS: "5000, 10, 20"}) == (5000, 10, 20)
    for bad in ("5000,10", "0,10,10", "a,b,c"):
        with pytest.raises(ValueError):
            gc_tuning.thresholds({gc_tuning.ENV_THRESHOLDS: bad})


class _Only(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def test_metric_families_expose_the_recorded_pauses() -> None:
    ticks = itertools.count()
    recorder = PauseRecorder(clock=lambda: next(ticks) * 0.004)  # every pause: 4 ms
    for _ in range(3):
        recorder("start", {"generation": 0})
        recorder("stop", {"generation": 0})
    registry = CollectorRegistry()
    registry.register(_Only(_gc_metrics({"gc": recorder.statistics()})))
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("botd_gc_pause_seconds_bucket", generation="0", le="0.0025") == 0
    assert value("botd_gc_pause_seconds_bucket", generation="0", le="0.005") == 3
    assert value("botd_gc_pause_seconds_count", generation="0") == 3
    assert value("botd_gc_pause_seconds_sum", generation="0") == pytest.approx(0.012)
    assert value("botd_gc_pause_seconds_count", generation="2") == 0
    assert value("botd_gc_pause_max_seconds", generation="0") == pytest.approx(0.004)
    assert {"0", "1", "2"} == {
        dict(labels)["generation"]
        for name, labels in samples
        if name == "botd_gc_collections_total"
    }
    assert value("botd_gc_frozen_objects") == gc.get_freeze_count()
    assert list(_gc_metrics({})) == []  # no "gc" key (no daemon statistics yet): nothing
