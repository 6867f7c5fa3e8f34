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

What runs on the thread is in ``_sqlite`` (the file, its tables and migrations), ``records``
(the jobs table) and ``_eventrows`` (the events table); this module is the thread's one user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from ..errors import JobNotFound, StoreError
from ..jobs.status import JobStatus
from ..narration.events import Event
from ..narration.schema import StoredEvent, numbered
from . import _eventrows, records
from ._eventrows import size as _size
from ._sqlite import connect, translate
from .checkpoint import Checkpointer
from .records import JobRecord

__all__ = ["JobRecord", "Store"]  # JobRecord: the store's record type, made in records.py

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_PENDING_BYTES = 32 * 1024 * 1024


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
                executor, translate, lambda: connect(path)
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
            0 if name == "last_seq" else records.to_column(name, getattr(record, name))
            for name in records.JOB_COLUMNS
        ]
        await self._run(lambda conn: conn.execute(records.JOB_INSERT, values).close())
        self._seqs.setdefault(record.id, 0)

    async def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        """Set the given columns and return the updated record; also commits pending events."""
        unknown = sorted(set(fields) - records.UPDATABLE)
        if unknown:
            raise TypeError(f"update_job() got unknown field(s): {', '.join(unknown)}")
        self._check_open()
        columns = {name: records.to_column(name, value) for name, value in fields.items()}
        batch = self._take_pending()
        # No await before this point: once called, the update is on the thread's queue.
        future = self._submit(lambda conn: records.update_job(conn, job_id, columns, batch), batch)
        record = await asyncio.shield(future)
        if record is None:
            raise JobNotFound(job_id)
        return self._live(record)

    async def get_job(self, job_id: str) -> JobRecord | None:
        record = await self._run(lambda conn: records.select_job(conn, job_id))
        return None if record is None else self._live(record)

    async def list_jobs(
        self, *, status: JobStatus | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, and how many match the filter in total."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        jobs, total = await self._run(lambda conn: records.list_jobs(conn, status, limit, offset))
        return [self._live(job) for job in jobs], total

    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[JobRecord]:
        """Every job in one of ``statuses``, oldest first."""
        values = [JobStatus(status).value for status in statuses]
        if not values:
            return []
        found = await self._run(lambda conn: records.jobs_with_status(conn, values))
        return [self._live(job) for job in found]

    async def reproducing(self) -> list[JobRecord]:
        """Every job whose reproduction says it is still running (``build.reproduce``)."""
        return [self._live(job) for job in await self._run(records.reproducing)]

    async def output_lines(self, job_id: str) -> dict[str, int]:
        """How many lines of each stream of its build's output the job's narration holds
        (committed: what a restarted service must not store again)."""
        await self.flush()
        return await self._run(lambda conn: _eventrows.output_lines(conn, job_id))

    async def actions(self, job_id: str) -> set[str]:
        """Every kind of event the job's narration holds (committed): what it got to."""
        await self.flush()
        return await self._run(lambda conn: _eventrows.actions(conn, job_id))

    async def past_durations(
        self, operation: str, pkgname: str, variant: str | None, most: int = 5
    ) -> list[tuple[float, bool | None]]:
        """The newest successful runs of this package and variant: wall time in seconds, and
        whether the build cache was warm (None: no cache)."""
        return await self._run(
            lambda conn: records.past_durations(conn, operation, pkgname, variant, most)
        )

    async def count_by_status(self) -> dict[JobStatus, int]:
        """Job counts for every status, zero included."""
        return await self._run(records.count_by_status)

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
            found = await self._run(lambda conn: _eventrows.job_last_seq(conn, job_id))
            if found is None:
                raise JobNotFound(job_id)
            self._check_usable()
            # Another append may have initialised the counter while we were looking it up.
            last = self._seqs.setdefault(job_id, found)
        stored = [numbered(event, job_id, seq) for seq, event in enumerate(events, start=last + 1)]
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
            lambda conn: _eventrows.select_events(conn, job_id, after_seq, limit, max_bytes)
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
            self._executor, translate, lambda: work(conn), self._make_room
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
        return self._submit(lambda conn: _eventrows.write_events(conn, batch), batch)
