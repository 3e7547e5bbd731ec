"""PostgreSQL adapter (psycopg 3 async pool on the bridged loop): orders, created exactly once.

:meth:`OrderStore.place` inserts under the dialog's idempotency key with
``ON CONFLICT DO NOTHING`` and reads the row back in the same statement, so a redelivered
confirmation finds the order it already created. :meth:`OrderStore.cancel` locks the order,
reads its current status and cancels it only when still 'placed', all in one statement, so a
concurrent status change (by the shop or a second cancel) is never overwritten. Only parameters
reach the SQL text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
import trio

from botd.bridge import AsyncioBridge
from botd.config import PostgresConfig
from botd.dialog import OrderDraft
from botd.errors import PermanentError, TransientError
from botd.histogram import BucketHistogram, HistogramSnapshot
from botd.migrate import check_version
from botd.order_lifecycle import ORDER_COLUMNS
from botd.ports import CancelOutcome, CancelResult

log = logging.getLogger("botd.orders")

# The order and its ``order.placed`` event (botd.order_lifecycle) in one statement: both or none.
_PLACE = """
WITH ins AS (
    INSERT INTO orders (idempotency_key, client_phone, delivery_address, quantity,
                        chat2desk_client_id, status, source, locale, dialog_started_at)
    VALUES (%(key)s, %(phone)s, %(address)s, %(quantity)s, %(client_id)s, 'placed', 'chat2desk',
            %(locale)s, CASE WHEN %(started)s::float8 > 0 THEN to_timestamp(%(started)s) END)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
),
event AS (
    INSERT INTO order_events (order_id, type, from_status, to_status, actor)
    SELECT id, 'order.placed', NULL, 'placed', 'customer' FROM ins
)
SELECT id, true AS created FROM ins
UNION ALL
SELECT id, false AS created FROM orders WHERE idempotency_key = %(key)s
LIMIT 1
"""

_FIND = "SELECT id, false AS created FROM orders WHERE idempotency_key = %(key)s"

# FOR UPDATE waits for a concurrent change of the row and then reads its newest committed
# version (READ COMMITTED), so `target.status` is the status the UPDATE acts on; the lock keeps
# it so until the statement commits. Two concurrent cancels: one CANCELLED, one ALREADY_CANCELLED.
_CANCEL = """
WITH target AS (
    SELECT id, status FROM orders WHERE idempotency_key = %(key)s FOR UPDATE
),
cancelled AS (
    UPDATE orders SET status = 'cancelled', cancelled_at = now(), updated_at = now()
    FROM target
    WHERE orders.id = target.id AND target.status = 'placed'
    RETURNING orders.id
),
event AS (
    INSERT INTO order_events (order_id, type, from_status, to_status, actor)
    SELECT id, 'order.cancelled', 'placed', 'cancelled', 'customer' FROM cancelled
)
SELECT target.id, target.status, cancelled.id IS NOT NULL AS cancelled_now
FROM target LEFT JOIN cancelled ON cancelled.id = target.id
"""

# The relay's view of the events not yet handed to RabbitMQ, oldest first (botd.order_events).
_UNPUBLISHED = f"""
SELECT e.id, e.event_id, e.type, e.from_status, e.to_status, e.actor, e.note, e.created_at,
       o.locale, {ORDER_COLUMNS}
