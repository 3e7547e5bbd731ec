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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests (``@pytest.mark.slow``, anywhere under tests/) run only when asked:
    ``pytest -m slow tests`` (``scripts/chaos pytest``); the multi-node tests
    (``@pytest.mark.cluster``) only with ``pytest -m cluster tests`` (``scripts/cluster test``).
    A session-wide hook: it sees every item."""
    asked = config.getoption("markexpr", "") or ""
    for marker, how in (("slow", "scripts/chaos pytest"), ("cluster", "scripts/cluster test")):
        if marker in asked:
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: run with `{how}`")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
