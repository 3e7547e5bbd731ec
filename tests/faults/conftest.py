"""Fixtures of the fault tests (helpers live in :mod:`tests.faults.support`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.faults.support import Replies, ensure_services


@pytest.fixture(autouse=True)
def _services_left_running() -> Iterator[None]:
    """Whatever a test does to a shared service, every one is up again after it."""
    ensure_services()
    yield
    ensure_services()


@pytest.fixture
def replies(fake: FakeChat2Desk) -> Replies:
    """Delivered replies per customer, recorded as the fake answers them."""
    watcher = Replies()
    fake.on_record = watcher
    return watcher
