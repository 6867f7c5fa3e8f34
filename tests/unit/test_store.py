"""The SQLite job store: records, gapless narration, restarts, backpressure and failures."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.errors import JobNotFound, OrchestratorError, StoreError
from orchestrator.jobs.status import JobStatus
from orchestrator.narration.events import Action, Event, Level
from orchestrator.narration.schema import StoredEvent
from orchestrator.storage.checkpoint import BACKSTOP_PAGES
from orchestrator.storage.store import JobRecord, Store

from .. import waiting


def job(job_id: str, created_at: float = 1_700_000_000.0, **fields: object) -> JobRecord:
    return JobRecord(
        id=job_id,
        operation="build",
        status=fields.pop("status", JobStatus.QUEUED),  # type: ignore[arg-type]
        created_at=created_at,
        **fields,  # type: ignore[arg-type]
    )


def lines(n: int, start: int = 0) -> list[Event]:
    return [
        Event(Action.OUTPUT, f"line {i}", stream="stdout", ts=float(i)) for i in range(start, n)
    ]


def on_disk(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read with a second connection, so only committed data is seen."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.sqlite3"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[Store]:
    store = await Store.open(db)
    yield store
    await store.close()


def stall(store: Store) -> threading.Event:
    """Keep the store's database thread busy until the event is set: writes wait meanwhile.
    Returns once the thread is held, so what is submitted next waits in its queue."""
    held, event = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        event.wait()

    store._executor.submit(hold)
    assert held.wait(10), "the database thread never took the stall"
    return event


async def queued_on_the_thread(store: Store, count: int) -> None:
    """Until ``count`` pieces of work wait behind the stall on the database thread."""
    await waiting.until(
        lambda: store._executor._work_queue.qsize(),
        lambda size: size == count,
        what=f"{count} queued on the database thread",
    )


async def test_create_get_update(store: Store) -> None:
    await store.create_job(job("a", variant="cpu", timeout_s=30.0))
    got = await store.get_job("a")
    assert got == job("a", variant="cpu", timeout_s=30.0)
    assert await store.get_job("nope") is None

    updated = await store.update_job(
        "a", status=JobStatus.SUCCEEDED, started_at=1.5, exit_code=0, artifacts=["a-1.0-1.pkg"]
    )
    assert updated.status is JobStatus.SUCCEEDED
    assert (updated.started_at, updated.exit_code) == (1.5, 0)
    assert updated.artifacts == ("a-1.0-1.pkg",)
    assert await store.get_job("a") == updated


async def test_update_unknown_job_or_field(store: Store) -> None:
    with pytest.raises(JobNotFound, match="no job with id 'ghost'") as info:
        await store.update_job("ghost", status=JobStatus.FAILED)
    assert isinstance(info.value, OrchestratorError)
    await store.create_job(job("a"))
    with pytest.raises(TypeError, match="last_seq"):
        await store.update_job("a", last_seq=5)
    with pytest.raises(JobNotFound):
        await store.append("ghost", lines(1))


async def test_list_jobs_filter_pages_newest_first(store: Store) -> None:
    await store.create_job(job("old", created_at=100.0, status=JobStatus.FAILED))
    await store.create_job(job("mid1", created_at=200.0))
    await store.create_job(job("mid2", created_at=200.0, status=JobStatus.FAILED))
    await store.create_job(job("new", created_at=300.0))

    jobs, total = await store.list_jobs()
    # Equal created_at: the later insert counts as newer.
    assert [j.id for j in jobs] == ["new", "mid2", "mid1", "old"]
    assert total == 4
    page, total = await store.list_jobs(limit=2, offset=1)
    assert ([j.id for j in page], total) == (["mid2", "mid1"], 4)
    failed, total = await store.list_jobs(status=JobStatus.FAILED, limit=1)
    assert ([j.id for j in failed], total) == (["mid2"], 2)
    assert await store.list_jobs(status=JobStatus.RUNNING) == ([], 0)


async def test_jobs_with_status_and_counts(store: Store) -> None:
    await store.create_job(job("q", created_at=1.0))
    await store.create_job(job("r1", created_at=3.0, status=JobStatus.RUNNING))
    await store.create_job(job("r2", created_at=2.0, status=JobStatus.RUNNING))
    await store.update_job("q", status=JobStatus.SUCCEEDED)

    found = await store.jobs_with_status([JobStatus.RUNNING, JobStatus.QUEUED])
    assert [j.id for j in found] == ["r2", "r1"]
    assert await store.jobs_with_status([]) == []
    counts = await store.count_by_status()
    assert counts[JobStatus.RUNNING] == 2
    assert counts[JobStatus.SUCCEEDED] == 1
    assert counts[JobStatus.QUEUED] == 0
    assert set(counts) == set(JobStatus)


async def test_append_assigns_gapless_seqs_at_once(store: Store, db: Path) -> None:
    await store.create_job(job("a"))
    await store.create_job(job("b"))
    stalled = stall(store)
    reading = asyncio.ensure_future(store.get_job("a"))  # runs before the events are written
    await queued_on_the_thread(store, 1)  # ahead of the writes below
    first = await store.append("a", lines(3))
    other = await store.append("b", lines(2))
    second = await store.append("a", lines(8, start=3))
    assert [e.seq for e in first + second] == list(range(1, 9))
    assert [e.seq for e in other] == [1, 2]
    assert second[0] == StoredEvent(
        Action.OUTPUT, "line 3", Level.INFO, "stdout", 3.0, job_id="a", seq=4
    )
    assert await store.append("a", []) == []
    # Nothing is on disk yet, but the record already counts the pending events.
    assert on_disk(db, "SELECT COUNT(*) FROM events") == [(0,)]
    stalled.set()
    record = await reading
    assert record is not None
    assert record.last_seq == 8

    await store.flush()
    assert on_disk(db, "SELECT job_id, MAX(seq) FROM events GROUP BY job_id") == [
        ("a", 8),
        ("b", 2),
    ]
    assert on_disk(db, "SELECT id, last_seq FROM jobs ORDER BY id") == [("a", 8), ("b", 2)]


async def test_events_after_seq_includes_pending(store: Store) -> None:
    await store.create_job(job("a"))
    await store.append("a", lines(3))
    await store.flush()
    stalled = stall(store)
    await store.append("a", [Event(Action.FAILED, "boom", Level.ERROR)])
    stalled.set()

    got = await store.events("a", after_seq=2)
    assert [(e.seq, e.action, e.level, e.stream) for e in got] == [
        (3, "output", "info", "stdout"),
        (4, "failed", "error", None),
    ]
    assert [e.seq for e in await store.events("a", limit=2)] == [1, 2]
    assert await store.events("a", after_seq=4) == []
    assert await store.events("nobody") == []


async def test_update_job_commits_pending_events_first(store: Store, db: Path) -> None:
    await store.create_job(job("a"))
    stalled = stall(store)
    await store.append("a", lines(2))  # in flight behind the stall
    await store.append("a", lines(4, start=2))  # pending: goes with the update
    assert len(store._pending) == 2
    updating = asyncio.ensure_future(store.update_job("a", status=JobStatus.SUCCEEDED))
    await waiting.until(lambda: not store._pending, what="the update taking the pending events")
    stalled.set()
    await updating
    assert on_disk(db, "SELECT status, last_seq FROM jobs") == [("succeeded", 4)]
    assert on_disk(db, "SELECT COUNT(*) FROM events") == [(4,)]


async def test_reopen_keeps_everything_and_continues_seqs(db: Path) -> None:
    store = await Store.open(db)
    await store.create_job(job("a"))
    await store.append("a", lines(5))
    await store.update_job("a", status=JobStatus.RUNNING, cancel_reason="user")
    await store.append("a", lines(7, start=5))  # still pending at close
    await store.close()

    store = await Store.open(db)
    try:
        record = await store.get_job("a")
        assert record is not None
        assert (record.status, record.cancel_reason, record.last_seq) == (
            JobStatus.RUNNING,
            "user",
            7,
        )
        # Two first appends racing for the counter the store has to load from disk.
        one, two = await asyncio.gather(
            store.append("a", lines(9, start=7)), store.append("a", lines(11, start=9))
        )
        assert [e.seq for e in one + two] == [8, 9, 10, 11]
        events = await store.events("a")
        assert [e.seq for e in events] == list(range(1, 12))
        assert [e.message for e in events] == [f"line {i}" for i in range(11)]
    finally:
        await store.close()


async def test_backpressure_bounds_memory_and_loses_nothing(db: Path) -> None:
    limit, batch, total = 1_000, 500, 100_000
    store = await Store.open(db, max_pending_events=limit)
    try:
        await store.create_job(job("flood"))
        events = lines(total)
        peak = 0
        for start in range(0, total, batch):
            await store.append("flood", events[start : start + batch])
            peak = max(peak, len(store._pending) + store._inflight)
        assert peak <= limit
        stored = await store.events("flood", limit=total + 1)
        assert [e.seq for e in stored] == list(range(1, total + 1))
        assert stored[-1].message == f"line {total - 1}"
    finally:
        await store.close()


async def test_append_waits_while_the_disk_is_behind(db: Path) -> None:
    store = await Store.open(db, max_pending_events=10)
    stall = threading.Event()
    try:
        await store.create_job(job("a"))
        store._executor.submit(stall.wait)  # the database thread is stuck behind this
        first = await store.append("a", lines(8))  # under the limit: returns at once
        blocked = asyncio.create_task(store.append("a", lines(16, start=8)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        stall.set()
        second = await asyncio.wait_for(blocked, 5)
        assert [e.seq for e in first + second] == list(range(1, 17))
        assert [e.seq for e in await store.events("a")] == list(range(1, 17))
    finally:
        stall.set()
        await store.close()


async def test_writer_flushes_on_its_own(db: Path) -> None:
    store = await Store.open(db)
    try:
        await store.create_job(job("a"))
        await store.append("a", lines(3))
        await waiting.until(
            lambda: on_disk(db, "SELECT COUNT(*), MAX(seq) FROM events"),
            lambda rows: rows == [(3, 3)],
            timeout_s=1,
            what="the events on disk",
        )
    finally:
        await store.close()


async def test_update_survives_cancelled_caller(store: Store) -> None:
    await store.create_job(job("a"))
    stalled = stall(store)  # so the update is still queued when its caller goes
    task = asyncio.create_task(store.update_job("a", status=JobStatus.CANCELLED, reason="bye"))
    await queued_on_the_thread(store, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stalled.set()
    record = await store.get_job("a")
    assert record is not None
    assert (record.status, record.reason) == (JobStatus.CANCELLED, "bye")


async def test_sqlite_errors_become_store_error(tmp_path: Path, store: Store) -> None:
    with pytest.raises(StoreError) as info:
        await Store.open(tmp_path)  # a directory
    assert isinstance(info.value.__cause__, sqlite3.Error)

    await store.create_job(job("a"))
    with pytest.raises(StoreError, match="UNIQUE") as dup:
        await store.create_job(job("a"))
    assert isinstance(dup.value.__cause__, sqlite3.IntegrityError)


async def test_writer_failure_is_raised_not_lost(db: Path) -> None:
    broken = await Store.open(db)
    await broken.create_job(job("a"))
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE events")
    conn.commit()
    conn.close()
    await broken.append("a", lines(3))
    with pytest.raises(StoreError, match="no such table"):
        await broken.flush()
    # Each later write tries the kept batch again, and says why it still fails.
    with pytest.raises(StoreError, match="no such table"):
        await broken.append("a", lines(1))
    with pytest.raises(StoreError):
        await broken.events("a")
    with pytest.raises(StoreError, match="no such table"):
        await broken.close()  # the connection is released all the same
    await broken.close()


async def test_wal_and_schema_version(db: Path, store: Store) -> None:
    assert on_disk(db, "PRAGMA journal_mode") == [("wal",)]
    assert on_disk(db, "PRAGMA user_version") == [(6,)]
    await store.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(db)


async def test_close_is_idempotent_and_final(db: Path) -> None:
    store = await Store.open(db)
    await store.create_job(job("a"))
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get_job("a")
    with pytest.raises(StoreError, match="closed"):
        await store.append("a", lines(1))


def test_a_records_view_for_the_api() -> None:
    record = job(
        "j",
        created_at=0.0,
        status=JobStatus.SUCCEEDED,
        pkgver="1.0-1",
        finished_at=1.25,
        artifacts=("x.pkg.tar.zst",),
        last_seq=7,
    )
    data = record.to_dict()
    assert data["status"] == "succeeded"
    assert data["created_at"] == "1970-01-01T00:00:00.000Z"
    assert data["finished_at"] == "1970-01-01T00:00:01.250Z"
    assert data["started_at"] is None
    assert data["artifacts"] == ["x.pkg.tar.zst"]
    assert (data["id"], data["operation"], data["pkgver"], data["last_seq"]) == (
        "j",
        "build",
        "1.0-1",
        7,
    )
    # The kind's request is for running the job again after a restart, not for clients.
    assert set(data) == set(JobRecord.__dataclass_fields__) - {"request"}


async def test_commit_listeners_hear_each_batch_once_committed_in_order(
    store: Store, db: Path
) -> None:
    await store.create_job(job("a"))
    heard: list[tuple[int, int]] = []  # (seq, events on disk when heard)

    def listener(batch: object) -> None:
        for event in batch:  # type: ignore[attr-defined]
            heard.append((event.seq, on_disk(db, "SELECT COUNT(*) FROM events")[0][0]))

    def broken(batch: object) -> None:
        raise RuntimeError("a listener's bug")

    store.on_commit(broken)  # must not stop the others, nor the writing
    store.on_commit(listener)
    stalled = stall(store)
    for n in range(5):
        await store.append("a", lines(n + 1, start=n))
    assert heard == []
    stalled.set()
    await store.flush()
    assert [seq for seq, _ in heard] == [1, 2, 3, 4, 5]
    assert all(on_disk_count >= seq for seq, on_disk_count in heard)
    await store.append("a", lines(6, start=5))
    await store.flush()
    assert heard[-1][0] == 6


async def test_the_log_is_copied_back_beside_the_writer_not_inside_a_commit(db: Path) -> None:
    store = await Store.open(db)
    try:
        backstop = await store._run(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert backstop == BACKSTOP_PAGES  # far above what this test writes
        await store.create_job(job("a"))
        await store.flush()
        # The checkpointer's round for the job row is over: begun (it clears the flag as it
        # hands its work to its thread), and done (that thread has run what came after).
        checkpointer = store._checkpointer
        await waiting.until(lambda: not checkpointer._dirty.is_set(), what="a checkpoint round")
        await asyncio.get_running_loop().run_in_executor(checkpointer._executor, lambda: None)
        before = db.stat().st_size
        big = "x" * 1000
        await store.append("a", [Event(Action.OUTPUT, big, stream="stdout")] * 2000)
        await store.flush()
        # 2 MB committed to the log; only the checkpointer's round copies it into the file.
        await waiting.until(
            lambda: db.stat().st_size,
            lambda size: size > before + 1_000_000,
            timeout_s=5,
            what="the log copied into the file",
        )
    finally:
        await store.close()


async def test_events_appended_during_a_write_follow_it_unasked(store: Store, db: Path) -> None:
    # Nobody flushes or appends again: the end of a burst must still reach the disk (and
    # the live streams) by itself.
    await store.create_job(job("a"))
    stalled = stall(store)
    await store.append("a", lines(3))  # in flight, behind the stall
    await store.append("a", lines(7, start=3))  # pending until that batch is done
    stalled.set()
    await waiting.until(
        lambda: on_disk(db, "SELECT COUNT(*) FROM events"),
        lambda rows: rows == [(7,)],
        timeout_s=2,
        what="the burst's end on disk",
    )


async def test_backpressure_counts_bytes_too(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.storage.store._MAX_PENDING_BYTES", 10_000)
    store = await Store.open(db)
    try:
        await store.create_job(job("a"))
        stalled = stall(store)
        big = [Event(Action.OUTPUT, "x" * 4_000, stream="stdout")]
        await store.append("a", big * 2)  # 8 000 bytes: under the limit, returns at once
        blocked = asyncio.create_task(store.append("a", big))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # 3 events, but 12 000 bytes
        stalled.set()
        await asyncio.wait_for(blocked, 5)
        assert [e.seq for e in await store.events("a")] == [1, 2, 3]
    finally:
        await store.close()


async def test_a_version_1_database_gains_the_request_column(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, operation TEXT NOT NULL, status TEXT NOT NULL,"
        " variant TEXT, pkgname TEXT, pkgver TEXT, created_at REAL NOT NULL, started_at REAL,"
        " finished_at REAL, timeout_s REAL, exit_code INTEGER, reason TEXT, cancel_reason TEXT,"
        " artifacts TEXT NOT NULL DEFAULT '[]', last_seq INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,"
        " action TEXT NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, stream TEXT,"
        " PRIMARY KEY (job_id, seq)) WITHOUT ROWID;"
        "INSERT INTO jobs (id, operation, status, created_at) VALUES ('old', 'build', 'queued', 1);"
        "PRAGMA user_version = 1;"
    )
    conn.close()
    store = await Store.open(db)
    old = await store.get_job("old")
    assert old is not None and old.request == {}
    await store.create_job(job("new", request={"url": "https://x/m.gguf", "sha256": None}))
    new = await store.get_job("new")
    assert new is not None and new.request == {"url": "https://x/m.gguf", "sha256": None}
    # ...and, by migration 4, the cache column: none before a build, its report after.
    assert old.cache is None
    report = {"key": "demo:cpu", "used": True, "sccache": {"hits": 3, "misses": 1}}
    await store.update_job("old", cache=report)
    again = await store.get_job("old")
    assert again is not None and again.cache == report
    await store.close()


async def test_a_full_disk_fails_writes_and_the_store_recovers_by_itself(store: Store) -> None:
    # SQLite's page cap gives the same SQLITE_FULL as a full disk, without filling one.
    await store.create_job(job("j"))
    await store.append("j", [Event(Action.OUTPUT, "before", stream="stdout")])
    await store.flush()
    pages = await store._run(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await store._run(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}").close())
    big = "x" * 300_000
    await store.append("j", [Event(Action.OUTPUT, big, stream="stdout")])
    with pytest.raises(StoreError, match="full"):
        await store.flush()
    with pytest.raises(StoreError, match="full"):
        await store.update_job("j", reason="still full")
    assert [e.message for e in await store.events("j")] == ["before"]

    await store._run(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823").close())
    # Space is back: the next write goes through, and the batch that failed was kept, in order.
    await store.append("j", [Event(Action.OUTPUT, "after", stream="stdout")])
    await store.flush()
    record = await store.update_job("j", reason="written")
    assert record.reason == "written"
    events = await store.events("j")
    assert [(e.seq, e.message) for e in events] == [(1, "before"), (2, big), (3, "after")]


def previous_version_db(path: Path, *, stream_column: bool = True) -> None:
    """A database as the version before this one left it (schema 4), with a job and its
    narration; without ``stream_column``, an events table from before that field existed."""
    stream = ", stream TEXT" if stream_column else ""
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, operation TEXT NOT NULL, status TEXT NOT NULL,"
        " variant TEXT, pkgname TEXT, pkgver TEXT, created_at REAL NOT NULL, started_at REAL,"
        " finished_at REAL, timeout_s REAL, exit_code INTEGER, reason TEXT, cancel_reason TEXT,"
        " artifacts TEXT NOT NULL DEFAULT '[]', last_seq INTEGER NOT NULL DEFAULT 0,"
        " request TEXT NOT NULL DEFAULT '{}', srcinfo TEXT, cache TEXT);"
        "CREATE TABLE events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,"
        f" action TEXT NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL{stream},"
        " PRIMARY KEY (job_id, seq)) WITHOUT ROWID;"
        "INSERT INTO jobs (id, operation, status, created_at, last_seq)"
        " VALUES ('old', 'build', 'succeeded', 1, 2);"
        "INSERT INTO events (job_id, seq, ts, action, level, message)"
        " VALUES ('old', 1, 1.5, 'queued', 'info', 'Queued');"
        "INSERT INTO events (job_id, seq, ts, action, level, message)"
        " VALUES ('old', 2, 2.5, 'some_newer_action', 'error', 'from a newer version');"
        "PRAGMA user_version = 4;"
    )
    conn.close()


@pytest.mark.parametrize("stream_column", [True, False])
async def test_a_previous_versions_narration_still_reads(
    tmp_path: Path, stream_column: bool
) -> None:
    db = tmp_path / "old.db"
    previous_version_db(db, stream_column=stream_column)
    store = await Store.open(db)
    try:
        old = await store.events("old")
        assert old[0] == StoredEvent(
            Action.QUEUED, "Queued", Level.INFO, None, 1.5, job_id="old", seq=1
        )
        # An action this version does not know is kept as it was written.
        assert (old[1].action, old[1].level) == ("some_newer_action", Level.ERROR)
        more = await store.append("old", [Event(Action.OUTPUT, "x", stream="stderr", ts=3.0)])
        assert more[0].seq == 3
        assert (await store.events("old", after_seq=2)) == more
    finally:
        await store.close()
    assert on_disk(db, "SELECT stream FROM events ORDER BY seq") == [(None,), (None,), ("stderr",)]
