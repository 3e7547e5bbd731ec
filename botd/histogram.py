"""A histogram counted in memory by the component that observes it, read at scrape time.

The component keeps the counts (no metrics library in its code); :mod:`botd.metrics` turns a
:class:`HistogramSnapshot` into a Prometheus histogram.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative counts: ``cumulative[i]`` observations were ``<= bounds[i]`` (Prometheus
    ``le``); ``count`` is every observation (the ``+Inf`` bucket) and ``total`` their sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    total: float


class BucketHistogram:
    """Counts of observations per bucket (upper bounds inclusive, ascending)."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self._bounds = tuple(sorted(bounds))
        self._counts = [0] * len(self._bounds)
        self._count = 0
        self._total = 0.0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self._bounds, value)  # the first bound >= value
        if i < len(self._counts):
            self._counts[i] += 1
        self._count += 1
        self._total += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(
            self._bounds, tuple(itertools.accumulate(self._counts)), self._count, self._total
        )
