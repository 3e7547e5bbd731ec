"""Migrations against the real PostgreSQL, each test in its own schema (``pg_dsn``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from botd import cli
from botd.errors import SchemaError
from botd.migrate import apply_migrations, check_version, latest_version, migrations

DESIGN_COLUMNS = {
    "id",
    "client_phone",
    "delivery_address",
    "quantity",
    "chat2desk_client_id",
    "created_at",
    "status",
    "idempotency_key",
}


def _columns(dsn: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'orders'"
        ).fetchall()
    return {name: (dtype, nullable) for name, dtype, nullable in rows}


def _applied_versions(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [int(r[0]) for r in rows]


def test_migrations_are_numbered_without_gaps() -> None:
    found = migrations()
    assert found, "botd ships at least one migration"
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert latest_version() == len(found)
    assert all(m.sql.strip() and m.name for m in found)


def test_fresh_schema_gets_every_migration_then_none(pg_dsn: str) -> None:
    first = apply_migrations(pg_dsn)
    assert [m.version for m in first] == list(range(1, latest_version() + 1))
    assert _applied_versions(pg_dsn) == list(range(1, latest_version() + 1))
    assert apply_migrations(pg_dsn) == []
    assert _applied_versions(pg_dsn) == list(range(1, latest_version() + 1))


def test_migrations_stay_in_the_dsn_schema(pg_dsn: str) -> None:
    apply_migrations(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
        assert row is not None
        schema = row[0]
        tables = conn.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'orders'"
            " AND table_schema = %s",
            (schema,),
        ).fetchall()
    assert schema.startswith("t_")
    assert tables == [(schema,)]


@pytest.mark.parametrize(
    ("applied", "expected"),
    [
        (None, ["no botd schema", "botd migrate"]),
        (0, ["no botd schema", "botd migrate"]),
        ("older", ["version", "needs", "botd migrate"]),
        ("newer", ["newer than this botd knows", "upgrade botd"]),
    ],
)
def test_check_version_messages(applied: int | str | None, expected: list[str]) -> None:
    if applied == "older":
        value: int | None = latest_version() - 1
        if value == 0:
            # with a single migration "older" is the same as "none"
            expected = ["no botd schema", "botd migrate"]
    elif applied == "newer":
        value = latest_version() + 1
    else:
        assert applied is None or isinstance(applied, int)
        value = applied
    with pytest.raises(SchemaError) as info:
        check_version(value)
    for part in expected:
        assert part in str(info.value)


def test_check_version_accepts_the_latest() -> None:
    check_version(latest_version())


def test_newer_database_is_refused_by_migrate(pg_dsn: str) -> None:
    apply_migrations(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_the_future')",
            (latest_version() + 1,),
        )
    with pytest.raises(SchemaError) as info:
        apply_migrations(pg_dsn)
    assert "newer" in str(info.value)


def test_orders_table_has_the_contract_columns(migrated_dsn: str) -> None:
    columns = _columns(migrated_dsn)
    assert set(columns) >= DESIGN_COLUMNS, DESIGN_COLUMNS - set(columns)
    assert columns["quantity"][0] == "integer"
    assert columns["chat2desk_client_id"][0] == "text"
    assert columns["client_phone"][0] == "text"
    assert columns["created_at"][0] == "timestamp with time zone"
    for name in ("client_phone", "delivery_address", "quantity", "idempotency_key"):
        assert columns[name][1] == "NO", f"{name} must be NOT NULL"


def test_idempotency_key_has_a_unique_constraint(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn) as conn:
        rows = conn.execute(
            """
            SELECT array_agg(a.attname::text ORDER BY a.attname)
            FROM pg_constraint c
            JOIN pg_class t ON t.oid = c.conrelid
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (c.conkey)
            WHERE t.relname = 'orders' AND t.relnamespace = current_schema()::regnamespace
              AND c.contype = 'u'
            GROUP BY c.oid
            """
        ).fetchall()
    assert (["idempotency_key"],) in [tuple(r) for r in rows]


def test_unique_constraint_is_enforced(migrated_dsn: str) -> None:
    insert = (
        "INSERT INTO orders (idempotency_key, client_phone, delivery_address, quantity,"
        " chat2desk_client_id) VALUES ('k-1', '+996555123456', 'Bishkek, Toktogul 1', 2, '17')"
    )
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)
        row = conn.execute("SELECT count(*), min(status) FROM orders").fetchone()
    assert row == (1, "placed")


STATUSES = ("placed", "confirmed", "delivering", "delivered", "cancelled")


def _insert_order(conn: psycopg.Connection[Any], key: str, status: str | None = None) -> None:
    columns = "idempotency_key, client_phone, delivery_address, quantity, chat2desk_client_id"
    values = "%(key)s, '+996555123456', 'Bishkek, Toktogul 1', 2, '17'"
    if status is not None:
        columns, values = f"{columns}, status", f"{values}, %(status)s"
    conn.execute(
        f"INSERT INTO orders ({columns}) VALUES ({values})",  # noqa: S608 - fixed column lists
        {"key": key, "status": status},
    )


def _statuses(dsn: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, status, cancelled_at IS NOT NULL FROM orders ORDER BY id"
        ).fetchall()
    return [(k, s, c) for k, s, c in rows]


def test_order_statuses_are_exactly_the_designed_ones(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        for status in STATUSES:
            _insert_order(conn, f"k-{status}", status)
        for bad in ("new", "shipped", "Placed", ""):
            with pytest.raises(psycopg.errors.CheckViolation):
                _insert_order(conn, f"k-bad-{bad}", bad)
        _insert_order(conn, "k-default")
    assert [s for _k, s, _c in _statuses(migrated_dsn)] == [*STATUSES, "placed"]
    columns = _columns(migrated_dsn)
    assert columns["cancelled_at"] == ("timestamp with time zone", "YES")


def test_upgrade_from_0001_turns_new_orders_into_placed(pg_dsn: str) -> None:
    assert [m.version for m in apply_migrations(pg_dsn, target=1)] == [1]
    assert "cancelled_at" not in _columns(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        _insert_order(conn, "k-default")  # 0001's default: 'new'
        _insert_order(conn, "k-new", "new")
        _insert_order(conn, "k-confirmed", "confirmed")
        _insert_order(conn, "k-delivered", "delivered")
        _insert_order(conn, "k-cancelled", "cancelled")
    with psycopg.connect(pg_dsn) as conn:
        before = conn.execute("SELECT status FROM orders ORDER BY id").fetchall()
    assert [s for (s,) in before] == ["new", "new", "confirmed", "delivered", "cancelled"]
    with pytest.raises(SchemaError, match="botd migrate"):
        check_version(max(_applied_versions(pg_dsn)))  # `botd run` refuses the old schema

    assert [(m.version, m.name) for m in apply_migrations(pg_dsn, target=2)] == [
        (2, "order_status")
    ]
    upgraded = [
        ("k-default", "placed", False),
        ("k-new", "placed", False),
        ("k-confirmed", "confirmed", False),
        ("k-delivered", "delivered", False),
        ("k-cancelled", "cancelled", True),  # the best known cancel time: its last change
    ]
    assert _statuses(pg_dsn) == upgraded
    assert _applied_versions(pg_dsn) == [1, 2]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            _insert_order(conn, "k-new-again", "new")
        _insert_order(conn, "k-after")
    assert _statuses(pg_dsn)[-1] == ("k-after", "placed", False)

    # 0003: the orders so far get their history, already published (nothing is sent again)
    assert [m.version for m in apply_migrations(pg_dsn)] == [3]
    check_version(max(_applied_versions(pg_dsn)))  # `botd run` accepts it now
    with psycopg.connect(pg_dsn) as conn:
        history = conn.execute(
            "SELECT o.idempotency_key, e.type, e.from_status, e.to_status, "
            "e.published_at IS NOT NULL FROM order_events e JOIN orders o ON o.id = e.order_id "
            "ORDER BY e.id"
        ).fetchall()
    keys = [k for k, _s, _c in upgraded] + ["k-after"]
    assert history == [
        *((k, "order.placed", None, "placed", True) for k in keys),
        ("k-confirmed", "order.status_changed", "placed", "confirmed", True),
        ("k-delivered", "order.status_changed", "placed", "delivered", True),
        ("k-cancelled", "order.cancelled", "placed", "cancelled", True),
    ]

    # idempotent: a second run applies nothing and changes nothing
    assert apply_migrations(pg_dsn) == []
    assert _applied_versions(pg_dsn) == [1, 2, 3]
    assert _statuses(pg_dsn) == [*upgraded, ("k-after", "placed", False)]


@pytest.mark.parametrize("target", [0, -1, 10_000])
def test_apply_migrations_refuses_an_unknown_target(pg_dsn: str, target: int) -> None:
    with pytest.raises(ValueError, match="target"):
        apply_migrations(pg_dsn, target=target)
    assert "orders" not in _columns(pg_dsn)


def test_cli_migrate_uses_the_environment_dsn(
    cli_env: Path,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BOTD_POSTGRES_DSN", pg_dsn)
    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "applied 0001_" in out
    assert f"schema is at version {latest_version()}" in out
    assert _applied_versions(pg_dsn) == list(range(1, latest_version() + 1))
    # idempotent: a second run applies nothing and still exits 0
    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "applied" not in out
    assert f"schema is at version {latest_version()}" in out


def test_cli_migrate_upgrades_an_older_schema(
    cli_env: Path,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    apply_migrations(pg_dsn, target=1)
    monkeypatch.setenv("BOTD_POSTGRES_DSN", pg_dsn)
    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "applied 0001_" not in out
    assert "applied 0002_order_status" in out
    assert f"schema is at version {latest_version()}" in out


def test_cli_migrate_without_database_exits_1(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOTD_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:1/botd")
    assert cli.main(["migrate"]) == 1
    assert "cannot connect to PostgreSQL" in capsys.readouterr().err
