"""The runner's sequencing and endings, on the fake backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Action, BuildRequest, CancelReason, CancelToken, JobStatus, Settings
from orchestrator.backend.fake import FakeBackend, FakeContainer, Script
from orchestrator.build.readers import READER_LABEL
from orchestrator.build.runner import JOB_LABEL, BuildResult, Runner
from orchestrator.jobs import Sink, perform

from ..conftest import Recorder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", instance_id="unit")


def build(
    runner: Runner,
    request: BuildRequest,
    sink: Sink,
    token: CancelToken,
    *,
    timeout_s: float | None = None,
) -> Coroutine[Any, Any, BuildResult]:
    """A build as a job runs it: the runner's work, then its ending said (``jobs.perform``)."""

    async def work(sink: Sink, token: CancelToken) -> BuildResult:
        return await runner.run(request, sink, token)

    return perform(work, sink, token, noun="Build", timeout_s=timeout_s)


def builds(backend: FakeBackend) -> list[FakeContainer]:
    """The build containers (not the warm readers of PKGBUILDs)."""
    return [c for c in backend.containers.values() if READER_LABEL not in c.step.labels]


def verbs(backend: FakeBackend) -> list[str]:
    """The calls made for the build's container (not for makepkg's reading of the PKGBUILD)."""
    return [verb for verb, cid in backend.calls if READER_LABEL not in backend.steps[cid].labels]


