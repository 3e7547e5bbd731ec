"""Test doubles for botd's external services (importable by tests, benchmarks and chaos runs).

Names are imported lazily so that ``python -m botd.testing.fake_chat2desk`` does not import its
own module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botd.testing.fake_chat2desk import (
        FakeChat2Desk,
        FakeChat2DeskStatistics,
        RecordedRequest,
        open_fake_chat2desk,
        serve_fake_chat2desk,
    )

__all__ = [
    "FakeChat2Desk",
    "FakeChat2DeskStatistics",
    "RecordedRequest",
    "open_fake_chat2desk",
    "serve_fake_chat2desk",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("botd.testing.fake_chat2desk"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
