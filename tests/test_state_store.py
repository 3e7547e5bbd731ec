"""StateStore against the real Redis: compare-and-set commits, dedupe markers, outbox order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import trio

from botd import state_store
from botd.bridge import AsyncioBridge
from botd.config import RedisConfig
from botd.dialog import TimerKind
from botd.errors import TransientError
from botd.ports import DueTimer, SendLease
from botd.state_store import CommitResult, Loaded, Marker, StateStore, open_state_store
from tests.conftest import REDIS_URL

STATE_TTL = 3600
DEDUPE_TTL = 172800
T0 = 1_750_000_000.0  # a park's time, as time.time() gives it


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


async def test_versions_never_repeat_after_the_dialog_expired(
    store: StateStore, sync_redis: redis.Redis
) -> None:
    """Timer ids carry the version (``reminder-{client}-{version}``, 48 h dedupe markers): a
    customer who returns after the dialog key expired must not reach an earlier version."""
    seen: list[int] = []
    for dialog in range(3):
        for step in range(2):
            loaded = await store.load("17", f"m-{dialog}-{step}")
            result = await store.commit(
                "17",
                f"m-{dialog}-{step}",
                expected_version=loaded.version,
                state={"dialog": dialog, "step": step},
                replies=(),
            )
            assert result is CommitResult.COMMITTED
            seen.append((await store.load("17", "x")).version)
        sync_redis.delete(store.dialog_key("17"))  # as the state TTL would
        loaded = await store.load("17", "x")
        assert (loaded.version, loaded.state) == (seen[-1], None)
    assert seen == [1, 2, 3, 4, 5, 6]
    # the version key outlives the dialog until no timer or marker can carry an old version
    ttl = sync_redis.ttl(store.version_key("17"))
    assert STATE_TTL + 86400 + DEDUPE_TTL - 60 < ttl <= STATE_TTL + 86400 + DEDUPE_TTL
    # a stale load from before the expiry still conflicts
    result = await store.commit("17", "m-late", expected_version=5, state={"s": 1}, replies=())
    assert result is CommitResult.CONFLICT


async def test_a_dialog_from_before_the_version_key_goes_on_from_its_version(
    store: StateStore, sync_redis: redis.Redis
) -> None:
    sync_redis.hset(store.dialog_key("17"), mapping={"v": "41", "s": '{"step": "A"}'})
    loaded = await store.load("17", "m-1")
    assert loaded.version == 41
    result = await store.commit("17", "m-1", expected_version=41, state={"s": 1}, replies=())
    assert result is CommitResult.COMMITTED
    assert int(sync_redis.get(store.version_key("17")) or 0) == 42
    sync_redis.delete(store.dialog_key("17"))
    assert (await store.load("17", "m-2")).version == 42


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
    await store.outbox_push("17", "batch-1", parked_at=T0, due=T0 + 5, ttl_seconds=600)
    assert 540 < sync_redis.ttl(store.outbox_key("17")) <= 600
    assert 540 < sync_redis.ttl(store.outbox_meta_key("17")) <= 600


async def test_every_key_starts_with_the_prefix(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    client, message = "7319046628", "9910446521"  # unlikely to be used by anyone else
    await store.commit(client, message, expected_version=0, state={"s": 1}, replies=("x",))
    await store.mark_sent(message)
    await store.outbox_push(client, "b-1", parked_at=T0, due=T0 + 5, ttl_seconds=60)
    ours = {
        f"dialog:{client}",
        f"version:{client}",
        f"seen:{message}",
        f"outbox:{client}",
        f"outbox_meta:{client}",
        "outbox_waiting",
    }
    assert keys(sync_redis, redis_prefix) == {redis_prefix + key for key in ours}
    for bare in ours:
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
        await store.outbox_push("17", batch, parked_at=T0, due=T0 + 5, ttl_seconds=600)
    await store.outbox_push("18", "other", parked_at=T0, due=T0 + 5, ttl_seconds=600)
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


async def test_outbox_ttl_is_set_on_creation_and_on_progress_only(
    store: StateStore, sync_redis: redis.Redis
) -> None:
    """A park behind a batch that never goes (an orphan) must not keep the list alive."""
    await store.outbox_push("17", "orphan", parked_at=T0, due=T0 + 5, ttl_seconds=600)
    for key in (store.outbox_key("17"), store.outbox_meta_key("17")):
        assert 590 < sync_redis.ttl(key) <= 600
        sync_redis.expire(key, 100)  # time passes
    await store.outbox_push("17", "b-2", parked_at=T0 + 1, due=T0 + 6, ttl_seconds=600)
    await store.outbox_push("17", "b-3", parked_at=T0 + 2, due=T0 + 7, ttl_seconds=600)
    # a failed park's withdrawal is no progress either
    await store.outbox_done("17", "b-3", progress=False, ttl_seconds=600)
    for key in (store.outbox_key("17"), store.outbox_meta_key("17")):
        assert 0 < sync_redis.ttl(key) <= 100
    # a batch leaving the list is progress: the list lives on
    await store.outbox_done("17", "b-2", ttl_seconds=600)
    for key in (store.outbox_key("17"), store.outbox_meta_key("17")):
        assert 590 < sync_redis.ttl(key) <= 600


async def test_an_orphan_at_the_head_is_dropped_once_a_later_message_proves_it(
    store: StateStore, sync_redis: redis.Redis
) -> None:
    margin = 10.0
    # "orphan": pushed by a park killed before its publish (due in the outbox by T0 + 5)
    await store.outbox_push("17", "orphan", parked_at=T0, due=T0 + 5, ttl_seconds=600)
    await store.outbox_push("17", "b-2", parked_at=T0 + 1, due=T0 + 6, ttl_seconds=600)
    sync_redis.expire(store.outbox_key("17"), 100)

    async def check(proof: float | None) -> tuple[str | None, tuple[str, ...]]:
        return await store.outbox_check_head(
            "17", "b-2", proof=proof, margin=margin, now=T0 + 60, grace=300, ttl_seconds=600
        )

    # b-2 could have entered the outbox queue before "orphan" was due there (+ the margin):
    # nothing is proven yet
    assert await check(None) == ("orphan", ())
    assert await check(T0 + 5 + margin) == ("orphan", ())
    assert await store.outbox_oldest() == ("17", T0)
    # b-2 entered the queue after "orphan" should have been handled: "orphan" is in no queue
    assert await check(T0 + 5 + margin + 0.5) == ("b-2", ("orphan",))
    assert await store.outbox_pending("17") == 1
    assert set(sync_redis.hkeys(store.outbox_meta_key("17"))) == {b"p:b-2", b"d:b-2"}
    assert await store.outbox_oldest() == ("17", T0 + 1)  # the gauge follows the head
    assert 590 < sync_redis.ttl(store.outbox_key("17")) <= 600  # progress
    assert await check(T0 + 1000) == ("b-2", ())  # never the batch being handled itself


async def test_a_batch_due_back_later_is_no_orphan(store: StateStore) -> None:
    await store.outbox_push("17", "b-1", parked_at=T0, due=T0 + 5, ttl_seconds=600)
    await store.outbox_push("17", "b-2", parked_at=T0 + 1, due=T0 + 6, ttl_seconds=600)
    # b-1 went to a 300 s wait queue at T0 + 100: it is due back in the outbox by T0 + 405
    assert await store.outbox_seen("17", "b-1", due=T0 + 405)
    assert not await store.outbox_seen("17", "replayed", due=T0 + 405)  # not pending: nothing
    head = await store.outbox_check_head(
        "17", "b-2", proof=T0 + 400, margin=10, now=T0 + 400, grace=300, ttl_seconds=600
    )
    assert head == ("b-1", ())
    # an entry parked by an older botd (no due time) is given ``now + grace`` to show up
    await store.outbox_push("18", "new", parked_at=T0, due=T0 + 5, ttl_seconds=600)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.lpush(store.outbox_key("18"), "legacy")
    finally:
        client.close()
    head = await store.outbox_check_head(
        "18", "new", proof=T0 + 100, margin=10, now=T0 + 100, grace=300, ttl_seconds=600
    )
    assert head == ("legacy", ())
    head = await store.outbox_check_head(
        "18", "new", proof=T0 + 411, margin=10, now=T0 + 411, grace=300, ttl_seconds=600
    )
    assert head == ("new", ("legacy",))


async def test_the_oldest_waiting_reply_across_customers(
    store: StateStore, sync_redis: redis.Redis
) -> None:
    assert await store.outbox_oldest() is None
    await store.outbox_push("17", "a-1", parked_at=T0 + 10, due=T0 + 15, ttl_seconds=600)
    await store.outbox_push("18", "b-1", parked_at=T0 + 5, due=T0 + 10, ttl_seconds=600)
    await store.outbox_push("17", "a-2", parked_at=T0 + 20, due=T0 + 25, ttl_seconds=600)
    await store.outbox_push("18", "b-2", parked_at=T0 + 30, due=T0 + 35, ttl_seconds=600)
    assert await store.outbox_oldest() == ("18", T0 + 5)
    await store.outbox_done("18", "b-1")
    assert await store.outbox_oldest() == ("17", T0 + 10)
    await store.outbox_done("17", "a-1")
    assert await store.outbox_oldest() == ("17", T0 + 20)
    await store.outbox_done("17", "a-2")
    assert await store.outbox_oldest() == ("18", T0 + 30)
    # a list that expired (its customer's entry lingers) is cleaned up when next looked at
    sync_redis.delete(store.outbox_key("18"))
    assert await store.outbox_oldest() == ("18", T0 + 30)
    head = await store.outbox_check_head(
        "18", None, proof=T0 + 1000, margin=10, now=T0 + 1000, grace=300, ttl_seconds=600
    )
    assert head == (None, ())
    assert await store.outbox_oldest() is None
    assert not sync_redis.exists(store.outbox_meta_key("18"))


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


# ---- the send lease taken by a committed step ------------------------------------------------


async def commit_leased(
    store: StateStore, lease: SendLease, *, expected_version: int = 0, seconds: float = 12.0
) -> CommitResult:
    """Commit customer 17's step m-1 (one reply), asking for ``lease`` for ``seconds``."""
    return await store.commit(
        "17", "m-1", expected_version=expected_version, state={"s": 1}, replies=("hi",),
        lease=lease, lease_seconds=seconds,
    )  # fmt: skip


