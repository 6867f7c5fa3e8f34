"""The job store's SQLite file: opening it, its tables and their migrations, and the rules every
statement runs under (one transaction each; SQLite's and the disk's errors become StoreError).

Everything here runs on the store's own thread, the only one that touches the connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreError
from ..narration.schema import KEPT, NO_DEFAULT, EventField
from ..timeouts import STORE_BUSY_TIMEOUT_MS
from .checkpoint import BACKSTOP_PAGES

T = TypeVar("T")

# Append-only: a database at user_version N has had the first N applied. Never edit a shipped one.
# A field added to an event needs none: its column is added by ``_add_event_columns``.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY, operation TEXT NOT NULL, status TEXT NOT NULL,
            variant TEXT, pkgname TEXT, pkgver TEXT,
            created_at REAL NOT NULL, started_at REAL, finished_at REAL, timeout_s REAL,
            exit_code INTEGER, reason TEXT, cancel_reason TEXT,
            artifacts TEXT NOT NULL DEFAULT '[]',  -- JSON list of file names
            last_seq INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX jobs_by_created ON jobs (created_at)",
        "CREATE INDEX jobs_by_status ON jobs (status, created_at)",
        # Clustered on (job_id, seq) so reading a job's narration is one range scan.
        """CREATE TABLE events (
            job_id TEXT NOT NULL REFERENCES jobs (id), seq INTEGER NOT NULL, ts REAL NOT NULL,
            action TEXT NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, stream TEXT,
            PRIMARY KEY (job_id, seq)
        ) WITHOUT ROWID""",
    ),
    ("ALTER TABLE jobs ADD COLUMN request TEXT NOT NULL DEFAULT '{}'",),
    ("ALTER TABLE jobs ADD COLUMN srcinfo TEXT",),
    ("ALTER TABLE jobs ADD COLUMN cache TEXT",),
    (
        "ALTER TABLE jobs ADD COLUMN peak_memory_bytes INTEGER",
        "ALTER TABLE jobs ADD COLUMN cpu_seconds REAL",
        "ALTER TABLE jobs ADD COLUMN peak_pids INTEGER",
        "ALTER TABLE jobs ADD COLUMN disk_bytes INTEGER",
        "ALTER TABLE jobs ADD COLUMN phases_s TEXT",  # JSON: makepkg phase -> seconds
        "ALTER TABLE jobs ADD COLUMN estimate_s REAL",
        "CREATE INDEX jobs_by_package ON jobs (pkgname, variant, finished_at)",
    ),
    ("ALTER TABLE jobs ADD COLUMN reproduction TEXT",),  # JSON: build.reproduce.Reproduction
)
VERSION = len(_MIGRATIONS)
_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}


def translate(work: Callable[[], T], make_room: Callable[[BaseException], bool] | None = None) -> T:
    try:
        try:
            return work()
        except (sqlite3.Error, OSError) as exc:
            # A full disk: if the room we kept for this is given up, the write fits once more
            # (every write here is one transaction, rolled back when it failed).
            if make_room is None or not make_room(exc):
                raise
        return work()
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"job store: {exc}") from exc


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so busy_timeout applies here rather than a
    # deadlock-prone upgrade halfway through.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, sqlite3 must not add its own.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {STORE_BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"job store {path}: cannot enable WAL (journal_mode is {mode})")
        # NORMAL in WAL mode can lose the last commits on power loss but never corrupts.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")  # see checkpoint.py
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    # The version is read inside the write transaction so two processes cannot both migrate.
    with transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise StoreError(
                f"job store schema version {version} is newer than this program knows ({VERSION})"
            )
        for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        _add_event_columns(conn)


def _add_event_columns(conn: sqlite3.Connection) -> None:
    """Give the events table a column for each field it lacks (one added since it was made).

    Older rows hold the field's default, or NULL. Columns it has beyond ours (a newer program
    added them) stay: every statement names its columns."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    for f in KEPT:
        if f.name not in have:
            conn.execute(f"ALTER TABLE events ADD COLUMN {f.name} {column_sql(f)}")


def column_sql(f: EventField) -> str:
    """The column's type and constraint, as ``ALTER TABLE ... ADD COLUMN`` takes them."""
    sql = _SQL_TYPES[f.base]
    if f.optional:
        return sql
    if f.default is NO_DEFAULT:
        raise TypeError(
            f"event field {f.name!r} needs a default (or to be optional): rows stored before "
            "it was added hold no value for it"
        )
    return f"{sql} NOT NULL DEFAULT {_literal(f.default)}"


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + str(value).replace("'", "''") + "'"
    return repr(value)
