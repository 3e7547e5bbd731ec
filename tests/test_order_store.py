"""OrderStore against the real PostgreSQL: exactly one order per idempotency key
(docs/design.md §3.4)."""

from __future__ import annotations

import psycopg
import pytest
import trio

from botd.bridge import AsyncioBridge
from botd.config import PostgresConfig
from botd.dialog import OrderDraft
from botd.errors import PermanentError, SchemaError, TransientError
from botd.migrate import latest_version
from botd.order_store import open_order_store
from botd.ports import CancelOutcome, CancelResult
from tests.helpers import orders


def draft(key: str = "dialog-17340089-1", **changes: object) -> OrderDraft:
    values: dict[str, object] = {
        "idempotency_key": key,
        "client_id": "17340089",
        "phone": "+996555123456",
        "address": "ул. Токтогула 125, кв. 4",
        "quantity": 3,
    }
    values.update(changes)
    return OrderDraft(**values)  # type: ignore[arg-type]


async def test_place_returns_an_id_and_stores_the_row(
    bridge: AsyncioBridge, migrated_dsn: str
) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        order_id = await store.place(draft())
    assert isinstance(order_id, int)
    assert order_id > 0
    (row,) = orders(migrated_dsn)
    assert row["id"] == order_id
    assert row["idempotency_key"] == "dialog-17340089-1"
    assert row["client_phone"] == "+996555123456"
    assert row["delivery_address"] == "ул. Токтогула 125, кв. 4"
    assert row["quantity"] == 3
    assert row["chat2desk_client_id"] == "17340089"
    assert row["status"] == "placed"
    assert row["created_at"] is not None
    assert row["cancelled_at"] is None


async def test_same_key_again_returns_the_same_id(bridge: AsyncioBridge, migrated_dsn: str) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        first = await store.place(draft())
        # a redelivered confirmation, even with different details, finds the first order
        second = await store.place(draft(quantity=7, address="somewhere else entirely"))
        third = await store.place(draft())
    assert first == second == third
    (row,) = orders(migrated_dsn)
    assert row["quantity"] == 3


async def test_concurrent_places_of_one_key_make_one_row(
    bridge: AsyncioBridge, migrated_dsn: str
) -> None:
    ids: list[int] = []
    config = PostgresConfig(dsn=migrated_dsn, pool_min_size=4, pool_max_size=8)
    async with open_order_store(bridge, config) as store:

        async def place() -> None:
            ids.append(await store.place(draft("dialog-race")))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(place)
    assert len(ids) == 20
    assert len(set(ids)) == 1
    rows = orders(migrated_dsn)
    assert [r["id"] for r in rows] == [ids[0]]


async def test_concurrent_places_of_many_keys(bridge: AsyncioBridge, migrated_dsn: str) -> None:
    """Many keys, each placed twice at once: one row per key, both callers get its id."""
    ids: dict[str, list[int]] = {f"k-{i}": [] for i in range(10)}
    config = PostgresConfig(dsn=migrated_dsn, pool_min_size=2, pool_max_size=6)
    async with open_order_store(bridge, config) as store:

        async def place(key: str) -> None:
            ids[key].append(await store.place(draft(key)))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for key in ids:
                    nursery.start_soon(place, key)
                    nursery.start_soon(place, key)
    rows = orders(migrated_dsn)
    assert len(rows) == 10
    by_key = {r["idempotency_key"]: r["id"] for r in rows}
    for key, got in ids.items():
        assert got == [by_key[key], by_key[key]]


async def test_different_keys_get_different_ids(bridge: AsyncioBridge, migrated_dsn: str) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        a = await store.place(draft("dialog-a"))
        b = await store.place(draft("dialog-b"))
        c = await store.place(draft("dialog-c", client_id="99"))
    assert len({a, b, c}) == 3
    assert [r["id"] for r in orders(migrated_dsn)] == sorted([a, b, c])


@pytest.mark.parametrize(
    "changes",
    [
        {"phone": "abc"},
        {"phone": "+0123"},
        {"address": ""},
        {"quantity": 0},
        {"quantity": 2**40},  # does not fit the integer column
    ],
)
async def test_draft_the_database_rejects_is_permanent(
    bridge: AsyncioBridge, migrated_dsn: str, changes: dict[str, object]
) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        with pytest.raises(PermanentError) as info:
            await store.place(draft("dialog-bad", **changes))
        assert not isinstance(info.value, TransientError)
        assert "rejected by the database" in str(info.value)
        # the store stays usable
        assert await store.place(draft("dialog-good")) > 0
    assert [r["idempotency_key"] for r in orders(migrated_dsn)] == ["dialog-good"]


