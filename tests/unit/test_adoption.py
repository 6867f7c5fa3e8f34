"""A stop leaves builds running; the next start adopts them (fake backend, real SQLite store).

Each "service" here is a store, an engine and a registry on one data directory, as a restart
makes them; the fake backend plays the engine that outlives them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO

import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import JobStatus, Settings
from orchestrator.api import create_app
from orchestrator.backend import OutputChunk, Step
from orchestrator.backend._adopt import Skipper
from orchestrator.backend.fake import FakeBackend, FakeContainer, Script
from orchestrator.build.runner import JOB_LABEL
from orchestrator.engine import Engine
from orchestrator.errors import AlreadyRunning
from orchestrator.jobs.registry import Registry
from orchestrator.kinds import BuildKind
from orchestrator.metrics import Metrics
from orchestrator.narration.bus import Bus
from orchestrator.storage.lock import hold_data_dir
from orchestrator.storage.store import Store

from .. import waiting
from .builds import job_until, submit
from .test_api_operations import package_with

LINES = 60
NUMBERED = Script([("stdout", f"line {i}", 0.01) for i in range(1, LINES + 1)])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", instance_id="unit", max_concurrent_builds=1)


@asynccontextmanager
async def service(settings: Settings, backend: FakeBackend) -> AsyncIterator[Registry]:
    """One process's worth of service; its stop leaves the backend (the engine) as it is."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.data_dir / "orchestrator.db")
    engine = Engine(settings, backend)
    registry = Registry(settings, store, Bus(store), Metrics())
    registry.register(BuildKind(settings, engine, registry.uploads))
    await registry.start()
    try:
        yield registry
    finally:
        await registry.shutdown()
        await store.close()


async def printed(registry: Registry, job_id: str) -> list[str]:
    events = await registry._store.events(job_id)
    return [line for e in events if e.action == "output" for line in e.message.split("\n")]


async def narrated(registry: Registry, job_id: str, lines: int = 5) -> None:
    """Until the job's narration holds ``lines`` lines of its build's output."""
    await waiting.until(
        lambda: printed(registry, job_id),
        lambda seen: len(seen) >= lines,
        what=f"{lines} lines of job {job_id}'s output",
    )


async def messages(registry: Registry, job_id: str) -> list[str]:
    return [e.message for e in await registry._store.events(job_id)]


async def stop_with_a_build_running(
    settings: Settings, backend: FakeBackend, build_dir: Callable[..., Path]
) -> tuple[str, FakeContainer, int]:
    """A build started, a few lines narrated, then the service stopped: the job, its container
    (still running), and how many lines the stopped service stored."""
    async with service(settings, backend) as registry:
        job_id = await submit(registry, settings, build_dir)
        await narrated(registry, job_id)
    store = await Store.open(settings.data_dir / "orchestrator.db")
    try:
        record = await store.get_job(job_id)
        assert record is not None and record.status is JobStatus.RUNNING
        stored = sum((await store.output_lines(job_id)).values())
    finally:
        await store.close()
    [container] = backend.containers.values()
    assert container.state == "running"
    return job_id, container, stored


