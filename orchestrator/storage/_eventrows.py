"""A job's narration in the events table: written in batches, read in pages.

The row is ``StoredEvent``'s fields (``narration/schema.py``): a field added there is a column
here without a change. Runs on the store's thread only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..narration.schema import COLUMNS, StoredEvent, from_row, row_of
from ._sqlite import transaction

_INSERT = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SELECT = (
    f"SELECT {', '.join(COLUMNS)} FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)


def size(batch: Sequence[StoredEvent]) -> int:
    """What a batch weighs, for the store's bound on what waits in memory."""
    return sum(len(event.message) for event in batch)


def insert_events(conn: sqlite3.Connection, batch: Sequence[StoredEvent]) -> None:
    if not batch:
        return
    conn.executemany(_INSERT, map(row_of, batch))
    # Seqs grow in batch order, so the last one seen per job is its highest.
    last = {event.job_id: event.seq for event in batch}
    conn.executemany(
        "UPDATE jobs SET last_seq = ?1 WHERE id = ?2 AND last_seq < ?1",
        [(seq, job_id) for job_id, seq in last.items()],
    )


def write_events(conn: sqlite3.Connection, batch: Sequence[StoredEvent]) -> None:
    if batch:
        with transaction(conn):
            insert_events(conn, batch)


def job_last_seq(conn: sqlite3.Connection, job_id: str) -> int | None:
    row = conn.execute(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?1)"
        " FROM jobs WHERE id = ?1",
        (job_id,),
    ).fetchone()
    return None if row is None else int(row[0])


def select_events(
    conn: sqlite3.Connection, job_id: str, after_seq: int, limit: int, max_bytes: int | None
) -> list[StoredEvent]:
    cursor = conn.execute(_SELECT, (job_id, after_seq, limit))
    if max_bytes is None:
        return [from_row(row) for row in cursor.fetchall()]
    # Rows are stepped one at a time, so a page of 64 KiB events stops where it should
    # instead of loading `limit` of them.
    page: list[StoredEvent] = []
    total = 0
    try:
        for row in cursor:
            page.append(from_row(row))
            total += len(page[-1].message)
            if total >= max_bytes:
                break
    finally:
        cursor.close()
    return page


def _build_start(conn: sqlite3.Connection, job_id: str) -> int:
    # A build's output is its OUTPUT and PHASE events after its (last) start.
    return int(
        conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events"
            " WHERE job_id = ? AND action = 'build_started'",
            (job_id,),
        ).fetchone()[0]
    )


def output_lines(conn: sqlite3.Connection, job_id: str) -> dict[str, int]:
    # An event holds its lines joined by "\n", so it holds one line more than it has newlines.
    start = _build_start(conn, job_id)
    rows = conn.execute(
        "SELECT stream, SUM(LENGTH(message) - LENGTH(REPLACE(message, char(10), '')) + 1)"
        " FROM events WHERE job_id = ? AND seq > ? AND action IN ('output', 'phase')"
        " AND stream IS NOT NULL GROUP BY stream",
        (job_id, start),
    ).fetchall()
    return {str(stream): int(count) for stream, count in rows}


def output_ends(conn: sqlite3.Connection, job_id: str) -> dict[str, tuple[str, str]]:
    """The first and the last line of each stream of the build's output."""
    rows = conn.execute(
        "SELECT stream, MIN(seq), MAX(seq) FROM events WHERE job_id = ? AND seq > ?"
        " AND action IN ('output', 'phase') AND stream IS NOT NULL GROUP BY stream",
        (job_id, _build_start(conn, job_id)),
    ).fetchall()
    message = "SELECT message FROM events WHERE job_id = ? AND seq = ?"
    ends: dict[str, tuple[str, str]] = {}
    for stream, first, last in rows:
        head = str(conn.execute(message, (job_id, first)).fetchone()[0])
        tail = str(conn.execute(message, (job_id, last)).fetchone()[0])
        ends[str(stream)] = (head.split("\n", 1)[0], tail.rsplit("\n", 1)[-1])
    return ends


def actions(conn: sqlite3.Connection, job_id: str) -> set[str]:
    rows = conn.execute("SELECT DISTINCT action FROM events WHERE job_id = ?", (job_id,))
    return {str(action) for (action,) in rows}
