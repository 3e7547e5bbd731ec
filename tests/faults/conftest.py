"""Fixtures of the fault tests (helpers live in :mod:`tests.faults.support`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from botd.config import Config
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.conftest import make_config
from tests.faults.support import Replies, ensure_services


@pytest.fixture(autouse=True)
def _services_left_running() -> Iterator[None]:
    """Whatever a test does to a shared service, every one is up again after it."""
    ensure_services()
    yield
    ensure_services()


@pytest.fixture
def make_cfg(
    amqp_vhost_url: str,
    queue_prefix: str,
    redis_prefix: str,
    migrated_dsn: str,
    fake: FakeChat2Desk,
) -> Callable[..., Config]:
    """Build the test's config with overrides (``section_key="value"``, e.g. rabbitmq_shards)."""

    def build(**overrides: str) -> Config:
        return make_config(
            amqp_url=amqp_vhost_url,
            queue_prefix=queue_prefix,
            redis_prefix=redis_prefix,
            pg_dsn=migrated_dsn,
            base_url=fake.base_url,
            **{f"BOTD_{k.upper()}": v for k, v in overrides.items()},
        )

    return build


@pytest.fixture
def replies(fake: FakeChat2Desk) -> Replies:
    """Delivered replies per customer, recorded as the fake answers them."""
    watcher = Replies()
    fake.on_record = watcher
    return watcher


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long fault tests (``@pytest.mark.slow``) run only when asked: ``pytest -m slow``."""
    if "slow" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="slow fault test: run with `pytest -m slow tests/faults`")
    for item in items:
        if "slow" in item.keywords and "faults" in item.nodeid:
            item.add_marker(skip)
