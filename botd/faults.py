"""Test-only crash points, so tests can prove the guarantees of docs/design.md §3 with ``kill -9``.

``BOTD_TEST_CRASH_AT=<point>[:<n>]`` makes the process SIGKILL itself the n-th time (default:
the first) processing reaches ``<point>``. Points: ``after_dedupe_check``, ``after_order_insert``,
``after_state_commit``, ``after_send``, ``before_ack``, ``after_events_handed_on`` (the
order-event relay published a batch and has not marked it yet). Unset (production),
:func:`crash_point` is one global read and a return.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after_dedupe_check",
    "after_order_insert",
    "after_state_commit",
    "after_send",
    "before_ack",
    "after_events_handed_on",
)


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"BOTD_TEST_CRASH_AT: unknown point {name!r}; known: {', '.join(POINTS)}")
    return name, int(count or "1")


_TARGET = _parse(os.environ.get("BOTD_TEST_CRASH_AT"))
_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if the test asked to crash here (never in production)."""
    if _TARGET is None or _TARGET[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
