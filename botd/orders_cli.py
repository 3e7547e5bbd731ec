"""``botd orders list | show ID | set-status ID STATUS | export``: the shop's command line for
orders (docs/design.md §8.1).

Everything here reads PostgreSQL directly with a plain synchronous psycopg connection: the
command runs once and exits, so the daemon's async pool would only add start-up cost. Status
changes go through :func:`botd.order_lifecycle.move`, the one transaction that changes an order
and writes its ``order_events`` row, so the running daemon's relay sends every change made here
on to the shop like any other; this module never writes to the tables itself.

Exit codes follow :mod:`botd.cli`: 0 ok, 2 a bad argument or a move the life cycle refuses
(nothing changed), 1 PostgreSQL unreachable or the schema not migrated.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

import psycopg
from psycopg import sql

from botd.config import Config
from botd.errors import SchemaError
from botd.migrate import check_version
from botd.order_lifecycle import (
    MAX_ACTOR_CHARS,
    ORDER_COLUMNS,
    STATUSES,
    IllegalMove,
    OrderNotFound,
    iso_time,
    move,
    order_object,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

PROG = "botd orders"
ADDRESS_WIDTH = 40
# Rows fetched per round trip by the export's server-side cursor: big enough that the network
# is not the bottleneck, small enough that memory stays flat however many orders there are.
EXPORT_ITERSIZE = 2000
CSV_FIELDS = ("id", "status", "phone", "address", "quantity", "client_id", "created_at")

# Queries are composed with psycopg.sql from fixed pieces; values only ever go as parameters.
_COLUMNS = sql.SQL(ORDER_COLUMNS)
# Every column of an order, for `show` (the order object's seven first, as order_object wants).
_SHOW = sql.SQL(
    "SELECT {columns}, o.idempotency_key, o.source, o.locale, o.dialog_started_at, "
    "o.updated_at, o.cancelled_at FROM orders o WHERE o.id = %(id)s"
).format(columns=_COLUMNS)
_LIST = sql.SQL(
    "SELECT {columns} FROM orders o {where} ORDER BY o.created_at DESC, o.id DESC LIMIT %(limit)s"
)
_EXPORT = sql.SQL("SELECT {columns} FROM orders o {where} ORDER BY o.created_at, o.id")
_HISTORY = """
SELECT event_id, type, from_status, to_status, actor, note, created_at, published_at
FROM order_events WHERE order_id = %(id)s ORDER BY id
"""


class UsageError(Exception):
    """An argument the command cannot use: say why on stderr and exit 2, before any change."""


class Unavailable(Exception):
    """PostgreSQL cannot be used (unreachable, or the schema is not botd's): exit 1."""


def parse_since(text: str) -> datetime:
    """``--since``: an ISO date (midnight UTC) or an ISO date-time; a naive time is UTC, because
    the database stores UTC and the operator's terminal zone is no better guess."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r} is not a date; give an ISO date (2026-12-01) or date-time "
            "(2026-12-01T09:30, 2026-12-01T09:30:00+06:00; without a zone it is UTC)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _status(text: str | None) -> str | None:
    if text is not None and text not in STATUSES:
        raise UsageError(f"--status {text!r} is not a status; one of: {', '.join(STATUSES)}")
    return text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _printable(text: str) -> str:
    """Customer-typed text made safe for a terminal: one line, and no control characters (an
    address must not be able to send escape sequences to the operator's terminal)."""
    return "".join(ch if ch.isprintable() else "?" for ch in _one_line(text))


def _short(text: str, width: int) -> str:
    text = _printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _time(when: datetime | None) -> str:
    return "-" if when is None else iso_time(when)


def _filters(status: str | None, since: datetime | None) -> tuple[sql.Composable, dict[str, Any]]:
    """The WHERE clause of ``list`` and ``export`` and its parameters."""
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if status is not None:
        clauses.append(sql.SQL("o.status = %(status)s"))
        params["status"] = status
    if since is not None:
        clauses.append(sql.SQL("o.created_at >= %(since)s"))
        params["since"] = since
    if not clauses:
        return sql.SQL(""), params
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(clauses), params


def _connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection to botd's schema, or :class:`Unavailable`: the CLI needs exactly the tables
    ``botd run`` needs, so it accepts the schema version ``botd run`` accepts."""
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise Unavailable(f"cannot connect to PostgreSQL: {_one_line(str(exc))}") from None
    try:
        # Two statements: PostgreSQL resolves every table of a statement before running it.
        version = None
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() != (None,):
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
            version = None if row is None or row[0] is None else int(row[0])
        check_version(version)
    except SchemaError as exc:
        conn.close()
        raise Unavailable(str(exc)) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _since(args: argparse.Namespace) -> datetime | None:
    return None if args.since is None else parse_since(args.since)


def cmd_list(conn: psycopg.Connection[Any], args: argparse.Namespace, out: TextIO) -> int:
    """The newest orders, as a table for people or one JSON array for scripts."""
    where, params = _filters(_status(args.status), _since(args))
    params["limit"] = args.limit
    rows = conn.execute(_LIST.format(columns=_COLUMNS, where=where), params).fetchall()
    orders = [order_object(row) for row in rows]
    if args.json:
        out.write(json.dumps(orders, ensure_ascii=False) + "\n")
        return EXIT_OK
    out.write(
        f"{'ID':>8}  {'CREATED (UTC)':<16}  {'STATUS':<10}  {'QTY':>4}  {'PHONE':<16}  "
        f"{'ADDRESS':<{ADDRESS_WIDTH}}  CLIENT\n"
    )
    for order in orders:
        created = order["created_at"][:16].replace("T", " ")
        out.write(
            f"{order['id']:>8}  {created:<16}  {order['status']:<10}  {order['quantity']:>4}  "
            f"{_printable(order['phone']):<16}  "
            f"{_short(order['address'], ADDRESS_WIDTH):<{ADDRESS_WIDTH}}  "
            f"{_printable(order['client_id'])}\n"
        )
    more = " (the newest; --limit for more)" if len(orders) == args.limit else ""
    out.write(f"{len(orders)} order(s){more}\n")
    return EXIT_OK


def cmd_show(conn: psycopg.Connection[Any], args: argparse.Namespace, out: TextIO) -> int:
    """One order whole, with its history: what the operator looks at before moving it."""
    row = conn.execute(_SHOW, {"id": args.id}).fetchone()
    if row is None:
        raise UsageError(f"there is no order {args.id}")
    key, source, locale, dialog_started_at, updated_at, cancelled_at = row[7:]
    history = [
        {
            "event_id": str(event_id),
            "type": kind,
            "from": from_status,
            "to": to_status,
            "actor": actor,
            "note": note,
            "created_at": iso_time(created_at),
            "published_at": None if published_at is None else iso_time(published_at),
        }
        for event_id, kind, from_status, to_status, actor, note, created_at, published_at in (
            conn.execute(_HISTORY, {"id": args.id}).fetchall()
        )
    ]
    order = order_object(row)
    if args.json:
        document = {
            **order,
            "idempotency_key": key,
            "source": source,
            "locale": locale,
            "dialog_started_at": None if dialog_started_at is None else iso_time(dialog_started_at),
            "updated_at": iso_time(updated_at),
            "cancelled_at": None if cancelled_at is None else iso_time(cancelled_at),
            "history": history,
        }
        out.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK
    fields = (
        ("status", order["status"]),
        ("phone", order["phone"]),
        ("address", order["address"]),
        ("quantity", order["quantity"]),
        ("client", order["client_id"]),
        ("locale", locale or "-"),
        ("source", source),
        ("idempotency key", key),
        ("dialog started", _time(dialog_started_at)),
        ("created", order["created_at"]),
        ("updated", _time(updated_at)),
        ("cancelled", _time(cancelled_at)),
    )
    out.write(f"order {order['id']}\n")
    for name, value in fields:
        out.write(f"  {name + ':':<17} {_printable(str(value))}\n")
    out.write(f"history ({len(history)} event(s), oldest first):\n")
    for event in history:
        published = event["published_at"]
        sent = "pending" if published is None else f"published {published}"
        note = "" if event["note"] is None else f"  note: {_printable(event['note'])}"
        out.write(
            f"  {event['created_at']}  {event['from'] or '-'} → {event['to']}  "
            f"by {_printable(event['actor'])}{note}  event {event['event_id']} ({sent})\n"
        )
    return EXIT_OK


def actor_name(by: str | None) -> str:
    """``shop:NAME``: who moved the order, for the history and the shop's event (the login name
    when --by is not given, so a shared terminal still leaves a trace)."""
    name = by if by is not None else (os.environ.get("USER") or "shop")
    return f"shop:{_one_line(name) or 'shop'}"


def cmd_set_status(conn: psycopg.Connection[Any], args: argparse.Namespace, out: TextIO) -> int:
    """Move one order; the life cycle's rules and the event row are :func:`move`'s, not ours."""
    actor = actor_name(args.by)
    if len(actor) > MAX_ACTOR_CHARS:
        raise UsageError(f"--by is too long: the actor {actor!r} is over {MAX_ACTOR_CHARS} chars")
    note = args.note if args.note else None
    try:
        moved = move(conn, args.id, args.status, actor=actor, note=note)
    except (IllegalMove, OrderNotFound) as exc:
        raise UsageError(f"order {args.id}: {exc}") from None
    out.write(
        f"order {moved.order_id}: {moved.from_status} → {moved.to_status} "
        f"(event {moved.event_id})\n"
    )
    return EXIT_OK


@contextmanager
def _export_cursor(
    conn: psycopg.Connection[Any], where: sql.Composable, params: dict[str, Any]
) -> Iterator[psycopg.ServerCursor[Any]]:
    """The matching orders oldest first, through a server-side cursor: PostgreSQL keeps the
    result and hands it over EXPORT_ITERSIZE rows at a time, so a million orders take the
    memory of a few thousand. A named cursor lives in a transaction (read-only here); leaving
    the block early (the reader went away) rolls it back and frees the cursor at once."""
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        with conn.cursor(name="botd_orders_export") as cur:
            cur.itersize = EXPORT_ITERSIZE
            cur.execute(_EXPORT.format(columns=_COLUMNS, where=where), params)
            yield cur


# A customer's text that starts like a formula would run as one when the CSV is opened in a
# spreadsheet (CSV injection); a leading apostrophe makes the cell text. Phones are E.164 and
# ids, numbers and times are botd's own: only the address is the customer's free text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _spreadsheet_safe(order: dict[str, Any]) -> dict[str, Any]:
    address = str(order["address"])
    if address.startswith(_FORMULA_STARTS):
        return {**order, "address": "'" + address}
    return order


def cmd_export(conn: psycopg.Connection[Any], args: argparse.Namespace, out: TextIO) -> int:
    """Every matching order, written as it arrives (never collected), as CSV or a JSON array."""
    where, params = _filters(_status(args.status), parse_since(args.since))
    with _export_cursor(conn, where, params) as rows:
        if args.format == "csv":
            writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(_spreadsheet_safe(order_object(row)))
            return EXIT_OK
        out.write("[")
        separator = "\n"
        for row in rows:
            out.write(separator + json.dumps(order_object(row), ensure_ascii=False))
            separator = ",\n"
        out.write("\n]\n" if separator != "\n" else "]\n")
    return EXIT_OK


COMMANDS = {
    "list": cmd_list,
    "show": cmd_show,
    "set-status": cmd_set_status,
    "export": cmd_export,
}


def _validate(args: argparse.Namespace) -> None:
    """Check what can be checked without the database, so a typo costs no connection."""
    if getattr(args, "status", None) is not None and args.orders_command != "set-status":
        _status(args.status)
    if getattr(args, "since", None) is not None:
        parse_since(args.since)
    if getattr(args, "limit", 1) < 1:
        raise UsageError(f"--limit must be at least 1, not {args.limit}")


def _quiet_stdout() -> None:
    """The reader of stdout went away (``| head``): point stdout at /dev/null so the flush at
    exit cannot raise again and print a traceback; what was wanted has been read."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(config: Config, args: argparse.Namespace) -> int:
    command = COMMANDS[args.orders_command]
    try:
        _validate(args)
        with _connect(config.postgres.dsn) as conn:
            code = command(conn, args, sys.stdout)
        sys.stdout.flush()
        return code
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except psycopg.errors.UndefinedTable as exc:
        print(f"{PROG}: {_one_line(str(exc))}; run `botd migrate`", file=sys.stderr)
        return EXIT_FAILURE
    except psycopg.Error as exc:
        print(f"{PROG}: PostgreSQL failed: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