async def test_success_sequence_and_narration(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stdout", "==> Making package: x", 0), ("stderr", "warn", 0)]))
    result = await build(
        Runner(backend, settings), BuildRequest("j1", build_dir("hello-c")), recorder, CancelToken()
    )
    assert result.status is JobStatus.SUCCEEDED
    assert verbs(backend) == ["setup", "start", "collect", "destroy"]
    assert [p.name for p in result.artifacts] == ["demo-1.0-1-x86_64.pkg.tar.gz"]
    assert (settings.artifacts_dir / "j1" / "demo-1.0-1-x86_64.pkg.tar.gz").read_bytes() == b"pkg"
    phase = next(e for e in recorder.events if e.action is Action.PHASE)
    assert (phase.stream, phase.message) == ("stdout", "==> Making package: x")
    assert recorder.lines("stderr") == ["warn"]
    assert recorder.actions()[-2:] == [Action.CONTAINER_REMOVED, Action.SUCCEEDED]
    assert builds(backend) == []


async def test_labels_and_sandbox(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend()
    await build(
        Runner(backend, settings), BuildRequest("j2", build_dir("hello-c")), recorder, CancelToken()
    )
    create = next(e for e in recorder.events if e.action is Action.CONTAINER_CREATED)
    assert settings.image_cpu in create.message
    assert backend.calls[0][0] == "setup"


async def test_files_copied_in_are_the_build_dir(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stdout", "x", 0.2)]))
    token = CancelToken()
    task = asyncio.create_task(
        build(Runner(backend, settings), BuildRequest("j3", build_dir("hello-c")), recorder, token)
    )
    await recorder.wait_for(lambda e: e.action is Action.BUILD_STARTED)
    [container] = builds(backend)
    assert sorted(container.files) == ["/build/Makefile", "/build/PKGBUILD", "/build/hello.c"]
    assert container.step.labels[JOB_LABEL] == "j3"
    await task


async def test_nonzero_exit_fails_without_copying_out(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stderr", "==> ERROR: boom", 0)], exit_code=4))
    result = await build(
        Runner(backend, settings), BuildRequest("j4", build_dir("hello-c")), recorder, CancelToken()
    )
    assert (result.status, result.exit_code) == (JobStatus.FAILED, 4)
    assert "collect" not in verbs(backend)
    assert recorder.events[-1].message == "❌ Build failed: makepkg exited with code 4"


@pytest.mark.parametrize(
    ("reason", "status", "action"),
    [
        (CancelReason.USER, JobStatus.CANCELLED, Action.CANCELLED),
        (CancelReason.TIMEOUT, JobStatus.TIMED_OUT, Action.TIMED_OUT),
        (CancelReason.SHUTDOWN, JobStatus.INTERRUPTED, Action.INTERRUPTED),
    ],
)
async def test_cancel_while_running_kills_and_tells_why(
    settings: Settings,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    reason: CancelReason,
    status: JobStatus,
    action: Action,
) -> None:
    backend = FakeBackend(Script([("stdout", "first", 0), ("stdout", "never", 30)]))
    token = CancelToken()
    task = asyncio.create_task(
        build(Runner(backend, settings), BuildRequest("j5", build_dir("hello-c")), recorder, token)
    )
    await recorder.wait_for(lambda e: e.message == "first")
    token.cancel(reason)
    result = await asyncio.wait_for(task, 5)
    assert result.status is status
    assert recorder.events[-1].action is action
    assert "never" not in recorder.lines()
    assert verbs(backend)[-2:] == ["kill", "destroy"]
    assert builds(backend) == []


async def test_first_cancel_reason_wins() -> None:
    token = CancelToken()
    assert token.cancel(CancelReason.TIMEOUT)
    assert not token.cancel(CancelReason.USER)
    assert token.reason is CancelReason.TIMEOUT


async def test_timeout_cancels_with_its_own_reason(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stdout", "never", 30)]))
    request = BuildRequest("j6", build_dir("hello-c"))
    runner = Runner(backend, settings)
    result = await build(runner, request, recorder, CancelToken(), timeout_s=0.2)
    assert result.status is JobStatus.TIMED_OUT
    assert recorder.events[-1].message == "⏱️ Build timed out after 0.2 s"


async def test_cancel_before_start_never_creates(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend()
    token = CancelToken()
    token.cancel()
    result = await build(
        Runner(backend, settings), BuildRequest("j7", build_dir("hello-c")), recorder, token
    )
    assert result.status is JobStatus.CANCELLED
    assert "setup" not in verbs(backend)
    assert "start" not in verbs(backend)


async def test_cancel_between_copy_and_start_never_starts(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend()
    token = CancelToken()

    async def sink(batch: object) -> None:
        await recorder(batch)  # type: ignore[arg-type]
        if any(e.action is Action.SOURCES_COPIED for e in recorder.events):
            token.cancel()

    result = await build(
        Runner(backend, settings), BuildRequest("j8", build_dir("hello-c")), sink, token
    )
    assert result.status is JobStatus.CANCELLED
    assert "start" not in verbs(backend)
    assert verbs(backend)[-1] == "destroy"


async def test_task_cancellation_still_removes_the_container(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(Script([("stdout", "first", 0), ("stdout", "never", 30)]))
    task = asyncio.create_task(
        build(
            Runner(backend, settings),
            BuildRequest("j9", build_dir("hello-c")),
            recorder,
            CancelToken(),
        )
    )
    await recorder.wait_for(lambda e: e.message == "first")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert builds(backend) == []
    assert verbs(backend)[-1] == "destroy"


async def test_missing_image_is_a_failed_build_with_the_reason(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend(images=())
    result = await build(
        Runner(backend, settings),
        BuildRequest("j10", build_dir("hello-c")),
        recorder,
        CancelToken(),
    )
    assert result.status is JobStatus.FAILED
    assert "is not on this Docker host" in result.reason


async def test_gpu_requested_for_cuda_when_the_runtime_exists(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    backend = FakeBackend()
    backend.gpu = True
    await build(
        Runner(backend, settings),
        BuildRequest("j11", build_dir("hello-c"), variant="cuda"),
        recorder,
        CancelToken(),
    )
    assert Action.WARNING not in recorder.actions()
    create = next(e for e in recorder.events if e.action is Action.CONTAINER_CREATED)
    assert settings.image_cuda in create.message


async def test_an_oom_kill_is_named_whatever_the_exit_code(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    # makepkg exits 0 only if the killed step's failure was swallowed; the kill still counts.
    backend = FakeBackend(Script([("stdout", "linking", 0)], exit_code=0, oom_killed=True))
    result = await build(
        Runner(backend, settings),
        BuildRequest("oom", build_dir("hello-c")),
        recorder,
        CancelToken(),
    )
    limit = settings.build_memory_bytes // 1024**2
    assert result.status is JobStatus.FAILED
    assert result.reason == f"out of memory (limit {limit} MiB): makepkg exited with code 0"
    assert "collect" not in verbs(backend)


async def test_the_disk_watchdog_stops_a_build_over_its_limit(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    settings = settings.model_copy(update={"build_disk_bytes": 1000, "build_disk_poll_s": 0.01})
    backend = FakeBackend(Script([("stdout", "tick", 0.05)] * 200, disk_bytes=5000))
    result = await build(
        Runner(backend, settings),
        BuildRequest("disk", build_dir("hello-c")),
        recorder,
        CancelToken(),
    )
    assert result.status is JobStatus.FAILED
    assert result.reason.startswith("the build wrote more than 0 MiB to its container's disk")
    assert verbs(backend)[-2:] == ["kill", "destroy"]


async def test_the_disk_watchdog_measures_where_the_build_can_write(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    settings = settings.model_copy(update={"build_disk_bytes": 1000, "build_disk_poll_s": 0.01})
    backend = FakeBackend(Script([("stdout", "tick", 0.05)] * 200, disk_bytes=5000))
    backend.writable = ("/build", "/tmp")
    result = await build(
        Runner(backend, settings),
        BuildRequest("disk", build_dir("hello-c")),
        recorder,
        CancelToken(),
    )
    assert result.status is JobStatus.FAILED
    assert "most of it in /build;" in result.reason, result.reason
    assert verbs(backend)[-2:] == ["kill", "destroy"]


async def test_what_du_cannot_read_is_left_to_the_engines_measure(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    # makepkg's package folder is unlistable: du says so, and the writable layer is measured.
    settings = settings.model_copy(update={"build_disk_bytes": 1000, "build_disk_poll_s": 0.01})
    backend = FakeBackend(Script([("stdout", "tick", 0.05)] * 200, disk_bytes=5000))
    backend.writable, backend.usage_complete = ("/tmp",), False
    result = await build(
        Runner(backend, settings),
        BuildRequest("disk", build_dir("hello-c")),
        recorder,
        CancelToken(),
    )
    assert result.status is JobStatus.FAILED
    assert "most of it in its writable layer;" in result.reason, result.reason
