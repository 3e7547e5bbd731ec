"""Numbered SQL migrations, applied by ``botd migrate`` and checked by ``botd run``.

Files ``botd/migrations/NNNN_name.sql`` are applied in order, each in its own transaction, and
recorded in ``schema_migrations``. A PostgreSQL advisory lock keeps two concurrent ``migrate``
runs from racing. The tables live in the connection's current schema (``search_path``), which is
how tests give every test its own schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from botd.errors import SchemaError, TransientError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x626F7464  # "botd"

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this botd, in order."""
    found = []
    for entry in resources.files("botd.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration numbers must run 1..N without gaps, found {versions}")
    return found


def latest_version() -> int:
    return len(migrations())


def check_version(applied: int | None) -> None:
    """Raise SchemaError unless the applied schema version is exactly the one botd knows."""
    known = latest_version()
    if applied is None or applied == 0:
        raise SchemaError("the database has no botd schema; run `botd migrate` first")
    if applied < known:
        raise SchemaError(
            f"the database schema is at version {applied}, this botd needs {known}; "
            "run `botd migrate` first"
        )
    if applied > known:
        raise SchemaError(
            f"the database schema is at version {applied}, newer than this botd knows ({known}); "
            "upgrade botd (or restore the matching database)"
        )


def apply_migrations(dsn: str, *, target: int | None = None) -> list[Migration]:
    """Apply every missing migration; return the ones applied now (empty when up to date).

    ``target`` stops after that version (tests use it to build an older schema to upgrade).
    """
    if target is not None and not 1 <= target <= latest_version():
        raise ValueError(f"target must be between 1 and {latest_version()}, not {target}")
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise TransientError(f"cannot connect to PostgreSQL: {exc}") from exc
    applied_now: list[Migration] = []
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(CREATE_TABLE)
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
            current = int(row[0]) if row else 0
            if current > latest_version():
                check_version(current)
            for mig in migrations():
                if mig.version <= current or (target is not None and mig.version > target):
                    continue
                with conn.transaction():
                    conn.execute(mig.sql.encode())  # a trusted file shipped with botd
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (mig.version, mig.name),
                    )
                applied_now.append(mig)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now
