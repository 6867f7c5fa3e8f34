"""Jobs and their full narration, kept in SQLite so a service restart loses nothing.

All SQLite work runs on one dedicated thread that owns the only connection: the event loop never
blocks on the disk and the connection never sees two threads. Narration is the hot path (a build
can print ~1M lines/s in bursts), so `Store.append` numbers events in memory and returns at once,
and the thread commits them in batches, one transaction each: at once when it is idle, otherwise
everything appended meanwhile goes in the next batch (group commit). The buffer is bounded: when
the disk falls behind, `append` waits (backpressure) instead of dropping events or growing.
Listeners (`on_commit`) get each batch once it is committed: live narration is shown from there,
so nothing a client has seen can be lost in a crash.

Final-status writes must survive the caller being cancelled. Once `update_job` has started it
reaches the executor without suspending, and the executor job is shielded from the awaiting task,
so it completes regardless. Callers should still wrap it, ``await asyncio.shield(store.update_job(
...))``, so that a cancel arriving before the call starts cannot skip it either.

Over ~400 lines on purpose: the schema, its migrations and the one thread that owns the
connection belong together; a second module would have to share the connection's thread rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from ..errors import JobNotFound, StoreError
from ..jobs.status import JobStatus
from ..narration.events import Event, line_count
from .checkpoint import BACKSTOP_PAGES, Checkpointer

log = logging.getLogger(__name__)

T = TypeVar("T")

_BUSY_TIMEOUT_MS = 5_000
_MAX_PENDING_BYTES = 32 * 1024 * 1024


def _size(batch: Sequence[StoredEvent]) -> int:
    return sum(len(event.message) for event in batch)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    job_id: str
    seq: int
    ts: float
    action: str
    level: str
    message: str
    stream: str | None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seq": self.seq,
            "ts": self.ts,
            "job_id": self.job_id,
            "action": self.action,
            "level": self.level,
            "message": self.message,
        }
        if self.stream is not None:
            data["stream"] = self.stream
        if self.action == "output":
            data["lines"] = line_count(self.message)
        return data


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

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _JOB_COLUMNS if name != "request"}
        data.update(
            status=self.status.value,
            created_at=_iso(self.created_at),
            started_at=_iso(self.started_at),
            finished_at=_iso(self.finished_at),
            artifacts=list(self.artifacts),
        )
        return data


# Append-only: a database at user_version N has had the first N applied. Never edit a shipped one.
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
)

_JOB_COLUMNS = tuple(JobRecord.__dataclass_fields__)
_JOB_SELECT = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"
_JOB_INSERT = (
    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})"
)
# last_seq belongs to the store: it follows the events actually appended.
_UPDATABLE = frozenset(_JOB_COLUMNS) - {"id", "last_seq"}
_EVENT_COLUMNS = tuple(StoredEvent.__dataclass_fields__)
_EVENT_ROW = attrgetter(*_EVENT_COLUMNS)


def _to_column(name: str, value: Any) -> Any:
    if name == "artifacts":
        if isinstance(value, str):
            raise TypeError("artifacts must be a sequence of file names, not a string")
        return json.dumps([str(item) for item in value])
    if name == "status":
        return JobStatus(value).value
    if name == "request":
        return json.dumps(dict(value))
    if name == "cache":
        return None if value is None else json.dumps(dict(value))
    if isinstance(value, str):
        return str(value)  # StrEnum members (CancelReason...) go in as their plain value
    return value


def _job_from_row(row: Sequence[Any]) -> JobRecord:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    values["status"] = JobStatus(values["status"])
    values["artifacts"] = tuple(json.loads(values["artifacts"]))
    values["request"] = json.loads(values["request"])
    values["cache"] = None if values["cache"] is None else json.loads(values["cache"])
    return JobRecord(**values)


# --- functions below run on the store's thread only ---------------------------------------------


def _translate(
    work: Callable[[], T], make_room: Callable[[BaseException], bool] | None = None
) -> T:
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
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
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


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, sqlite3 must not add its own.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"job store {path}: cannot enable WAL (journal_mode is {mode})")
        # NORMAL in WAL mode can lose the last commits on power loss but never corrupts.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")  # see _checkpoint.py
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    # The version is read inside the write transaction so two processes cannot both migrate.
    with _transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise StoreError(
                f"job store schema version {version} is newer than this program knows"
                f" ({len(_MIGRATIONS)})"
            )
        for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")


def _insert_events(conn: sqlite3.Connection, batch: Sequence[StoredEvent]) -> None:
    if not batch:
        return
    conn.executemany(
        f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES ({', '.join('?' * 7)})",
        map(_EVENT_ROW, batch),
    )
    # Seqs grow in batch order, so the last one seen per job is its highest.
    last = {event.job_id: event.seq for event in batch}
    conn.executemany(
        "UPDATE jobs SET last_seq = ?1 WHERE id = ?2 AND last_seq < ?1",
        [(seq, job_id) for job_id, seq in last.items()],
    )


def _write_events(conn: sqlite3.Connection, batch: Sequence[StoredEvent]) -> None:
    if batch:
        with _transaction(conn):
            _insert_events(conn, batch)


def _select_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(f"{_JOB_SELECT} WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job_from_row(row)


def _update_job(
    conn: sqlite3.Connection, job_id: str, columns: dict[str, Any], batch: Sequence[StoredEvent]
) -> JobRecord | None:
    # Pending narration goes in first, in the same transaction: a job never appears finished
    # in the database while its last events are still only in memory.
    with _transaction(conn):
        _insert_events(conn, batch)
        if columns:
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job_id))
        return _select_job(conn, job_id)


def _job_last_seq(conn: sqlite3.Connection, job_id: str) -> int | None:
    row = conn.execute(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?1)"
        " FROM jobs WHERE id = ?1",
        (job_id,),
    ).fetchone()
    return None if row is None else int(row[0])


def _list_jobs(
    conn: sqlite3.Connection, status: JobStatus | None, limit: int, offset: int
) -> tuple[list[JobRecord], int]:
    where, params = ("WHERE status = ?", [status.value]) if status is not None else ("", [])
    total = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", params).fetchone()[0]
    rows = conn.execute(
        f"{_JOB_SELECT} {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [_job_from_row(row) for row in rows], int(total)


def _select_events(
    conn: sqlite3.Connection, job_id: str, after_seq: int, limit: int, max_bytes: int | None
) -> list[StoredEvent]:
    cursor = conn.execute(
        f"SELECT {', '.join(_EVENT_COLUMNS)} FROM events"
        " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (job_id, after_seq, limit),
    )
    if max_bytes is None:
        return [StoredEvent(*row) for row in cursor.fetchall()]
    # Rows are stepped one at a time, so a page of 64 KiB events stops where it should
    # instead of loading `limit` of them.
    page: list[StoredEvent] = []
    size = 0
    try:
        for row in cursor:
            page.append(StoredEvent(*row))
            size += len(page[-1].message)
            if size >= max_bytes:
                break
    finally:
        cursor.close()
    return page


def _output_lines(conn: sqlite3.Connection, job_id: str) -> dict[str, int]:
    # A build's output is its OUTPUT and PHASE events after its (last) start; an event holds
    # its lines joined by "\n", so it holds one line more than it has newlines.
    start = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ? AND action = 'build_started'",
        (job_id,),
    ).fetchone()[0]
    rows = conn.execute(
        "SELECT stream, SUM(LENGTH(message) - LENGTH(REPLACE(message, char(10), '')) + 1)"
        " FROM events WHERE job_id = ? AND seq > ? AND action IN ('output', 'phase')"
        " AND stream IS NOT NULL GROUP BY stream",
        (job_id, start),
    ).fetchall()
    return {str(stream): int(count) for stream, count in rows}


# --- the store ----------------------------------------------------------------------------------


class Store:
    """Use `Store.open`; every method must be called from the event loop that opened it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        max_pending_events: int,
        checkpointer: Checkpointer,
    ) -> None:
        self._conn = conn
        self._executor = executor
        self._checkpointer = checkpointer
        self._max_pending = max_pending_events
        self._pending: list[StoredEvent] = []
        self._pending_bytes = 0
        self._inflight = 0  # events handed to the thread but not yet committed
        self._inflight_bytes = 0
        self._seqs: dict[str, int] = {}
        self._room = asyncio.Event()
        self._failure: StoreError | None = None
        self._closed = False
        self._listeners: list[Callable[[Sequence[StoredEvent]], None]] = []
        self._make_room: Callable[[BaseException], bool] | None = None

    @classmethod
    async def open(cls, path: Path, *, max_pending_events: int = 20_000) -> Store:
        if max_pending_events < 1:
            raise ValueError("max_pending_events must be >= 1")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orchestrator-store")
        path = Path(path)
        try:
            conn = await asyncio.get_running_loop().run_in_executor(
                executor, _translate, lambda: _connect(path)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor, max_pending_events, Checkpointer(path))

    def on_commit(self, listener: Callable[[Sequence[StoredEvent]], None]) -> None:
        """Call ``listener`` on the loop with each batch of events once it is committed.

        Batches come in commit order, so each job's events come in seq order. Whoever shows
        events live should take them from here: an event seen before its commit could vanish
        in a crash, and its seq be given again to another event after the restart.
        """
        self._listeners.append(listener)

    def on_out_of_space(self, make_room: Callable[[BaseException], bool]) -> None:
        """Called on the store's thread when a write fails; if it returns True (it freed some
        room, see ``DataDisk.make_room``), the write is tried once more."""
        self._make_room = make_room

    @property
    def failure(self) -> str | None:
        """Why the last write failed, while no write has succeeded since."""
        return None if self._failure is None else str(self._failure)

    async def close(self) -> None:
        """Flush, stop the writer and close the connection; raises if events could not be saved."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pending or self._inflight:
                await asyncio.shield(self._start_flush())
            self._raise_if_failed()
        finally:
            await self._checkpointer.close()
            with contextlib.suppress(StoreError):
                await self._submit(lambda conn: conn.close())
            self._executor.shutdown(wait=False)

    async def create_job(self, record: JobRecord) -> None:
        values = [
            0 if name == "last_seq" else _to_column(name, getattr(record, name))
            for name in _JOB_COLUMNS
        ]
        await self._run(lambda conn: conn.execute(_JOB_INSERT, values).close())
        self._seqs.setdefault(record.id, 0)

    async def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        """Set the given columns and return the updated record; also commits pending events."""
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise TypeError(f"update_job() got unknown field(s): {', '.join(unknown)}")
        self._check_open()
        columns = {name: _to_column(name, value) for name, value in fields.items()}
        batch = self._take_pending()
        # No await before this point: once called, the update is on the thread's queue.
        future = self._submit(lambda conn: _update_job(conn, job_id, columns, batch), batch)
        record = await asyncio.shield(future)
        if record is None:
            raise JobNotFound(job_id)
        return self._live(record)

    async def get_job(self, job_id: str) -> JobRecord | None:
        record = await self._run(lambda conn: _select_job(conn, job_id))
        return None if record is None else self._live(record)

    async def list_jobs(
        self, *, status: JobStatus | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, and how many match the filter in total."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        jobs, total = await self._run(lambda conn: _list_jobs(conn, status, limit, offset))
        return [self._live(job) for job in jobs], total

    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[JobRecord]:
        """Every job in one of ``statuses``, oldest first."""
        values = [JobStatus(status).value for status in statuses]
        if not values:
            return []
        marks = ", ".join("?" * len(values))
        sql = f"{_JOB_SELECT} WHERE status IN ({marks}) ORDER BY created_at, rowid"
        rows = await self._run(lambda conn: conn.execute(sql, values).fetchall())
        return [self._live(_job_from_row(row)) for row in rows]

    async def output_lines(self, job_id: str) -> dict[str, int]:
        """How many lines of each stream of its build's output the job's narration holds
        (committed: what a restarted service must not store again)."""
        await self.flush()
        return await self._run(lambda conn: _output_lines(conn, job_id))

    async def actions(self, job_id: str) -> set[str]:
        """Every kind of event the job's narration holds (committed): what it got to."""
        await self.flush()
        sql = "SELECT DISTINCT action FROM events WHERE job_id = ?"
        rows = await self._run(lambda conn: conn.execute(sql, (job_id,)).fetchall())
        return {str(action) for (action,) in rows}

    async def count_by_status(self) -> dict[JobStatus, int]:
        """Job counts for every status, zero included."""
        sql = "SELECT status, COUNT(*) FROM jobs GROUP BY status"
        rows = await self._run(lambda conn: conn.execute(sql).fetchall())
        counts = dict.fromkeys(JobStatus, 0)
        counts.update({JobStatus(status): int(count) for status, count in rows})
        return counts

    async def append(self, job_id: str, events: Sequence[Event]) -> list[StoredEvent]:
        """Number ``events`` and queue them for writing; waits only when the buffer is full.

        After a failed write (a full disk) the next append tries again first, and raises
        ``StoreError`` while writes still fail: nothing is numbered that could not be kept."""
        self._check_open()
        if self._failure is not None:
            await self.flush()
        if not events:
            return []
        last = self._seqs.get(job_id)
        if last is None:
            found = await self._run(lambda conn: _job_last_seq(conn, job_id))
            if found is None:
                raise JobNotFound(job_id)
            self._check_usable()
            # Another append may have initialised the counter while we were looking it up.
            last = self._seqs.setdefault(job_id, found)
        stored = [
            StoredEvent(job_id, seq, e.ts, str(e.action), str(e.level), e.message, e.stream)
            for seq, e in enumerate(events, start=last + 1)
        ]
        self._seqs[job_id] = last + len(stored)
        self._pending.extend(stored)
        self._pending_bytes += _size(stored)
        # Group commit: write at once when the thread is idle; otherwise the events wait for
        # the batch in flight and go with the next one, so batches grow with the load.
        if not self._inflight:
            self._start_flush()
        while self._backlogged():
            if not self._inflight:
                self._start_flush()
            self._room.clear()
            await self._room.wait()
            self._raise_if_failed()
        return stored

    async def events(
        self, job_id: str, *, after_seq: int = 0, limit: int = 10_000, max_bytes: int | None = None
    ) -> list[StoredEvent]:
        """Events with seq > ``after_seq``, in order, including ones not yet flushed; at most
        ``limit`` of them, and none after the one whose message brings the page to ``max_bytes``."""
        with contextlib.suppress(StoreError):  # a full disk must not stop reading what is kept
            await self.flush()
        return await self._run(
            lambda conn: _select_events(conn, job_id, after_seq, limit, max_bytes)
        )

    async def flush(self) -> None:
        """Commit everything appended so far, including batches whose write failed before."""
        self._check_open()
        self._failure = None  # try again; if it still fails, the batch sets it anew
        # Even an empty batch is useful: the thread is FIFO, so it completes after any batch
        # already in flight.
        await asyncio.shield(self._start_flush())
        self._raise_if_failed()

    # --- internals --------------------------------------------------------------------------

    def _live(self, record: JobRecord) -> JobRecord:
        # The database lags the in-memory counter by up to one flush.
        seq = self._seqs.get(record.id, 0)
        return replace(record, last_seq=seq) if seq > record.last_seq else record

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("job store is closed")

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise StoreError(f"writing events failed earlier: {self._failure}") from self._failure

    def _check_usable(self) -> None:
        self._check_open()
        self._raise_if_failed()

    def _submit(
        self, work: Callable[[sqlite3.Connection], T], batch: Sequence[StoredEvent] = ()
    ) -> asyncio.Future[T]:
        conn = self._conn
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, _translate, lambda: work(conn), self._make_room
        )
        if batch:
            self._inflight += len(batch)
            self._inflight_bytes += _size(batch)
            future.add_done_callback(lambda done: self._batch_done(batch, done))
        return future

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        return await asyncio.shield(self._submit(work))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            if isinstance(exc, StoreError):
                self._failure = exc
            else:
                self._failure = StoreError(f"job store: {exc!r}")
                self._failure.__cause__ = exc

    def _batch_done(self, batch: Sequence[StoredEvent], future: asyncio.Future[Any]) -> None:
        # Recorded here rather than by whoever awaits, so a failure is kept even if nobody
        # awaits the batch (or its awaiter was cancelled), and raised from the next append/flush.
        self._inflight -= len(batch)
        self._inflight_bytes -= _size(batch)
        if future.cancelled() or future.exception() is not None:
            # Kept, in front of anything appended since, so that a later write saves it in
            # order once the disk has room again: a failed write loses no event.
            self._pending[:0] = batch
            self._pending_bytes += _size(batch)
            exc = future.exception() if not future.cancelled() else None
            self._fail(exc or StoreError(f"a batch of {len(batch)} events was not written"))
        else:
            self._failure = None
            self._checkpointer.committed()
            for listener in self._listeners:
                try:
                    listener(batch)
                except Exception:  # a listener's bug must not stop the writing
                    log.exception("an on_commit listener failed")
        if self._pending and not self._inflight and not self._closed and self._failure is None:
            self._start_flush()
        self._room.set()

    def _take_pending(self) -> list[StoredEvent]:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        return batch

    def _backlogged(self) -> bool:
        # Counted in events and in bytes: an output event can hold 64 KiB of lines.
        events = len(self._pending) + self._inflight
        size = self._pending_bytes + self._inflight_bytes
        return events > self._max_pending or size > _MAX_PENDING_BYTES

    def _start_flush(self) -> asyncio.Future[None]:
        batch = self._take_pending()
        return self._submit(lambda conn: _write_events(conn, batch), batch)
