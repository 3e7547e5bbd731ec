"""``botd orders list | show | set-status | export`` (docs/design.md §8.1).

Every command runs as a real subprocess (``python -m botd --config /dev/null orders …``) with
only ``BOTD_POSTGRES_DSN`` set, against the test's own freshly migrated schema; orders are put
there with plain SQL, as the daemon writes them (the order and its ``order.placed`` event).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from botd.migrate import apply_migrations, latest_version
from botd.order_lifecycle import move
from tests.helpers import subprocess_env

ORDER_KEYS = ["id", "status", "phone", "address", "quantity", "client_id", "created_at"]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
BULK = 5000
BOTD_ORDERS = (sys.executable, "-m", "botd", "--config", os.devnull, "orders")

# An order and its order.placed event in one statement, as botd.order_store places one.
_PLACE = """
WITH ins AS (
    INSERT INTO orders (idempotency_key, client_phone, delivery_address, quantity,
                        chat2desk_client_id, status, source, locale, dialog_started_at,
                        created_at, updated_at)
    VALUES (%(key)s, %(phone)s, %(address)s, %(quantity)s, %(client)s, 'placed', 'chat2desk',
            'ru', %(created)s - interval '3 minutes', %(created)s, %(created)s)
    RETURNING id, created_at
)
INSERT INTO order_events (order_id, type, from_status, to_status, actor, created_at)
SELECT id, 'order.placed', NULL, 'placed', 'customer', created_at FROM ins
RETURNING order_id
"""

# 5000 (BULK) orders one second apart from 2026-01-01 00:00:01 UTC, every 10th cancelled.
_BULK = """
WITH ins AS (
    INSERT INTO orders (idempotency_key, client_phone, delivery_address, quantity,
                        chat2desk_client_id, status, created_at, updated_at)
    SELECT 'bulk-' || g, '+99655' || lpad(g::text, 7, '0'), 'Bulk street ' || g, 1 + g % 10,
           (800000 + g)::text, CASE WHEN g % 10 = 0 THEN 'cancelled' ELSE 'placed' END,
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'
    FROM generate_series(1, 5000) AS g
    RETURNING id, created_at
)
INSERT INTO order_events (order_id, type, from_status, to_status, actor, created_at)
SELECT id, 'order.placed', NULL, 'placed', 'customer', created_at FROM ins
"""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def botd_env(dsn: str) -> dict[str, str]:
    return {**subprocess_env(), "BOTD_POSTGRES_DSN": dsn, "USER": "tester"}


def botd_orders(dsn: str, *args: str) -> Result:
    """Run ``botd orders ARGS`` as a subprocess."""
    done = subprocess.run(
        [*BOTD_ORDERS, *args],
        env=botd_env(dsn),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def place(
    dsn: str,
    n: int,
    *,
    created: str,
    address: str | None = None,
    quantity: int = 2,
) -> int:
    """Order number ``n`` of the test, created at ``created``; returns its id."""
    params = {
        "key": f"dialog-{n}",
        "phone": f"+99655512{n:04d}",
        "address": address or f"Chui avenue {n}, flat {n + 10}",
        "quantity": quantity,
        "client": str(700_000 + n),
        "created": datetime.fromisoformat(created),
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(_PLACE, params).fetchone()
    assert row is not None
    return int(row[0])


def shop_move(dsn: str, order_id: int, *targets: str) -> None:
    """Move an order in-process (set-up: the statuses the CLI is then tried against)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for target in targets:
            move(conn, order_id, target, actor="shop:setup", note=None)


