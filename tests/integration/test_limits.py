"""What a build may use of the host: memory and disk limits end it with a reason that says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from orchestrator import BuildRequest, CancelToken, Engine, JobStatus, Settings

from ..conftest import Recorder
from .conftest import job_id

pytestmark = pytest.mark.docker

MiB = 1024**2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"build_memory_bytes": 192 * MiB})


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
