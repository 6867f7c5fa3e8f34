"""What a build may use of the host: memory and disk limits end it with a reason that says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from orchestrator import BuildRequest, CancelToken, Engine, JobStatus, Settings

from ..conftest import Recorder
from .conftest import BACKENDS, job_id

pytestmark = pytest.mark.docker

MiB = 1024**2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"build_memory_bytes": 192 * MiB})


@BACKENDS  # on swarm the task's wrapper reports its cgroup's OOM kill
async def test_out_of_memory_is_named_with_the_limit(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    result = await engine.build(
        BuildRequest(job_id(), build_dir("memory-hog")), recorder, CancelToken()
    )
    assert result.status is JobStatus.FAILED
    assert result.reason.startswith("out of memory (limit 192 MiB)"), result.reason
    assert "allocating" in recorder.lines()
    assert any("out of memory (limit 192 MiB)" in e.message for e in recorder.events[-1:])


@pytest.mark.parametrize("into", [".", "$SRCDEST"], ids=["build-folder", "cache"])
async def test_a_build_writing_past_its_disk_limit_is_stopped_with_a_reason(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    settings: Settings,
    into: str,
) -> None:
    # Its cache volume counts too: no engine has a quota for a volume.
    limited = settings.model_copy(update={"build_disk_bytes": 64 * MiB, "build_disk_poll_s": 3.0})
    async with await Engine.open(limited) as engine:
        src = build_dir("disk-filler", mib=200, into=into)
        result = await engine.build(BuildRequest(job_id(), src), recorder, CancelToken())
    assert result.status is JobStatus.FAILED
    assert result.reason.startswith("the build wrote more than 64 MiB"), result.reason
    assert "ORCHESTRATOR_BUILD_DISK_BYTES" in result.reason
    # Caught within a look of passing it: most likely before the 200 MiB are all written.
    where = "/cache" if into == "$SRCDEST" else "/build"
    assert f"most of it in {where};" in result.reason, result.reason


async def test_packages_over_the_artifact_cap_fail_the_build(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path], settings: Settings
) -> None:
    capped = settings.model_copy(update={"max_artifact_bytes": 2 * MiB})
    async with await Engine.open(capped) as engine:
        job = job_id()
        result = await engine.build(
            BuildRequest(job, build_dir("big-package", mib=40)), recorder, CancelToken()
        )
    assert result.status is JobStatus.FAILED
    assert "larger than 2097152 bytes" in result.reason, result.reason
    # The copy is stopped for real: the container is removed at once, not after a timeout.
    assert not any("Could not remove the container" in e.message for e in recorder.events)
    assert not (capped.artifacts_dir / job).exists() or not any(
        (capped.artifacts_dir / job).iterdir()
    )
