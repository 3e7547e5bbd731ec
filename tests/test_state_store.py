"""StateStore against the real Redis: compare-and-set commits, dedupe markers, outbox order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import trio

from botd.bridge import AsyncioBridge
from botd.config import RedisConfig
from botd.errors import TransientError
from botd.state_store import CommitResult, Loaded, Marker, StateStore, open_state_store
from tests.conftest import REDIS_URL

STATE_TTL = 3600
DEDUPE_TTL = 172800


@pytest.fixture
async def store(bridge: AsyncioBridge, redis_prefix: str) -> AsyncIterator[StateStore]:
    config = RedisConfig(url=REDIS_URL, key_prefix=redis_prefix, dedupe_ttl_seconds=DEDUPE_TTL)
    async with open_state_store(bridge, config, state_ttl_seconds=STATE_TTL) as s:
        yield s


@pytest.fixture
def sync_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        client.close()


def keys(client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=f"{prefix}*", count=1000)}


async def test_unknown_client_loads_empty(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    loaded = await store.load("17340089", "106773169")
    assert loaded == Loaded(version=0, state=None, marker=None)
    assert keys(sync_redis, redis_prefix) == set()


async def test_commit_then_load(store: StateStore) -> None:
    state = {"step": "WAITING_ADDRESS", "data": {"name": "Пётр"}, "v": 1}
    result = await store.commit("17", "m-1", expected_version=0, state=state, replies=("Адрес?",))
    assert result is CommitResult.COMMITTED
    loaded = await store.load("17", "m-2")
    assert loaded.version == 1
    assert loaded.state == state
    assert loaded.marker is None
    again = await store.load("17", "m-1")
    assert again.marker == Marker(replies=("Адрес?",), sent=False)

    result = await store.commit("17", "m-2", expected_version=1, state=None, replies=())
    assert result is CommitResult.COMMITTED
    idle = await store.load("17", "m-3")
    assert (idle.version, idle.state) == (2, None)
    assert (await store.load("17", "m-2")).marker == Marker(replies=(), sent=False)


async def test_stale_version_conflicts_and_changes_nothing(store: StateStore) -> None:
    first = {"step": "A"}
    assert await store.commit("17", "m-1", expected_version=0, state=first, replies=("r1",)) is (
        CommitResult.COMMITTED
    )
    result = await store.commit(
        "17", "m-2", expected_version=0, state={"step": "B"}, replies=("r2",)
    )
    assert result is CommitResult.CONFLICT
    loaded = await store.load("17", "m-2")
    assert loaded.version == 1
    assert loaded.state == first
    assert loaded.marker is None, "a conflicting commit must not leave a dedupe marker"
    # a version from the future is just as stale
    result = await store.commit("17", "m-2", expected_version=5, state={"step": "C"}, replies=())
    assert result is CommitResult.CONFLICT
    assert (await store.load("17", "m-2")).state == first


async def test_processed_message_is_a_duplicate(store: StateStore) -> None:
    assert await store.commit("17", "m-1", expected_version=0, state={"s": 1}, replies=("hi",)) is (
        CommitResult.COMMITTED
    )
    # the same message again, even from the right version, changes nothing
    result = await store.commit("17", "m-1", expected_version=1, state={"s": 2}, replies=("other",))
    assert result is CommitResult.DUPLICATE
    loaded = await store.load("17", "m-1")
    assert loaded.version == 1
    assert loaded.state == {"s": 1}
    assert loaded.marker == Marker(replies=("hi",), sent=False)
    # message ids are global: another client's commit with the same id is a duplicate too
    result = await store.commit("18", "m-1", expected_version=0, state={"s": 9}, replies=())
    assert result is CommitResult.DUPLICATE
    assert (await store.load("18", "m-x")).version == 0


async def test_concurrent_commits_from_one_version_commit_once(store: StateStore) -> None:
    results: list[tuple[int, CommitResult]] = []
    loaded = await store.load("17", "m-0")

    async def commit(i: int) -> None:
        result = await store.commit(
            "17", f"m-{i}", expected_version=loaded.version, state={"winner": i}, replies=(f"r{i}",)
        )
        results.append((i, result))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(commit, i)
    committed = [i for i, r in results if r is CommitResult.COMMITTED]
    assert len(results) == 20
    assert len(committed) == 1
    assert all(r is CommitResult.CONFLICT for i, r in results if i != committed[0])
    final = await store.load("17", f"m-{committed[0]}")
    assert final.version == 1
    assert final.state == {"winner": committed[0]}
    assert final.marker == Marker(replies=(f"r{committed[0]}",), sent=False)
    for i in range(20):
        if i != committed[0]:
            assert (await store.load("17", f"m-{i}")).marker is None


async def test_mark_sent(store: StateStore, sync_redis: redis.Redis, redis_prefix: str) -> None:
    await store.commit("17", "m-1", expected_version=0, state={"s": 1}, replies=("a", "b"))
    await store.mark_sent("m-1")
    loaded = await store.load("17", "m-1")
    assert loaded.marker == Marker(replies=("a", "b"), sent=True)
    await store.mark_sent("m-1")  # idempotent
    assert (await store.load("17", "m-1")).marker == Marker(replies=("a", "b"), sent=True)
    # mark_sent keeps the marker's TTL
    assert sync_redis.ttl(store.marker_key("m-1")) > DEDUPE_TTL - 60


async def test_mark_sent_of_unknown_message_creates_nothing(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    await store.mark_sent("never-seen")
    assert keys(sync_redis, redis_prefix) == set()
    assert (await store.load("17", "never-seen")).marker is None


async def test_ttls_are_set(store: StateStore, sync_redis: redis.Redis) -> None:
    await store.commit("17", "m-1", expected_version=0, state={"s": 1}, replies=("x",))
    dialog_ttl = sync_redis.ttl(store.dialog_key("17"))
    marker_ttl = sync_redis.ttl(store.marker_key("m-1"))
    assert STATE_TTL - 60 < dialog_ttl <= STATE_TTL
    assert DEDUPE_TTL - 60 < marker_ttl <= DEDUPE_TTL
    # an idle (cleared) dialog still expires
    await store.commit("17", "m-2", expected_version=1, state=None, replies=())
    assert STATE_TTL - 60 < sync_redis.ttl(store.dialog_key("17")) <= STATE_TTL
    await store.outbox_push("17", "batch-1", ttl_seconds=600)
    assert 540 < sync_redis.ttl(store.outbox_key("17")) <= 600


async def test_every_key_starts_with_the_prefix(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    client, message = "7319046628", "9910446521"  # unlikely to be used by anyone else
    await store.commit(client, message, expected_version=0, state={"s": 1}, replies=("x",))
    await store.mark_sent(message)
    await store.outbox_push(client, "b-1", ttl_seconds=60)
    assert keys(sync_redis, redis_prefix) == {
        f"{redis_prefix}dialog:{client}",
        f"{redis_prefix}seen:{message}",
        f"{redis_prefix}outbox:{client}",
    }
    for bare in (f"dialog:{client}", f"seen:{message}", f"outbox:{client}"):
        assert not sync_redis.exists(bare)
        assert not sync_redis.exists(f"botd:{bare}")


async def test_non_ascii_state_and_replies_round_trip(store: StateStore) -> None:
    state = {"address": "ул. Токтогула 125, кв. 4 — «дом»", "emoji": "🚰", "n": [1, 2.5, None]}
    replies = ("Спасибо! 👍", 'quote " and \\ backslash')
    assert await store.commit("17", "m-1", expected_version=0, state=state, replies=replies) is (
        CommitResult.COMMITTED
    )
    loaded = await store.load("17", "m-1")
    assert loaded.state == state
    assert loaded.marker == Marker(replies=replies, sent=False)


async def test_corrupt_state_loads_as_idle(store: StateStore, sync_redis: redis.Redis) -> None:
    sync_redis.hset(store.dialog_key("17"), mapping={"v": "4", "s": "{not json"})
    loaded = await store.load("17", "m-1")
    assert (loaded.version, loaded.state) == (4, None)
    sync_redis.hset(store.dialog_key("17"), mapping={"s": "[1, 2]"})
    assert (await store.load("17", "m-1")).state is None


async def test_outbox_list_keeps_order(store: StateStore, sync_redis: redis.Redis) -> None:
    assert await store.outbox_head("17") is None
    assert await store.outbox_pending("17") == 0
    for batch in ("b-1", "b-2", "b-3"):
        await store.outbox_push("17", batch, ttl_seconds=600)
    await store.outbox_push("18", "other", ttl_seconds=600)
    assert await store.outbox_pending("17") == 3
    assert await store.outbox_head("17") == "b-1"
    # finishing a later batch does not change the head
    await store.outbox_done("17", "b-2")
    assert await store.outbox_head("17") == "b-1"
    assert await store.outbox_pending("17") == 2
    await store.outbox_done("17", "b-1")
    assert await store.outbox_head("17") == "b-3"
    await store.outbox_done("17", "b-3")
    assert await store.outbox_head("17") is None
    assert await store.outbox_pending("17") == 0
    assert not sync_redis.exists(store.outbox_key("17"))
    assert await store.outbox_head("18") == "other"
    # finishing an unknown batch is harmless
    await store.outbox_done("18", "unknown")
    assert await store.outbox_pending("18") == 1


async def test_ping_and_unreachable_redis(
    bridge: AsyncioBridge, store: StateStore, redis_prefix: str
) -> None:
    assert await store.ping() is True
    config = RedisConfig(url="redis://127.0.0.1:1/0", key_prefix=redis_prefix)
    async with open_state_store(bridge, config, state_ttl_seconds=STATE_TTL) as down:
        with trio.fail_after(10):
            assert await down.ping() is False
            with pytest.raises(TransientError):
                await down.load("17", "m-1")
            with pytest.raises(TransientError):
                await down.commit("17", "m-1", expected_version=0, state={"s": 1}, replies=())


async def test_closed_store_is_transient(bridge: AsyncioBridge, redis_prefix: str) -> None:
    config = RedisConfig(url=REDIS_URL, key_prefix=redis_prefix)
    async with open_state_store(bridge, config, state_ttl_seconds=STATE_TTL) as s:
        pass
    with pytest.raises(TransientError):
        await s.load("17", "m-1")
