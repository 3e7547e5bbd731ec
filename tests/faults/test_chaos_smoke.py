"""A short chaos run (bench/chaos.py) in the suite: kill -9 and service restarts under traffic,
then the audit must show nothing lost, doubled, missing or out of order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.chaos import run_chaos
from botd.config import Config
from tests.faults.support import Replies

# Posts cut off by a kill leave httpx's request-body async generator unfinished; its
# ResourceWarning comes from the test's HTTP client, not from botd.
IGNORE_CUT_POSTS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@IGNORE_CUT_POSTS
async def test_chaos_smoke(make_config: Callable[..., Config], replies: Replies) -> None:
    config = make_config(rabbitmq_shards="4", rabbitmq_reconnect_max_seconds="2")
    report = await run_chaos(config, replies, seconds=40, customers=10, seed=7)
    print("\n" + "\n".join(report.lines()))
    assert report.kills + sum(report.restarts.values()) >= 3
    assert report.dialogs_started > 10
    assert report.orders_found == report.orders_expected > 0
    assert (report.lost, report.doubled, report.replies_missing, report.order_violations) == (
        0,
        0,
        0,
        0,
    ), report.problems


@IGNORE_CUT_POSTS
@pytest.mark.slow
async def test_chaos_long_with_rabbitmq_restarts(
    make_config: Callable[..., Config], replies: Replies
) -> None:
    config = make_config(rabbitmq_shards="4", rabbitmq_reconnect_max_seconds="2")
    report = await run_chaos(config, replies, seconds=120, customers=16, seed=11)
    print("\n" + "\n".join(report.lines()))
    assert report.kills >= 1 and sum(report.restarts.values()) >= 1
    assert report.orders_found == report.orders_expected > 0
    assert (report.lost, report.doubled, report.replies_missing, report.order_violations) == (
        0,
        0,
        0,
        0,
    ), report.problems
