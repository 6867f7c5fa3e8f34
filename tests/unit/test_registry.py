"""The registry's queue, cancel and restart rules, on the fake backend and a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import pytest

from orchestrator import JobStatus, Settings
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.engine import Engine
from orchestrator.errors import JobStateConflict
from orchestrator.jobs.registry import Registry
from orchestrator.kinds import BuildKind
from orchestrator.metrics import Metrics
from orchestrator.narration.bus import Bus
from orchestrator.storage.store import JobRecord, Store

from .. import waiting
from .builds import job_until, submit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", instance_id="unit", max_concurrent_builds=1)


class GatedBackend(FakeBackend):
    """Holds ``collect`` (the container has exited, the build is past its point of no return)
    until the test opens the gate."""

    def __init__(self, script: Script | None = None) -> None:
        super().__init__(script)
        self.copying = asyncio.Event()
        self.gate = asyncio.Event()

    async def collect(self, handle: str, path: str, max_bytes: int | None = None) -> IO[bytes]:
        self.copying.set()
        await self.gate.wait()
        return await super().collect(handle, path, max_bytes)


@asynccontextmanager
async def open_registry(settings: Settings, backend: FakeBackend) -> AsyncIterator[Registry]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.data_dir / "orchestrator.db")
    engine = await Engine.open(settings, backend)
    registry = Registry(settings, store, Bus(store), Metrics())
    registry.register(BuildKind(settings, engine, registry.uploads))
    await registry.start()
    try:
        yield registry
    finally:
        await registry.shutdown()
        await engine.close()
        await store.close()


async def test_cancel_after_the_container_exited_is_a_conflict_and_leaves_no_reason(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = GatedBackend(Script([("stdout", "built", 0)]))
    async with open_registry(settings, backend) as registry:
        job_id = await submit(registry, settings, build_dir)
        await asyncio.wait_for(backend.copying.wait(), 10)
        cancel = asyncio.ensure_future(registry.cancel(job_id))
        token = registry._handles[job_id].token
        # The cancel is in before the build finishes.
        await waiting.until(lambda: token.cancelled, what="the cancel")
        backend.gate.set()
        with pytest.raises(JobStateConflict):
            await asyncio.wait_for(cancel, 10)
        record = await registry.get(job_id)
        assert (record.status, record.cancel_reason) == (JobStatus.SUCCEEDED, None)


async def test_cancel_while_running_answers_with_the_cancelled_record(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stdout", "tick", 0.05)] * 200))
    async with open_registry(settings, backend) as registry:
        job_id = await submit(registry, settings, build_dir)
        await job_until(registry, job_id, lambda r: r.status is JobStatus.RUNNING)
        record = await registry.cancel(job_id)
        assert (record.status, record.cancel_reason) == (JobStatus.CANCELLED, "user")
        with pytest.raises(JobStateConflict):
            await registry.cancel(job_id)


async def test_a_crash_leaves_the_queue_that_the_next_start_runs(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    # What a killed process leaves: queued jobs in the store, their sources, a stray upload.
    settings.work_dir.mkdir(parents=True)
    store = await Store.open(settings.data_dir / "orchestrator.db")
    for job_id, operation in (("a", "build"), ("gone", "build"), ("odd", "mystery")):
        record = JobRecord(id=job_id, operation=operation, status=JobStatus.QUEUED)
        await store.create_job(record)
    await store.close()
    build_dir("hello-c").rename(settings.work_dir / "a")
    (settings.work_dir / "half-uploaded").mkdir()

    async with open_registry(settings, FakeBackend()) as registry:
        assert not (settings.work_dir / "half-uploaded").exists()
        record = await job_until(registry, "a", lambda r: r.status.terminal)
        assert record.status is JobStatus.SUCCEEDED
        gone, odd = await registry.get("gone"), await registry.get("odd")
        assert gone.status is odd.status is JobStatus.INTERRUPTED
        assert (
            gone.reason
            == "it could not be queued again after a restart: its uploaded sources are gone"
        )
        assert odd.reason == "jobs of kind 'mystery' cannot be queued again"
        # Removed right after the final status is written.
        await waiting.until(lambda: not (settings.work_dir / "a").exists(), what="sources gone")


class WindowBackend(FakeBackend):
    """Holds one step of a build's end (``window``) until the test opens the gate, and counts
    the containers a cache measure would have on the daemon meanwhile."""

    def __init__(self, window: str) -> None:
        super().__init__(Script([("stdout", "built", 0)]))
        self.window = window
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.measuring = 0

    async def _hold(self, step: str) -> None:
        if step == self.window and not self.entered.is_set():
            self.entered.set()
            await self.gate.wait()

    async def collect(self, handle: str, path: str, max_bytes: int | None = None) -> IO[bytes]:
        await self._hold("collect")
        return await super().collect(handle, path, max_bytes)

    async def destroy(self, handle: str) -> None:
        await self._hold("destroy")
        await super().destroy(handle)

    async def volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        self.measuring += 1  # the throwaway container that measures it exists from here
        try:
            await self._hold("volume_usage")
            return await super().volume_usage(name, image, labels)
        finally:
            self.measuring -= 1


@pytest.mark.parametrize("window", ["collect", "destroy", "volume_usage"])
async def test_a_cancel_in_any_window_of_a_builds_end_answers_once_nothing_is_left(
    settings: Settings, build_dir: Callable[..., Path], window: str
) -> None:
    """Whatever the cancel's answer (too late, or cancelled), when it comes no container of
    the job is left: neither the build's nor the one measuring its cache."""
    backend = WindowBackend(window)
    async with open_registry(settings, backend) as registry:

        async def cancel_and_look() -> tuple[dict[str, object], int]:
            with contextlib.suppress(JobStateConflict):  # too late: the build had exited
                await registry.cancel(job_id)
            return dict(backend.containers), backend.measuring  # as the answer goes out

        job_id = await submit(registry, settings, build_dir)
        await asyncio.wait_for(backend.entered.wait(), 10)
        token = registry._handles[job_id].token
        cancel = asyncio.ensure_future(cancel_and_look())
        # The cancel is in (or answered) while the window is held.
        await waiting.until(lambda: token.cancelled or cancel.done(), what="the cancel")
        backend.gate.set()
        assert await asyncio.wait_for(cancel, 10) == ({}, 0)