FROM order_events e JOIN orders o ON o.id = e.order_id
WHERE e.published_at IS NULL
ORDER BY e.id
LIMIT %(limit)s
"""  # noqa: S608 (ORDER_COLUMNS is botd's constant, not input)
_MARK_PUBLISHED = (
    "UPDATE order_events SET published_at = now() WHERE id = ANY(%(ids)s) AND published_at IS NULL"
)

# Longest wait for a pooled connection before asking again (see OrderStore._run).
_ACQUIRE_SLICE = 1.0

_TOO_LATE = frozenset({"confirmed", "delivering", "delivered"})

# Seconds from a customer's first message to the order: 30 s, 1-30 min, 1-24 h.
ORDER_SECONDS_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True, slots=True)
class OrderStoreStatistics:
    placed: int
    cancelled: int
    pool_size: int
    pool_available: int
    # seconds from the dialog's first message to each new order (when its start is known)
    from_first_message: HistogramSnapshot


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        # a stand-by (or a primary just demoted): the write will work on the primary, which the
        # next connection finds (target_session_attrs=read-write); checked first because an
        # order must never be given up on (PermanentError) for where the database runs
        return TransientError(f"postgres is read-only here (a stand-by?): {_one_line(exc)}")
    if isinstance(exc, psycopg.errors.IntegrityError | psycopg.errors.DataError):
        return PermanentError(f"order rejected by the database: {exc.diag.message_primary}")
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return PermanentError("the orders table is missing; run `botd migrate`")
    if isinstance(exc, psycopg.Error | psycopg_pool.PoolTimeout | OSError):
        # libpq's messages span lines ("server closed the connection unexpectedly\n\tThis
        # probably means…"): one log line per retry keeps the log greppable
        return TransientError(f"postgres unavailable: {type(exc).__name__}: {_one_line(exc)}")
    return exc


class OrderStore:
    """Orders in PostgreSQL behind plain Trio methods."""

    def __init__(self, bridge: AsyncioBridge, config: PostgresConfig) -> None:
        self._bridge = bridge
        self._config = config
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._placed = 0
        self._cancelled = 0
        self._from_first_message = BucketHistogram(ORDER_SECONDS_BUCKETS)
        # called after a change that wrote an order event (the relay sends it on at once)
        self.on_change: Callable[[], None] | None = None

    async def _aio_open(self) -> None:
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            self._config.dsn,
            min_size=self._config.pool_min_size,
            max_size=self._config.pool_max_size,
            kwargs={"autocommit": True, "connect_timeout": 5},
            open=False,
            timeout=10,
            # A failed reconnect is given up after one retry; a request that finds the pool
            # empty starts a new attempt, and _run asks again every _ACQUIRE_SLICE seconds, so
            # botd reconnects for as long as it runs, about once a second while it is needed.
            reconnect_timeout=0,
            name="botd",
        )
        await pool.open(wait=False)
        self._pool = pool

    async def _aio_close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _run(self, sql: str, params: dict[str, Any] | None, *, timeout: float) -> Any:
        async def call() -> Any:
            pool = self._pool
            if pool is None:
                raise TransientError("postgres pool is closed")
            deadline = time.monotonic() + timeout
            try:
                while True:
                    # psycopg_pool starts a connection attempt when a request finds no
                    # connection, but a request already waiting is not retried when that attempt
                    # gives up (the server was still down): it would wait out all of `timeout`
                    # even if the server (a promoted stand-by) came back meanwhile. Short waits,
                    # asked again, start a new attempt each time.
                    wait = min(_ACQUIRE_SLICE, deadline - time.monotonic())
                    try:
                        async with pool.connection(timeout=wait) as conn:
                            try:
                                cur = await conn.execute(sql, params)
                            except psycopg.errors.ReadOnlySqlTransaction:
                                # The pool would hand this connection out again and again:
                                # close it, so the pool connects anew and libpq picks the
                                # read-write server (target_session_attrs=read-write).
                                await conn.close()
                                raise
                            return await cur.fetchall() if cur.description is not None else []
                    except psycopg_pool.PoolTimeout:
                        if time.monotonic() + 0.01 >= deadline:
                            raise
            except Exception as exc:
                raise _translate(exc) from exc

        return await self._bridge.run(call)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def statistics(self) -> OrderStoreStatistics:
        stats = self._pool.get_stats() if self._pool is not None else {}
        return OrderStoreStatistics(
            self._placed,
            self._cancelled,
            stats.get("pool_size", 0),
            stats.get("pool_available", 0),
            self._from_first_message.snapshot(),
        )

    async def place(self, draft: OrderDraft, *, timeout: float = 10.0) -> int:
        """Create the order once; return its id (the same id for every retry of the same key)."""
        params = {
            "key": draft.idempotency_key,
            "phone": draft.phone,
            "address": draft.address,
            "quantity": draft.quantity,
            "client_id": draft.client_id,
            "locale": draft.locale or None,
            "started": draft.started_at,
        }
        rows = await self._run(_PLACE, params, timeout=timeout)
        if not rows:  # inserted concurrently by a transaction our snapshot did not see
            rows = await self._run(_FIND, {"key": draft.idempotency_key}, timeout=timeout)
        if not rows:
            raise TransientError("order neither inserted nor found; will retry")
        if rows[0][1]:
            self._placed += 1
            if draft.started_at > 0:
                self._from_first_message.observe(max(0.0, time.time() - draft.started_at))
            self._changed()
        return int(rows[0][0])

    async def cancel(self, key: str, *, timeout: float = 10.0) -> CancelResult:
        """Cancel the order placed under ``key`` if it is still 'placed'; safe to repeat.

        CANCELLED (it is 'cancelled' now), ALREADY_CANCELLED, TOO_LATE (confirmed, delivering or
        delivered; left unchanged) or NOT_FOUND; the order's id whenever there is an order.
        """
        rows = await self._run(_CANCEL, {"key": key}, timeout=timeout)
        if not rows:
            return CancelResult(CancelOutcome.NOT_FOUND, None)
        order_id, status, cancelled_now = int(rows[0][0]), rows[0][1], rows[0][2]
        if cancelled_now:
            self._cancelled += 1
            self._changed()
            return CancelResult(CancelOutcome.CANCELLED, order_id)
        if status == "cancelled":
            return CancelResult(CancelOutcome.ALREADY_CANCELLED, order_id)
        if status in _TOO_LATE:
            return CancelResult(CancelOutcome.TOO_LATE, order_id)
        # 'placed' yet not cancelled: cannot happen while the row is locked; never guess.
        raise TransientError(f"order {order_id} is {status!r} and was not cancelled; will retry")

    async def unpublished_events(self, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` order events not yet handed on, oldest first: (row id, event id,
        type, from status, to status, actor, note, created, locale, *ORDER_COLUMNS)."""
        rows: list[tuple[Any, ...]] = await self._run(_UNPUBLISHED, {"limit": limit}, timeout=10)
        return rows

    async def mark_published(self, row_ids: list[int]) -> None:
        if row_ids:
            await self._run(_MARK_PUBLISHED, {"ids": row_ids}, timeout=10)

    async def find_by_client(self, client_id: str) -> list[dict[str, Any]]:
        """Orders of one Chat2Desk customer, oldest first."""
        rows = await self._run(
            "SELECT id, client_phone, delivery_address, quantity, chat2desk_client_id, status, "
            "created_at, cancelled_at FROM orders WHERE chat2desk_client_id = %(c)s ORDER BY id",
            {"c": client_id},
            timeout=10,
        )
        names = (
            "id",
            "client_phone",
            "delivery_address",
            "quantity",
            "chat2desk_client_id",
            "status",
            "created_at",
            "cancelled_at",
        )
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def schema_version(self) -> int | None:
        exists = await self._run(
            "SELECT to_regclass('schema_migrations') IS NOT NULL", None, timeout=10
        )
        if not exists[0][0]:
            return None
        rows = await self._run(
            "SELECT coalesce(max(version), 0) FROM schema_migrations", None, timeout=10
        )
        return int(rows[0][0])

    async def check_schema(self) -> None:
        """Raise SchemaError unless the database is at exactly the schema botd knows."""
        check_version(await self.schema_version())

    async def ping(self) -> bool:
        try:
            with trio.fail_after(2):
                await self._run("SELECT 1", None, timeout=1.5)
            return True
        except (TransientError, trio.TooSlowError):
            return False


@asynccontextmanager
async def open_order_store(
    bridge: AsyncioBridge, config: PostgresConfig
) -> AsyncIterator[OrderStore]:
    store = OrderStore(bridge, config)
    await bridge.run(store._aio_open)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await bridge.run(store._aio_close)
