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
    ``pytest -m slow tests`` (``scripts/chaos pytest``). A session-wide hook: it sees every item."""
    if "slow" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="slow test: run with `scripts/chaos pytest`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
