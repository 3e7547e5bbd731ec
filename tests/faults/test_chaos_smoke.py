"""A short chaos run (bench/chaos.py) in the suite: kill -9 and service restarts under traffic,
with slow-accepting and 502-after-accept Chat2Desk sends and an outbox echo of every send; the
audit must show nothing lost, doubled, missing or out of order, no reply delivered twice, no
customer left without an answer and no dialog handed off to an "operator"."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.chaos import ChaosReport, run_chaos
from botd.config import Config
from botd.testing.fake_chat2desk import FakeChat2Desk
from tests.faults.support import Replies

# Posts cut off by a kill leave httpx's request-body async generator unfinished; its
# ResourceWarning comes from the test's HTTP client, not from botd.
IGNORE_CUT_POSTS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
CHAOS = {
    "rabbitmq_shards": "4",
    "rabbitmq_reconnect_max_seconds": "2",
    # short, so that a slow accept (answered just after it) costs botd ~1.5 s, not ~10 s
    "chat2desk_timeout_seconds": "1",
}


def assert_clean(report: ChaosReport) -> None:
    print("\n" + "\n".join(report.lines()))
    assert report.orders_found == report.orders_expected > 0
    assert (report.lost, report.doubled, report.replies_missing, report.order_violations) == (
        0,
        0,
        0,
        0,
    ), report.problems
    assert (report.duplicate_replies, report.customers_unanswered, report.handoffs) == (
        0,
        0,
        0,
    ), report.problems
    assert report.slow_periods >= 1 and report.fails_hit >= 1, "Chat2Desk faults missing"
    assert report.echoes_posted > 0, "no echo reached botd"


@IGNORE_CUT_POSTS
async def test_chaos_smoke(
    make_config: Callable[..., Config], replies: Replies, fake: FakeChat2Desk
) -> None:
    config = make_config(**CHAOS)
    report = await run_chaos(config, replies, fake, seconds=40, customers=10, seed=7)
    assert_clean(report)
    assert report.kills + sum(report.restarts.values()) >= 3
    assert report.dialogs_started > 10


@IGNORE_CUT_POSTS
@pytest.mark.slow
async def test_chaos_long_with_rabbitmq_restarts(
    make_config: Callable[..., Config], replies: Replies, fake: FakeChat2Desk
) -> None:
    config = make_config(**CHAOS)
    report = await run_chaos(config, replies, fake, seconds=120, customers=16, seed=11)
    assert_clean(report)
    assert report.kills >= 1 and sum(report.restarts.values()) >= 1