async def test_missing_table_is_permanent(bridge: AsyncioBridge, pg_dsn: str) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=pg_dsn)) as store:
        with pytest.raises(PermanentError) as info:
            await store.place(draft())
    assert "botd migrate" in str(info.value)


async def test_check_schema_refuses_an_unmigrated_schema(
    bridge: AsyncioBridge, pg_dsn: str
) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=pg_dsn)) as store:
        with pytest.raises(SchemaError) as info:
            await store.check_schema()
        assert "botd migrate" in str(info.value)
        assert await store.schema_version() is None


async def test_check_schema_refuses_an_unmigrated_schema_somehow(
    bridge: AsyncioBridge, pg_dsn: str
) -> None:
    """Whatever the error class, botd must not accept a schema without its tables."""
    async with open_order_store(bridge, PostgresConfig(dsn=pg_dsn)) as store:
        with pytest.raises((SchemaError, PermanentError)) as info:
            await store.check_schema()
    assert "botd migrate" in str(info.value)


async def test_check_schema_passes_on_migrated_and_refuses_newer(
    bridge: AsyncioBridge, migrated_dsn: str
) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        assert await store.schema_version() == latest_version()
        await store.check_schema()
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, 'future')",
                (latest_version() + 1,),
            )
        assert await store.schema_version() == latest_version() + 1
        with pytest.raises(SchemaError) as info:
            await store.check_schema()
        assert "newer" in str(info.value)


async def test_statistics(bridge: AsyncioBridge, migrated_dsn: str) -> None:
    config = PostgresConfig(dsn=migrated_dsn, pool_min_size=2, pool_max_size=3)
    async with open_order_store(bridge, config) as store:
        assert await store.ping()
        before = store.statistics()
        assert before.placed == 0
        assert 1 <= before.pool_size <= 3
        await store.place(draft("s-1"))
        await store.place(draft("s-2"))
        after = store.statistics()
        assert after.placed == 2
        assert 1 <= after.pool_size <= 3
        assert 0 <= after.pool_available <= after.pool_size
    closed = store.statistics()
    assert (closed.pool_size, closed.pool_available) == (0, 0)


async def test_ping(bridge: AsyncioBridge, migrated_dsn: str) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        assert await store.ping() is True


async def test_unreachable_database_is_transient(bridge: AsyncioBridge) -> None:
    config = PostgresConfig(dsn="postgresql://postgres@127.0.0.1:1/botd")
    async with open_order_store(bridge, config) as store:
        with trio.fail_after(10):
            assert await store.ping() is False
            with pytest.raises(TransientError):
                await store.place(draft(), timeout=0.5)


async def test_closed_store_is_transient(bridge: AsyncioBridge, migrated_dsn: str) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        pass
    with pytest.raises(TransientError):
        await store.place(draft())
    with pytest.raises(TransientError):
        await store.cancel("dialog-17340089-1")


# ---- cancel ---------------------------------------------------------------------------------