async def test_commit_takes_the_free_send_lease(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    lease = SendLease("17", "host:1:aa")
    result = await commit_leased(store, lease)
    assert result is CommitResult.COMMITTED
    key = f"{redis_prefix}sending:17"
    assert sync_redis.get(key) == b"host:1:aa"
    assert 11_000 < sync_redis.pttl(key) <= 12_000


async def test_commit_leaves_another_holders_lease_alone(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}sending:17"
    sync_redis.set(key, "other:2:bb", px=5000)
    mine = SendLease("17", "host:1:aa")
    result = await commit_leased(store, mine)
    assert result is CommitResult.COMMITTED  # the step is done all the same
    assert sync_redis.get(key) == b"other:2:bb"
    left, holder = await store.take_send_lease(mine, 12.0)  # asks Redis: not known as ours
    assert holder == "other:2:bb" and 0 < left <= 5.0


async def test_conflicting_commit_takes_no_lease(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    lease = SendLease("17", "host:1:aa")
    result = await commit_leased(store, lease, expected_version=3)
    assert result is CommitResult.CONFLICT
    assert sync_redis.get(f"{redis_prefix}sending:17") is None


async def test_a_fresh_lease_is_not_asked_for_again(
    store: StateStore,
    sync_redis: redis.Redis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Taken by the commit: the next take answers from what this process knows (the key deleted
    behind its back stays deleted: no round trip). Once given back, Redis is asked again."""
    monkeypatch.setattr(state_store, "LEASE_FRESH_SECONDS", 60.0)  # no slow machine's race
    lease = SendLease("17", "host:1:aa")
    await commit_leased(store, lease, seconds=120.0)
    key = f"{redis_prefix}sending:17"
    sync_redis.delete(key)
    assert await store.take_send_lease(lease, 120.0) == (0.0, "host:1:aa")
    assert sync_redis.get(key) is None
    await store.mark_sent("m-1", lease=lease)
    assert await store.take_send_lease(lease, 120.0) == (0.0, "host:1:aa")
    assert sync_redis.get(key) == b"host:1:aa"  # asked Redis, and took it there


async def test_an_older_lease_is_renewed_in_redis(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    """Taken longer ago than LEASE_FRESH_SECONDS allows for the TTL asked: renewed in Redis."""
    lease = SendLease("17", "host:1:aa")
    await commit_leased(store, lease, seconds=2.0)
    key = f"{redis_prefix}sending:17"
    sync_redis.delete(key)
    # asking for more than the commit's TTL less the slack: not known to last that long
    assert await store.take_send_lease(lease, 2.0 + state_store.LEASE_FRESH_SECONDS + 1) == (
        0.0,
        "host:1:aa",
    )
    assert sync_redis.get(key) == b"host:1:aa"


# ---- dialog timers kept with the state they are set for ---------------------------------------


async def test_a_timer_is_kept_only_with_its_committed_state(store: StateStore) -> None:
    reminder = DueTimer(TimerKind.REMINDER, 1, T0 + 1800)
    assert await store.commit(
        "17", "m-1", expected_version=0, state={"s": 1}, replies=(), timer=reminder
    ) is CommitResult.COMMITTED  # fmt: skip
    lost = DueTimer(TimerKind.REMINDER, 1, T0 + 60)  # a step that lost the race
    assert await store.commit(
        "17", "m-2", expected_version=0, state={"s": 2}, replies=(), timer=lost
    ) is CommitResult.CONFLICT  # fmt: skip
    assert await store.claim_due_timers(T0 + 1799, claim_seconds=30, limit=10) == []
    assert await store.claim_due_timers(T0 + 1800, claim_seconds=30, limit=10) == [
        ("17", "reminder:1")
    ]


async def test_a_newer_commit_replaces_the_customers_timer(store: StateStore) -> None:
    for version in (1, 2):
        result = await store.commit(
            "17", f"m-{version}", expected_version=version - 1, state={"s": version},
            replies=(), timer=DueTimer(TimerKind.REMINDER, version, T0 + 100 * version),
        )  # fmt: skip
        assert result is CommitResult.COMMITTED
    await store.commit(
        "18", "m-9", expected_version=0, state={"s": 1}, replies=(),
        timer=DueTimer(TimerKind.EXPIRE, 1, T0 + 50),
    )  # fmt: skip
    # one timer per customer, the newest: 17's first one (due at T0 + 100) is gone
    assert await store.claim_due_timers(T0 + 150, claim_seconds=30, limit=10) == [
        ("18", "expire:1")
    ]
    await store.timer_moved("18", "expire:1")
    assert await store.claim_due_timers(T0 + 200, claim_seconds=30, limit=10) == [
        ("17", "reminder:2")
    ]


async def test_a_claimed_timer_comes_due_again_unless_reported_moved(store: StateStore) -> None:
    """A mover killed between the claim and the publish loses nothing."""
    await store.commit(
        "17", "m-1", expected_version=0, state={"s": 1}, replies=(),
        timer=DueTimer(TimerKind.REMINDER, 1, T0),
    )  # fmt: skip
    assert await store.claim_due_timers(T0, claim_seconds=30, limit=10) == [("17", "reminder:1")]
    assert await store.claim_due_timers(T0 + 29, claim_seconds=30, limit=10) == []  # claimed
    assert await store.claim_due_timers(T0 + 30, claim_seconds=30, limit=10) == [
        ("17", "reminder:1")
    ]  # the claim ran out: due again
    await store.timer_moved("17", "reminder:1")
    assert await store.claim_due_timers(T0 + 1000, claim_seconds=30, limit=10) == []


async def test_a_timer_set_while_the_older_one_was_moved_stays(
    store: StateStore, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    await store.commit(
        "17", "m-1", expected_version=0, state={"s": 1}, replies=(),
        timer=DueTimer(TimerKind.REMINDER, 1, T0),
    )  # fmt: skip
    assert await store.claim_due_timers(T0, claim_seconds=30, limit=10) == [("17", "reminder:1")]
    await store.commit(
        "17",
        "m-2",
        expected_version=1,
        state={"s": 2},
        replies=(),
        timer=DueTimer(TimerKind.REMINDER, 2, T0 + 1800),
    )  # fmt: skip  (the customer wrote while the old one was being published)
    await store.timer_moved("17", "reminder:1")
    assert sync_redis.hgetall(f"{redis_prefix}timer_specs") == {b"17": b"reminder:2"}
    assert await store.claim_due_timers(T0 + 1800, claim_seconds=30, limit=10) == [
        ("17", "reminder:2")
    ]


async def test_claims_take_at_most_the_limit_earliest_first(store: StateStore) -> None:
    for n in range(5):
        await store.commit(
            str(20 + n), f"m-2{n}", expected_version=0, state={"s": 1}, replies=(),
            timer=DueTimer(TimerKind.REMINDER, 1, T0 - n),
        )  # fmt: skip
    first = await store.claim_due_timers(T0, claim_seconds=30, limit=3)
    assert [client for client, _ in first] == ["24", "23", "22"]
    rest = await store.claim_due_timers(T0, claim_seconds=30, limit=3)
    assert [client for client, _ in rest] == ["21", "20"]
