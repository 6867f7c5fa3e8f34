"""A job's record (``JobRecord``) and its row in the jobs table.

The columns are the record's fields; the ones that are not plain values (the status, the
artifacts' names, the request and the cache report) go in as text and come back as they were.
The SQL here runs on the store's thread only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..build.cachescript import stored_warmth
from ..jobs.status import JobStatus
from ..narration.schema import StoredEvent
from ._eventrows import insert_events
from ._sqlite import transaction


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    operation: str
    status: JobStatus
    variant: str | None = None
    pkgname: str | None = None
    pkgver: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    timeout_s: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    cancel_reason: str | None = None
    artifacts: tuple[str, ...] = ()
    last_seq: int = 0
    # What the job's kind needs to run it again after a restart, beyond the fields above
    # (a download's URL and checksum); internal, so not part of the API's view.
    request: Mapping[str, Any] = field(default_factory=dict)
    srcinfo: str | None = None  # the .SRCINFO makepkg printed for the PKGBUILD
    cache: Mapping[str, Any] | None = None  # whether the build had a cache, and what hit
    # A build's life (``build/vitals.py``): what it used, from the engine's samples, and the
    # wall time of each makepkg phase; and, once it started, how long it was expected to take.
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    peak_pids: int | None = None
    disk_bytes: int | None = None
    phases_s: Mapping[str, float] | None = None
    estimate_s: float | None = None
    # A build's latest reproduction, or a reproduce job's own (``build.reproduce.Reproduction``).
    reproduction: Mapping[str, Any] | None = None

    @property
    def cache_asked(self) -> bool:
        """Whether the job may use a build cache: only ``cache: false`` in its request says no."""
        return self.request.get("cache", True) is not False

    def to_dict(self) -> dict[str, Any]:
        """The record as the API shows it (``wire.Job``): times in ISO 8601, no request."""
        data = {name: getattr(self, name) for name in JOB_COLUMNS if name != "request"}
        data.update(
            status=self.status.value,
            created_at=_iso(self.created_at),
            started_at=_iso(self.started_at),
            finished_at=_iso(self.finished_at),
            artifacts=list(self.artifacts),
        )
        return data


JOB_COLUMNS = tuple(JobRecord.__dataclass_fields__)
JOB_SELECT = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
JOB_INSERT = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
)
_JSON_MAPS = ("cache", "phases_s", "reproduction")  # mappings kept as JSON text
# last_seq belongs to the store: it follows the events actually appended.
UPDATABLE = frozenset(JOB_COLUMNS) - {"id", "last_seq"}


def to_column(name: str, value: Any) -> Any:
    if name == "artifacts":
        if isinstance(value, str):
            raise TypeError("artifacts must be a sequence of file names, not a string")
        return json.dumps([str(item) for item in value])
    if name == "status":
        return JobStatus(value).value
    if name == "request":
        return json.dumps(dict(value))
    if name in _JSON_MAPS:
        return None if value is None else json.dumps(dict(value))
    if isinstance(value, str):
        return str(value)  # StrEnum members (CancelReason...) go in as their plain value
    return value


def job_from_row(row: Sequence[Any]) -> JobRecord:
    values = dict(zip(JOB_COLUMNS, row, strict=True))
    values["status"] = JobStatus(values["status"])
    values["artifacts"] = tuple(json.loads(values["artifacts"]))
    values["request"] = json.loads(values["request"])
    for name in _JSON_MAPS:
        values[name] = None if values[name] is None else json.loads(values[name])
    return JobRecord(**values)


def select_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(f"{JOB_SELECT} WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else job_from_row(row)


def update_job(
    conn: sqlite3.Connection, job_id: str, columns: dict[str, Any], batch: Sequence[StoredEvent]
) -> JobRecord | None:
    # Pending narration goes in first, in the same transaction: a job never appears finished
    # in the database while its last events are still only in memory.
    with transaction(conn):
        insert_events(conn, batch)
        if columns:
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job_id))
        return select_job(conn, job_id)


def list_jobs(
    conn: sqlite3.Connection, status: JobStatus | None, limit: int, offset: int
) -> tuple[list[JobRecord], int]:
    where, params = ("WHERE status = ?", [status.value]) if status is not None else ("", [])
    total = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", params).fetchone()[0]
    rows = conn.execute(
        f"{JOB_SELECT} {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [job_from_row(row) for row in rows], int(total)


def jobs_with_status(conn: sqlite3.Connection, values: Sequence[str]) -> list[JobRecord]:
    marks = ", ".join("?" * len(values))
    sql = f"{JOB_SELECT} WHERE status IN ({marks}) ORDER BY created_at, rowid"
    return [job_from_row(row) for row in conn.execute(sql, values).fetchall()]


def reproducing(conn: sqlite3.Connection) -> list[JobRecord]:
    """Every job whose reproduction says it is still running."""
    sql = f"{JOB_SELECT} WHERE json_extract(reproduction, '$.state') = 'running'"
    return [job_from_row(row) for row in conn.execute(sql).fetchall()]


def past_durations(
    conn: sqlite3.Connection, operation: str, pkgname: str, variant: str | None, most: int
) -> list[tuple[float, bool | None]]:
    """The wall times of the newest successful jobs of this package and variant, newest first,
    each with whether its build cache was warm (None: it had none)."""
    rows = conn.execute(
        "SELECT finished_at - started_at, cache FROM jobs WHERE operation = ? AND pkgname = ?"
        " AND variant IS ? AND status = ? AND started_at IS NOT NULL AND finished_at IS NOT NULL"
        " ORDER BY finished_at DESC LIMIT ?",
        (operation, pkgname, variant, JobStatus.SUCCEEDED.value, most),
    ).fetchall()
    return [(float(took), _warm(cache)) for took, cache in rows]


def _warm(cache: str | None) -> bool | None:
    return stored_warmth(json.loads(cache) if cache else None)


def count_by_status(conn: sqlite3.Connection) -> dict[JobStatus, int]:
    rows = conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
    counts = dict.fromkeys(JobStatus, 0)
    counts.update({JobStatus(status): int(count) for status, count in rows})
    return counts