def set_status(dsn: str, order_id: int, status: str) -> None:
    """What the shop does: move the order on."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE orders SET status = %s, updated_at = now() WHERE id = %s", (status, order_id)
        )


async def test_cancel_a_placed_order(bridge: AsyncioBridge, migrated_dsn: str) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        order_id = await store.place(draft("k-cancel"))
        other_id = await store.place(draft("k-other"))
        (before, _) = orders(migrated_dsn)
        assert await store.cancel("k-cancel") == CancelResult(CancelOutcome.CANCELLED, order_id)
        assert store.statistics().cancelled == 1
    row, other = orders(migrated_dsn)
    assert row["id"] == order_id
    assert row["status"] == "cancelled"
    assert row["cancelled_at"] is not None
    assert row["updated_at"] == row["cancelled_at"] > before["updated_at"]
    # nothing else changed, neither in the row nor in the other order
    same = ("client_phone", "delivery_address", "quantity", "created_at", "idempotency_key")
    assert {k: row[k] for k in same} == {k: before[k] for k in same}
    assert (other["id"], other["status"], other["cancelled_at"]) == (other_id, "placed", None)


async def test_repeated_cancel_is_already_cancelled_and_changes_nothing(
    bridge: AsyncioBridge, migrated_dsn: str
) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        order_id = await store.place(draft("k-twice"))
        assert (await store.cancel("k-twice")).outcome is CancelOutcome.CANCELLED
        (first,) = orders(migrated_dsn)
        for _ in range(3):
            again = await store.cancel("k-twice")
            assert again == CancelResult(CancelOutcome.ALREADY_CANCELLED, order_id)
        # placing the same dialog again (a redelivered confirmation) does not revive it
        assert await store.place(draft("k-twice")) == order_id
        assert store.statistics().cancelled == 1
    assert orders(migrated_dsn) == [first]


@pytest.mark.parametrize("status", ["confirmed", "delivering", "delivered"])
async def test_cancel_after_the_shop_moved_the_order_on_is_too_late(
    bridge: AsyncioBridge, migrated_dsn: str, status: str
) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        order_id = await store.place(draft("k-late"))
        set_status(migrated_dsn, order_id, status)
        (before,) = orders(migrated_dsn)
        for _ in range(2):
            assert await store.cancel("k-late") == CancelResult(CancelOutcome.TOO_LATE, order_id)
        assert store.statistics().cancelled == 0
    assert orders(migrated_dsn) == [before]
    assert before["status"] == status
    assert before["cancelled_at"] is None


async def test_cancel_of_an_unknown_key_is_not_found(
    bridge: AsyncioBridge, migrated_dsn: str
) -> None:
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        assert await store.cancel("k-none") == CancelResult(CancelOutcome.NOT_FOUND, None)
        await store.place(draft("k-exists"))
        assert await store.cancel("k-none") == CancelResult(CancelOutcome.NOT_FOUND, None)
        assert await store.cancel("") == CancelResult(CancelOutcome.NOT_FOUND, None)
        assert await store.cancel("k-exists'; --") == CancelResult(CancelOutcome.NOT_FOUND, None)
    ((status, cancelled_at),) = [(r["status"], r["cancelled_at"]) for r in orders(migrated_dsn)]
    assert (status, cancelled_at) == ("placed", None)


async def test_concurrent_cancels_cancel_once(bridge: AsyncioBridge, migrated_dsn: str) -> None:
    results: list[CancelResult] = []
    config = PostgresConfig(dsn=migrated_dsn, pool_min_size=4, pool_max_size=8)
    async with open_order_store(bridge, config) as store:
        order_id = await store.place(draft("k-race"))

        async def cancel() -> None:
            results.append(await store.cancel("k-race"))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(cancel)
        assert store.statistics().cancelled == 1
    assert sorted(r.outcome for r in results) == sorted(
        [CancelOutcome.CANCELLED] + [CancelOutcome.ALREADY_CANCELLED] * 19
    )
    assert {r.order_id for r in results} == {order_id}
    ((status, cancelled_at),) = [(r["status"], r["cancelled_at"]) for r in orders(migrated_dsn)]
    assert status == "cancelled"
    assert cancelled_at is not None


async def wait_until_blocked_by(dsn: str, pid: int) -> None:
    """Until some backend waits for a lock that the backend ``pid`` holds."""
    with psycopg.connect(dsn, autocommit=True) as watcher, trio.fail_after(10):
        while True:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY (pg_blocking_pids(pid))",
                (pid,),
            ).fetchone()
            if row and row[0]:
                return
            await trio.sleep(0.01)


@pytest.mark.parametrize(
    ("change", "commit", "expected", "final"),
    [
        ("confirmed", True, CancelOutcome.TOO_LATE, "confirmed"),
        ("delivering", True, CancelOutcome.TOO_LATE, "delivering"),
        ("cancelled", True, CancelOutcome.ALREADY_CANCELLED, "cancelled"),
        ("confirmed", False, CancelOutcome.CANCELLED, "cancelled"),
    ],
)
async def test_cancel_acts_on_the_status_a_concurrent_change_left(
    bridge: AsyncioBridge,
    migrated_dsn: str,
    change: str,
    commit: bool,
    expected: CancelOutcome,
    final: str,
) -> None:
    """The shop changes the status while a cancel runs: the cancel waits for it and then acts on
    the committed status — it never overwrites a confirmation it did not see."""
    results: list[CancelResult] = []
    async with open_order_store(bridge, PostgresConfig(dsn=migrated_dsn)) as store:
        order_id = await store.place(draft("k-shop"))
        with psycopg.connect(migrated_dsn) as shop:  # a transaction, open until commit/rollback
            shop.execute(
                "UPDATE orders SET status = %s, updated_at = now() WHERE id = %s",
                (change, order_id),
            )

            async def cancel() -> None:
                results.append(await store.cancel("k-shop"))

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel)
                    await wait_until_blocked_by(migrated_dsn, shop.info.backend_pid)
                    assert results == []
                    if commit:
                        shop.commit()
                    else:
                        shop.rollback()
    assert results == [CancelResult(expected, order_id)]
    (row,) = orders(migrated_dsn)
    assert row["status"] == final
    assert (row["cancelled_at"] is not None) == (expected is CancelOutcome.CANCELLED)