def snapshot(dsn: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every row of both tables: what "nothing changed" is checked against."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        orders = conn.execute("SELECT * FROM orders ORDER BY id").fetchall()
        events = conn.execute("SELECT * FROM order_events ORDER BY id").fetchall()
    return orders, events


def events_of(dsn: str, order_id: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT event_id::text, type, from_status, to_status, actor, note, published_at "
            "FROM order_events WHERE order_id = %s ORDER BY id",
            (order_id,),
        ).fetchall()


def status_of(dsn: str, order_id: int) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT status FROM orders WHERE id = %s", (order_id,)).fetchone()
    assert row is not None
    return str(row[0])


def three_orders(dsn: str) -> tuple[int, int, int]:
    """Orders of 1 Nov, 15 Nov (long address) and 1 Dec 2026, the last one confirmed."""
    first = place(dsn, 1, created="2026-11-01T08:00:00+00:00")
    second = place(dsn, 2, created="2026-11-15T12:30:00+00:00", address="Long street " * 10)
    third = place(dsn, 3, created="2026-12-01T09:15:00+00:00", quantity=7)
    shop_move(dsn, third, "confirmed")
    return first, second, third


def test_list_prints_the_newest_first_as_a_table_or_one_json_array(migrated_dsn: str) -> None:
    first, second, third = three_orders(migrated_dsn)

    table = botd_orders(migrated_dsn, "list")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == [
        "ID", "CREATED", "(UTC)", "STATUS", "QTY", "PHONE", "ADDRESS", "CLIENT"
    ]  # fmt: skip
    assert [int(line.split()[0]) for line in lines[1:4]] == [third, second, first]
    assert lines[1].split()[1:7] == [
        "2026-12-01", "09:15", "confirmed", "7", "+996555120003", "Chui"
    ]  # fmt: skip
    assert lines[1].endswith("700003")
    long_row = lines[2]
    assert "…" in long_row and ("Long street " * 10).strip() not in long_row  # truncated
    assert lines[-1] == "3 order(s)"

    listed = botd_orders(migrated_dsn, "list", "--json")
    assert listed.code == 0, listed.err
    orders = json.loads(listed.out)
    assert [o["id"] for o in orders] == [third, second, first]
    assert all(list(o) == ORDER_KEYS for o in orders)
    assert orders[0] == {
        "id": third,
        "status": "confirmed",
        "phone": "+996555120003",
        "address": "Chui avenue 3, flat 13",
        "quantity": 7,
        "client_id": "700003",
        "created_at": "2026-12-01T09:15:00.000Z",
    }
    assert orders[1]["address"] == "Long street " * 10  # whole in JSON

    newest = json.loads(botd_orders(migrated_dsn, "list", "--json", "--limit", "1").out)
    assert [o["id"] for o in newest] == [third]


def test_list_filters_by_status_and_since(migrated_dsn: str) -> None:
    first, second, third = three_orders(migrated_dsn)

    def ids(*args: str) -> list[int]:
        result = botd_orders(migrated_dsn, "list", "--json", *args)
        assert result.code == 0, result.err
        return [o["id"] for o in json.loads(result.out)]

    assert ids("--status", "placed") == [second, first]
    assert ids("--status", "confirmed") == [third]
    assert ids("--since", "2026-11-15") == [third, second]  # a date: midnight UTC
    assert ids("--since", "2026-11-15T12:30:00") == [third, second]  # naive: UTC, inclusive
    assert ids("--since", "2026-11-15T12:30:01") == [third]
    assert ids("--since", "2026-11-15T12:00:00Z", "--status", "placed") == [second]


def test_list_refuses_a_bad_status_date_or_limit_with_exit_2(migrated_dsn: str) -> None:
    place(migrated_dsn, 1, created="2026-11-01T08:00:00+00:00")
    bad_status = botd_orders(migrated_dsn, "list", "--status", "shipped")
    assert (bad_status.code, bad_status.out) == (2, "")
    assert "'shipped' is not a status" in bad_status.err
    assert "placed, confirmed, delivering, delivered, cancelled" in bad_status.err
    for since in ("yesterday", "2026-12-01T25:00"):  # more shapes: test_since_dates_parse_as_utc
        bad_date = botd_orders(migrated_dsn, "list", "--since", since)
        assert (bad_date.code, bad_date.out) == (2, ""), since
        assert f"--since {since!r} is not a date" in bad_date.err
        assert "Traceback" not in bad_date.err
    bad_limit = botd_orders(migrated_dsn, "list", "--limit", "0")
    assert (bad_limit.code, bad_limit.out) == (2, "")
    assert "--limit" in bad_limit.err


def test_set_status_walks_the_life_cycle_and_show_prints_the_history(migrated_dsn: str) -> None:
    order = place(migrated_dsn, 1, created="2026-12-01T09:00:00+00:00")
    other = place(migrated_dsn, 2, created="2026-12-01T09:05:00+00:00")
    steps = [
        ("confirmed", ["--by", "anna", "--note", "called the customer"], "shop:anna"),
        ("delivering", ["--note", "courier 7"], "shop:tester"),  # $USER by default
        ("delivered", ["--by", "bob"], "shop:bob"),
    ]
    printed = []
    previous = "placed"
    for target, extra, _actor in steps:
        result = botd_orders(migrated_dsn, "set-status", str(order), target, *extra)
        assert result.code == 0, result.err
        m = re.fullmatch(rf"order {order}: {previous} → {target} \(event ({UUID})\)\n", result.out)
        assert m, result.out
        printed.append(m.group(1))
        previous = target

    assert status_of(migrated_dsn, order) == "delivered"
    assert status_of(migrated_dsn, other) == "placed"  # only the named order moved
    events = events_of(migrated_dsn, order)
    assert [e[1:6] for e in events] == [
        ("order.placed", None, "placed", "customer", None),
        ("order.status_changed", "placed", "confirmed", "shop:anna", "called the customer"),
        ("order.status_changed", "confirmed", "delivering", "shop:tester", "courier 7"),
        ("order.status_changed", "delivering", "delivered", "shop:bob", None),
    ]
    assert [e[0] for e in events[1:]] == printed
    assert all(e[6] is None for e in events)  # pending: the daemon's relay publishes them

    shown = botd_orders(migrated_dsn, "show", str(order))
    assert shown.code == 0, shown.err
    text = shown.out
    assert text.startswith(f"order {order}\n")
    for field in (
        "status:",
        "delivered",
        "+996555120001",
        "Chui avenue 1, flat 11",
        "700001",
        "locale:",
        "idempotency key:  dialog-1",
        "dialog started:   2026-12-01T08:57:00.000Z",
        "created:          2026-12-01T09:00:00.000Z",
        "cancelled:        -",
    ):
        assert field in text, field
    history = text.split("history (4 event(s), oldest first):\n")[1].splitlines()
    assert len(history) == 4
    assert "- → placed  by customer" in history[0]
    assert "placed → confirmed  by shop:anna  note: called the customer" in history[1]
    assert "confirmed → delivering  by shop:tester  note: courier 7" in history[2]
    assert "delivering → delivered  by shop:bob" in history[3]
    for line, event_id in zip(history[1:], printed, strict=True):
        assert f"event {event_id} (pending)" in line

    as_json = botd_orders(migrated_dsn, "show", str(order), "--json")
    assert as_json.code == 0, as_json.err
    document = json.loads(as_json.out)
    assert {k: document[k] for k in ORDER_KEYS} == {
        "id": order,
        "status": "delivered",
        "phone": "+996555120001",
        "address": "Chui avenue 1, flat 11",
        "quantity": 2,
        "client_id": "700001",
        "created_at": "2026-12-01T09:00:00.000Z",
    }
    assert document["locale"] == "ru"
    assert document["idempotency_key"] == "dialog-1"
    assert document["cancelled_at"] is None
    assert [(h["from"], h["to"], h["actor"]) for h in document["history"]] == [
        (None, "placed", "customer"),
        ("placed", "confirmed", "shop:anna"),
        ("confirmed", "delivering", "shop:tester"),
        ("delivering", "delivered", "shop:bob"),
    ]
    assert [h["event_id"] for h in document["history"][1:]] == printed
    assert {h["published_at"] for h in document["history"]} == {None}


def test_illegal_moves_exit_2_and_change_nothing(migrated_dsn: str) -> None:
    delivered = place(migrated_dsn, 1, created="2026-12-01T09:00:00+00:00")
    placed = place(migrated_dsn, 2, created="2026-12-01T09:01:00+00:00")
    cancelled = place(migrated_dsn, 3, created="2026-12-01T09:02:00+00:00")
    shop_move(migrated_dsn, delivered, "confirmed", "delivering", "delivered")
    shop_move(migrated_dsn, cancelled, "cancelled")
    before = snapshot(migrated_dsn)

    refused = [
        (delivered, "cancelled", "the order is delivered, which is final"),
        (placed, "placed", "the order is already placed"),
        (cancelled, "confirmed", "the order is cancelled, which is final"),
        (cancelled, "placed", "the order is cancelled, which is final"),
        (placed, "shipped", "unknown status 'shipped'"),
        (999_999, "confirmed", "there is no order 999999"),
    ]
    for order, target, why in refused:
        result = botd_orders(migrated_dsn, "set-status", str(order), target, "--note", "x")
        assert (result.code, result.out) == (2, ""), (order, target, result)
        assert why in result.err, (order, target, result.err)
        assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err

    assert snapshot(migrated_dsn) == before


def test_show_an_unknown_order_exits_2(migrated_dsn: str) -> None:
    place(migrated_dsn, 1, created="2026-12-01T09:00:00+00:00")
    for args in (["show", "424242"], ["show", "424242", "--json"]):
        result = botd_orders(migrated_dsn, *args)
        assert (result.code, result.out) == (2, "")
        assert "there is no order 424242" in result.err


def bulk(dsn: str) -> list[int]:
    """BULK orders; returns their ids, oldest first."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_BULK)
        rows = conn.execute("SELECT id FROM orders ORDER BY created_at, id").fetchall()
    return [int(r[0]) for r in rows]


def test_export_streams_csv_and_json_oldest_first(migrated_dsn: str) -> None:
    ids = bulk(migrated_dsn)
    assert len(ids) == BULK

    as_csv = botd_orders(migrated_dsn, "export", "--since", "2026-01-01", "--format", "csv")
    assert as_csv.code == 0, as_csv.err
    assert as_csv.out.splitlines()[0] == ",".join(ORDER_KEYS)
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert len(rows) == BULK
    assert [int(r["id"]) for r in rows] == ids
    assert rows[0] == {
        "id": str(ids[0]),
        "status": "placed",
        "phone": "+996550000001",
        "address": "Bulk street 1",
        "quantity": "2",
        "client_id": "800001",
        "created_at": "2026-01-01T00:00:01.000Z",
    }
    assert rows[-1]["created_at"] == "2026-01-01T01:23:20.000Z" and rows[-1]["status"] == (
        "cancelled"
    )

    as_json = botd_orders(migrated_dsn, "export", "--since", "2026-01-01", "--format", "json")
    assert as_json.code == 0, as_json.err
    orders = json.loads(as_json.out)
    assert len(orders) == BULK
    assert (orders[0]["id"], orders[-1]["id"]) == (ids[0], ids[-1])
    assert [o["id"] for o in orders] == ids
    assert list(orders[0]) == ORDER_KEYS

    # 00:41:40 is order 2500: --since is inclusive; every 10th of 2500..5000 is cancelled
    later = botd_orders(
        migrated_dsn, "export", "--since", "2026-01-01T00:41:40Z", "--format", "json",
        "--status", "cancelled",
    )  # fmt: skip
    assert later.code == 0, later.err
    cancelled = json.loads(later.out)
    assert len(cancelled) == 251
    assert {o["status"] for o in cancelled} == {"cancelled"}
    assert (cancelled[0]["id"], cancelled[-1]["id"]) == (ids[2499], ids[-1])

    none = botd_orders(migrated_dsn, "export", "--since", "2027-01-01", "--format", "json")
    assert (none.code, json.loads(none.out)) == (0, [])
    empty_csv = botd_orders(migrated_dsn, "export", "--since", "2027-01-01", "--format", "csv")
    assert (empty_csv.code, empty_csv.out) == (0, ",".join(ORDER_KEYS) + "\n")


def fetching(dsn: str, application: str) -> list[str]:
    """What the sessions of ``application`` last ran, if they wait inside a transaction."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'idle in transaction'",
            (application,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_export_streams_through_a_cursor_and_is_fine_piped_into_head(migrated_dsn: str) -> None:
    ids = bulk(migrated_dsn)  # ~0.4 MB of CSV: far more than a pipe holds
    application = f"botd-export-{os.getpid()}-{time.monotonic_ns()}"
    with subprocess.Popen(
        [*BOTD_ORDERS, "export", "--since", "2026-01-01", "--format", "csv"],
        env=botd_env(f"{migrated_dsn}&application_name={application}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as botd:  # on the way out (even failing) its pipes close, so it cannot hang
        assert botd.stdout is not None and botd.stderr is not None
        # Nobody reads yet, so botd blocks writing its first batch, with the cursor open in the
        # database: the rows come a batch at a time, they were not all fetched into memory.
        # (the DECLARE comes first and may be seen on the way: wait for the FETCH to settle)
        fetch = ['FETCH FORWARD 2000 FROM "botd_orders_export"']
        deadline = time.monotonic() + 10
        while (last := fetching(migrated_dsn, application)) != fetch:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert last == fetch
        with subprocess.Popen(
            ["head", "-n", "3"], stdin=botd.stdout, stdout=subprocess.PIPE
        ) as head:
            botd.stdout.close()  # head alone holds the read end: when it exits, writes fail
            out, _ = head.communicate(timeout=60)
        err = botd.stderr.read().decode()
        code = botd.wait(timeout=60)
    lines = out.decode().splitlines()
    assert lines[0] == ",".join(ORDER_KEYS)
    assert [int(line.split(",")[0]) for line in lines[1:]] == ids[:2]
    assert (code, err) == (0, "")


def test_unreachable_postgres_exits_1_with_one_line() -> None:
    dsn = "postgresql://postgres@127.0.0.1:1/botd_test"
    for args in (["list"], ["set-status", "1", "confirmed"]):
        result = botd_orders(dsn, *args)
        assert (result.code, result.out) == (1, ""), result
        assert len(result.err.splitlines()) == 1, result.err
        assert result.err.startswith("botd orders: cannot connect to PostgreSQL:")


def test_an_unmigrated_schema_says_run_botd_migrate(pg_dsn: str) -> None:
    empty = botd_orders(pg_dsn, "list")
    assert (empty.code, empty.out) == (1, "")
    assert "no botd schema; run `botd migrate`" in empty.err
    assert len(empty.err.splitlines()) == 1

    apply_migrations(pg_dsn, target=2)  # orders, but not yet order_events
    older = botd_orders(pg_dsn, "list")
    assert (older.code, older.out) == (1, "")
    assert f"at version 2, this botd needs {latest_version()}; run `botd migrate`" in older.err
    assert len(older.err.splitlines()) == 1


def test_a_terminal_never_gets_control_characters_from_an_address(migrated_dsn: str) -> None:
    order = place(migrated_dsn, 1, created="2026-12-01T09:00:00+00:00", address="Evil\x1b[2J st\n5")
    for args in (["list"], ["show", str(order)]):
        result = botd_orders(migrated_dsn, *args)
        assert result.code == 0, result.err
        assert "\x1b" not in result.out
        assert "Evil?[2J st 5" in result.out
    listed = json.loads(botd_orders(migrated_dsn, "list", "--json").out)
    assert listed[0]["address"] == "Evil\x1b[2J st\n5"  # the data itself stays exact


def test_since_dates_parse_as_utc() -> None:
    from botd.orders_cli import UsageError, parse_since

    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("2026-12-01T10:30") == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert parse_since("2026-12-01T10:30+06:00") == datetime(2026, 12, 1, 4, 30, tzinfo=UTC)
    assert parse_since("2026-12-01T10:30:00Z") == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    for text in ("soon", "2026-13-01", "01.12.2026", "2026-12-01T25:00", ""):
        with pytest.raises(UsageError, match="not a date"):
            parse_since(text)


def test_export_csv_makes_a_formula_like_address_plain_text(migrated_dsn: str) -> None:
    """CSV injection: an address a customer typed as a formula must not run in a spreadsheet;
    JSON keeps the data exact."""
    place(migrated_dsn, 1, created="2026-02-01T10:00:00+00:00", address="=HYPERLINK(1)")
    place(migrated_dsn, 2, created="2026-02-01T10:01:00+00:00", address="ул. Ленина 5")
    as_csv = botd_orders(migrated_dsn, "export", "--since", "2026-02-01", "--format", "csv")
    assert as_csv.code == 0, as_csv.err
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert [r["address"] for r in rows] == ["'=HYPERLINK(1)", "ул. Ленина 5"]
    assert rows[0]["phone"] == "+996555120001"  # E.164 stays as it is
    as_json = botd_orders(migrated_dsn, "export", "--since", "2026-02-01", "--format", "json")
    assert [o["address"] for o in json.loads(as_json.out)] == ["=HYPERLINK(1)", "ул. Ленина 5"]