async def test_a_stop_leaves_the_build_running_and_the_next_start_adopts_it(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(NUMBERED)
    job_id, container, stored = await stop_with_a_build_running(settings, backend, build_dir)
    # It printed while no one watched.
    await waiting.until(lambda: len(container.log) >= stored + 5, what="more output")
    async with service(settings, backend) as registry:
        assert registry.holds(job_id)
        record = await job_until(registry, job_id, {JobStatus.SUCCEEDED, JobStatus.FAILED})
        assert record.status is JobStatus.SUCCEEDED, record.reason
        assert record.artifacts
        # Every line once, in order: before, during and after the gap.
        assert await printed(registry, job_id) == [f"line {i}" for i in range(1, LINES + 1)]
        said = await messages(registry, job_id)
        assert any("picked up again when the service is back" in m for m in said)
        assert any(m.startswith("🔁 Service restarted: build adopted") for m in said)
    assert backend.containers == {}  # removed once collected


async def test_a_build_that_ended_meanwhile_is_finished_as_if_watched(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(NUMBERED)
    job_id, container, _ = await stop_with_a_build_running(settings, backend, build_dir)
    await asyncio.wait_for(container.exited.wait(), 10)
    async with service(settings, backend) as registry:
        record = await job_until(registry, job_id, {JobStatus.SUCCEEDED, JobStatus.FAILED})
        assert (record.status, record.exit_code) == (JobStatus.SUCCEEDED, 0)
        assert record.artifacts == ("demo-1.0-1-x86_64.pkg.tar.gz",)
        assert await printed(registry, job_id) == [f"line {i}" for i in range(1, LINES + 1)]
        said = await messages(registry, job_id)
        assert any("it had ended meanwhile" in m for m in said)
    assert backend.containers == {}


async def test_a_build_that_failed_meanwhile_fails_with_its_exit_code(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script(NUMBERED.steps, exit_code=4))
    job_id, container, _ = await stop_with_a_build_running(settings, backend, build_dir)
    await asyncio.wait_for(container.exited.wait(), 10)
    async with service(settings, backend) as registry:
        record = await job_until(registry, job_id, {JobStatus.SUCCEEDED, JobStatus.FAILED})
        assert (record.status, record.exit_code) == (JobStatus.FAILED, 4)


async def test_a_build_whose_container_is_gone_ends_interrupted_saying_so(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(NUMBERED)
    job_id, container, _ = await stop_with_a_build_running(settings, backend, build_dir)
    await backend.destroy(container.id)  # removed by hand while no service ran
    async with service(settings, backend) as registry:
        record = await registry.get(job_id)
        assert record.status is JobStatus.INTERRUPTED
        assert record.reason is not None and "container is gone" in record.reason
        assert not registry.holds(job_id)


async def test_a_container_of_another_instance_is_not_adopted(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(NUMBERED)
    job_id, container, _ = await stop_with_a_build_running(settings, backend, build_dir)
    other = settings.model_copy(update={"instance_id": "other"})
    async with service(other, backend) as registry:
        record = await registry.get(job_id)
        assert record.status is JobStatus.INTERRUPTED
    assert container.id in backend.containers  # not ours to touch
    await backend.destroy(container.id)


async def test_a_timeout_that_fell_while_the_service_was_down_ends_the_build_timed_out(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stdout", "tick", 0.05)] * 400))
    job_id, _, _ = await stop_with_a_build_running(settings, backend, build_dir)
    store = await Store.open(settings.data_dir / "orchestrator.db")
    await store.update_job(job_id, started_at=time.time() - 120)  # its 60 s ran out meanwhile
    await store.close()
    async with service(settings, backend) as registry:
        record = await job_until(registry, job_id, {JobStatus.TIMED_OUT, JobStatus.SUCCEEDED})
        assert (record.status, record.cancel_reason) == (JobStatus.TIMED_OUT, "timeout")
    assert backend.containers == {}


async def test_cancel_right_after_adoption_stops_the_build_and_leaves_nothing(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stdout", "tick", 0.05)] * 400))
    job_id, _, _ = await stop_with_a_build_running(settings, backend, build_dir)
    async with service(settings, backend) as registry:
        record = await registry.cancel(job_id)
        assert (record.status, record.cancel_reason) == (JobStatus.CANCELLED, "user")
    assert backend.containers == {}


async def test_the_busy_guard_and_metrics_count_an_adopted_build(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stdout", "tick", 0.05)] * 400))
    job_id, _, _ = await stop_with_a_build_running(settings, backend, build_dir)
    async with service(settings, backend) as registry:
        await waiting.until(lambda: registry._metrics.running._value.get() == 1, what="1 running")
        assert registry.is_active(job_id)
        await registry.cancel(job_id)


async def test_on_stop_cancel_interrupts_as_before(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    settings = settings.model_copy(update={"on_stop": "cancel"})
    backend = FakeBackend(NUMBERED)
    async with service(settings, backend) as registry:
        job_id = await submit(registry, settings, build_dir)
        await narrated(registry, job_id)
    async with service(settings, backend) as registry:
        record = await registry.get(job_id)
        assert (record.status, record.cancel_reason) == (JobStatus.INTERRUPTED, "shutdown")
    assert backend.containers == {}


async def test_an_engine_that_cannot_adopt_stops_its_builds_whatever_on_stop_says(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(NUMBERED)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.data_dir / "orchestrator.db")
    registry = Registry(settings, store, Bus(store), Metrics(), adopts=False)
    registry.register(BuildKind(settings, Engine(settings, backend), registry.uploads))
    await registry.start()
    job_id = await submit(registry, settings, build_dir)
    await narrated(registry, job_id)
    await registry.shutdown()
    assert (await registry.get(job_id)).status is JobStatus.INTERRUPTED
    await store.close()
    assert backend.containers == {}


def test_a_second_service_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with (
        hold_data_dir(tmp_path, "one"),
        pytest.raises(AlreadyRunning, match="already runs on the data directory"),
        hold_data_dir(tmp_path, "one"),
    ):
        pass
    with hold_data_dir(tmp_path, "one"):  # free again once the first has gone
        pass


def test_the_skipper_drops_exactly_the_lines_already_read_per_stream() -> None:
    chunks = [
        OutputChunk("stdout", "a1\na2", 0),
        OutputChunk("stderr", "b1", 0),
        OutputChunk("stdout", "a3\na4\na5", 0),
        OutputChunk("stderr", "b2\nb3", 0),
    ]
    skipper = Skipper({"stdout": 3, "stderr": 1})
    kept = skipper.take(chunks)
    assert [(c.stream, c.text) for c in kept] == [("stdout", "a4\na5"), ("stderr", "b2\nb3")]
    assert not skipper.short
    short = Skipper({"stdout": 9})
    assert short.take(chunks) == [chunks[1], chunks[3]]
    assert short.short


def test_the_skipper_places_a_rotated_log_after_the_last_line_had() -> None:
    """The log's first line is not the one had first: its head was rotated away, so what
    follows the last line had is handed on, not what follows as many lines as were had."""
    rotated = [OutputChunk("stdout", "a3\na4", 0), OutputChunk("stdout", "a5\na6\na7", 0)]
    skipper = Skipper({"stdout": 4}, {"stdout": ("a1", "a4")})
    assert [c.text for c in skipper.take(rotated)] == ["a5\na6\na7"]
    assert skipper.finish() == [] and not skipper.lost and not skipper.short
    same_start = Skipper({"stdout": 2}, {"stdout": ("a3", "a4")})
    assert [c.text for c in same_start.take(rotated)] == ["a5\na6\na7"]


def test_a_rotated_log_past_the_last_line_had_is_handed_on_whole_and_said_lost() -> None:
    rotated = [OutputChunk("stdout", "a8\na9", 0), OutputChunk("stderr", "b7", 0)]
    skipper = Skipper({"stdout": 4, "stderr": 1}, {"stdout": ("a1", "a4"), "stderr": ("b7", "b7")})
    assert [c.text for c in skipper.take(rotated)] == []  # held until the log is read
    assert [c.text for c in skipper.finish()] == ["a8\na9"]
    assert skipper.lost == {"stdout"} and not skipper.short
    bounded = Skipper({"stdout": 4}, {"stdout": ("a1", "a4")}, search_max_chars=4)
    assert [c.text for c in bounded.take(rotated)] == ["a8\na9", "b7"]  # over the bound
    assert bounded.lost == {"stdout"} and bounded.finish() == []


class GatedSetup(FakeBackend):
    """Holds ``setup`` (the build is not started yet) until the test opens the gate."""

    def __init__(self, script: Script) -> None:
        super().__init__(script)
        self.setting_up = asyncio.Event()
        self.gate = asyncio.Event()

    async def setup(self, step: Step) -> str:
        self.setting_up.set()
        await self.gate.wait()
        return await super().setup(step)


async def test_a_stop_before_the_build_started_puts_the_job_back_in_the_queue(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = GatedSetup(NUMBERED)
    async with service(settings, backend) as registry:
        job_id = await submit(registry, settings, build_dir)
        await asyncio.wait_for(backend.setting_up.wait(), 10)
        stopping = asyncio.ensure_future(registry.shutdown())
        await waiting.until(lambda: registry._handles[job_id].token.detaching, what="the detach")
        backend.gate.set()
        await asyncio.wait_for(stopping, 10)
        record = await registry.get(job_id)
        assert (record.status, record.started_at) == (JobStatus.QUEUED, None)
    assert backend.containers == {}  # what was set up is removed: it never started
    assert (settings.work_dir / job_id / "PKGBUILD").is_file()  # its sources kept
    async with service(settings, backend) as registry:
        record = await job_until(registry, job_id, {JobStatus.SUCCEEDED, JobStatus.FAILED})
        assert record.status is JobStatus.SUCCEEDED, record.reason


async def test_a_drain_waits_for_the_running_build_to_end(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    settings = settings.model_copy(update={"on_stop": "drain"})
    backend = FakeBackend(NUMBERED)
    async with service(settings, backend) as registry:
        job_id = await submit(registry, settings, build_dir)
        await narrated(registry, job_id)
        await registry.shutdown()
        record = await registry.get(job_id)
        assert record.status is JobStatus.SUCCEEDED
        assert await printed(registry, job_id) == [f"line {i}" for i in range(1, LINES + 1)]
    assert backend.containers == {}


async def test_nothing_is_swept_before_recovery_and_what_was_left_stays_held(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(NUMBERED)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.data_dir / "orchestrator.db")
    registry = Registry(settings, store, Bus(store), Metrics())
    registry.register(BuildKind(settings, Engine(settings, backend), registry.uploads))
    assert registry.holds("any job")  # a janitor's sweep now must not take a build to adopt
    await registry.start()
    assert not registry.holds("any job")
    job_id = await submit(registry, settings, build_dir)
    await narrated(registry, job_id)
    await registry.shutdown()
    assert registry.holds(job_id)  # left running: the janitor's last sweep leaves it be
    await store.close()
    for container in list(backend.containers):
        await backend.destroy(container)


async def test_a_build_whose_log_the_engine_cut_is_adopted_without_its_output(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(NUMBERED)
    job_id, container, stored = await stop_with_a_build_running(settings, backend, build_dir)
    # Rotated away, so that the log holds fewer lines than the store: what an engine can tell
    # (a log cut but still longer than what the store holds is not, see docs/backends.md).
    await waiting.until(lambda: container.exited.is_set(), what="the build's end")
    del container.log[: LINES - stored + 1]
    async with service(settings, backend) as registry:
        record = await job_until(registry, job_id, {JobStatus.SUCCEEDED, JobStatus.FAILED})
        assert record.status is JobStatus.SUCCEEDED, record.reason
        said = await messages(registry, job_id)
        assert any("its output lost" in m for m in said)
        lines = await printed(registry, job_id)
        assert lines == [f"line {i}" for i in range(1, len(lines) + 1)]  # no line misplaced
    assert backend.containers == {}


class Lasting(FakeBackend):
    """An engine that outlives the service: closing the service's client leaves its steps."""

    async def close(self) -> None:
        return None


async def test_a_worker_install_whose_build_outlives_the_app_is_adopted_and_installed(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"on_stop": "leave"})
    package = package_with("usr/bin/hello-worker-c", b"#!/bin/sh\necho hello\n")
    script = Script(NUMBERED.steps, packages={"hello-c-1.0.0-1-x86_64.pkg.tar.gz": package})
    backend = Lasting(script)
    body = {"operation": "worker_install", "worker_id": "hello-c"}
    async with TestClient(TestServer(create_app(settings, backend=backend))) as client:
        response = await client.post("/v1/jobs", json=body)
        job_id = str((await response.json())["job_id"])
        await waiting.until(
            lambda: any(len(c.log) >= 5 for c in backend.containers.values()), what="output"
        )
    builds = [c for c in backend.containers.values() if c.step.labels.get(JOB_LABEL) == job_id]
    assert [c.state for c in builds] == ["running"]  # the app is gone, its build is not

    async with TestClient(TestServer(create_app(settings, backend=backend))) as client:

        async def read_job() -> dict[str, object]:
            return dict(await (await client.get(f"/v1/jobs/{job_id}")).json())

        job = await waiting.until(read_job, lambda j: j["finished_at"] is not None, what="its end")
        assert job["status"] == "succeeded", job
        worker = await (await client.get("/v1/workers/hello-c")).json()
        assert worker["job_id"] == job_id
    assert not any(c.step.labels.get(JOB_LABEL) == job_id for c in backend.containers.values())
    for handle in list(backend.containers):
        await backend.destroy(handle)


class GatedCollect(FakeBackend):
    """Holds ``collect`` (the build has exited, its packages are being copied) until opened."""

    def __init__(self, script: Script) -> None:
        super().__init__(script)
        self.copying = asyncio.Event()
        self.gate = asyncio.Event()

    async def collect(self, handle: str, path: str, max_bytes: int | None = None) -> IO[bytes]:
        self.copying.set()
        await self.gate.wait()
        return await super().collect(handle, path, max_bytes)


async def test_a_build_still_busy_past_the_stops_grace_is_left_for_the_next_start(
    settings: Settings, build_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.jobs.stopping.DETACH_GRACE_S", 0.05)
    backend = GatedCollect(NUMBERED)
    async with service(settings, backend) as registry:
        job_id = await submit(registry, settings, build_dir)
        await asyncio.wait_for(backend.copying.wait(), 10)  # exited; not collected yet
    [container] = backend.containers.values()  # the stop cut the collection short: left
    assert container.state == "exited"
    backend.gate.set()
    async with service(settings, backend) as registry:
        record = await job_until(registry, job_id, {JobStatus.SUCCEEDED, JobStatus.FAILED})
        assert record.status is JobStatus.SUCCEEDED, record.reason
        assert await printed(registry, job_id) == [f"line {i}" for i in range(1, LINES + 1)]
    assert backend.containers == {}


async def test_a_build_set_up_but_never_started_runs_again_from_its_sources(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(NUMBERED)
    job_id, container, _ = await stop_with_a_build_running(settings, backend, build_dir)
    # What a kill -9 while the inputs were copied in leaves: a step set up, not started.
    await backend.destroy(container.id)
    half = await backend.setup(replace(container.step, inputs=None))
    async with service(settings, backend) as registry:
        record = await job_until(registry, job_id, {JobStatus.SUCCEEDED, JobStatus.FAILED})
        assert record.status is JobStatus.SUCCEEDED, record.reason
        said = await messages(registry, job_id)
        assert any("its build had been set up, not started" in m for m in said)
    assert half not in backend.containers
    assert backend.containers == {}


class NoAdoption(FakeBackend):
    """An engine whose steps no later process can pick up (Swarm, today)."""

    supports_adopt = False


async def test_on_an_engine_that_cannot_adopt_a_crash_leaves_the_build_interrupted(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    backend = NoAdoption(NUMBERED)
    # What a kill -9 leaves: the job running in the store, its step running on.
    job_id, container, _ = await stop_with_a_build_running(
        settings, FakeBackend(NUMBERED), build_dir
    )
    backend.containers[container.id] = container
    async with service(settings, backend) as registry:
        record = await registry.get(job_id)
        assert record.status is JobStatus.INTERRUPTED
        assert record.reason is not None and "cannot pick a build up again" in record.reason
    await backend.destroy(container.id)
