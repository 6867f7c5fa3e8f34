"""A job's estimate comes from its package's history, as warm as its cache will be; its progress
is its elapsed time over that, and never shows done."""

from __future__ import annotations

from pathlib import Path

from orchestrator.jobs.estimate import expected_s, expected_warm, progress
from orchestrator.jobs.status import JobStatus
from orchestrator.storage.store import JobRecord, Store


def test_the_newest_run_as_warm_as_this_one_is_the_estimate() -> None:
    history = [(16.0, True), (300.0, False), (14.0, True), (500.0, None)]
    assert expected_s(history, True) == 16.0
    assert expected_s(history, False) == 300.0
    assert expected_s(history, None) == 500.0
    assert expected_s([(16.0, True)], False) == 16.0  # a guess beats none
    assert expected_s([], True) is None


def test_a_cache_kept_by_an_earlier_success_is_expected_warm() -> None:
    assert expected_warm([(300.0, False)], cache_asked=True) is True
    assert expected_warm([(300.0, None)], cache_asked=True) is False
    assert expected_warm([], cache_asked=True) is False
    assert expected_warm([(300.0, True)], cache_asked=False) is None


def test_progress_is_elapsed_over_the_estimate_and_stops_short_of_done() -> None:
    running = JobRecord("j", "build", JobStatus.RUNNING, started_at=100.0, estimate_s=50.0)
    assert progress(running, now=125.0) == 0.5
    assert progress(running, now=1000.0) == 0.99
    assert progress(JobRecord("j", "build", JobStatus.RUNNING, started_at=1.0), 5.0) is None
    done = JobRecord("j", "build", JobStatus.SUCCEEDED, started_at=1.0, estimate_s=5.0)
    assert progress(done, 3.0) is None


async def test_the_store_answers_a_packages_successful_runs_newest_first(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        runs = [
            ("a", "hello", "cpu", JobStatus.SUCCEEDED, 10.0, 40.0, {"used": True, "warm": False}),
            ("b", "hello", "cpu", JobStatus.FAILED, 50.0, 52.0, None),
            ("c", "hello", "cuda", JobStatus.SUCCEEDED, 60.0, 90.0, None),
            ("d", "hello", "cpu", JobStatus.SUCCEEDED, 100.0, 112.0, {"used": True, "warm": True}),
            ("e", "other", "cpu", JobStatus.SUCCEEDED, 100.0, 101.0, None),
            ("f", "hello", "cpu", JobStatus.SUCCEEDED, 120.0, 150.0, {"used": False}),
        ]
        for job_id, name, variant, status, started, finished, cache in runs:
            await store.create_job(JobRecord(job_id, "build", JobStatus.QUEUED, variant, name))
            await store.update_job(
                job_id, status=status, started_at=started, finished_at=finished, cache=cache
            )
        assert await store.past_durations("build", "hello", "cpu") == [
            (30.0, None),
            (12.0, True),
            (30.0, False),
        ]
        assert await store.past_durations("build", "hello", "cpu", most=1) == [(30.0, None)]
        assert await store.past_durations("worker_install", "hello", "cpu") == []
    finally:
        await store.close()


async def test_a_builds_life_is_kept_with_its_record(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        await store.create_job(JobRecord("j", "build", JobStatus.QUEUED, "cpu", "hello"))
        await store.update_job(
            "j",
            peak_memory_bytes=300 << 20,
            cpu_seconds=10.5,
            peak_pids=7,
            disk_bytes=4096,
            phases_s={"build": 60.0, "package": 2.5},
            estimate_s=70.0,
        )
    finally:
        await store.close()
    store = await Store.open(tmp_path / "db")
    try:
        record = await store.get_job("j")
        assert record is not None
        assert (record.peak_memory_bytes, record.cpu_seconds, record.peak_pids) == (
            300 << 20,
            10.5,
            7,
        )
        assert record.phases_s == {"build": 60.0, "package": 2.5}
        assert (record.disk_bytes, record.estimate_s) == (4096, 70.0)
    finally:
        await store.close()
