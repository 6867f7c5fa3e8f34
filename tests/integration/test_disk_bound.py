"""The per-build disk bound on an engine without a quota (here fuse-overlayfs): however the
build writes, it is stopped within a few seconds of passing the bound, and told why."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import BuildRequest, CancelToken, Engine, JobStatus, Settings
from orchestrator.narration.events import Action, Event

from ..conftest import Recorder
from .conftest import job_id

pytestmark = pytest.mark.docker

MiB = 1024**2
BOUND = 512 * MiB


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Its default pace: the bound must hold without tuning.
    return settings.model_copy(update={"build_disk_bytes": BOUND, "caches": False})


def wrote(mib: int) -> Callable[[Event], bool]:
    return lambda e: e.action is Action.OUTPUT and f"wrote {mib} MiB" in e.message.split("\n")


async def build(engine: Engine, src: Path, recorder: Recorder) -> tuple[JobStatus, str, float]:
    result = await engine.build(BuildRequest(job_id(), src), recorder, CancelToken())
    return result.status, result.reason, time.monotonic()


async def test_a_build_writing_2_gib_over_30_s_past_the_bound_fails_within_10_s(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    src = build_dir("disk-writer", steps=32, step=64, pause=1, into="/tmp")
    status, reason, ended = await build(engine, src, recorder)
    assert status is JobStatus.FAILED, reason
    assert "512 MiB" in reason and "disk" in reason, reason
    # At 512 MiB written it has its sources and home beside: over the bound from this line on.
    passed = recorder.arrival_of(wrote(512))
    assert ended - passed < 10, f"stopped {ended - passed:.1f} s after passing the bound"
    assert not any(wrote(1024)(e) for e in recorder.events)


@pytest.mark.parametrize("into", ["/tmp", "."], ids=["tmp", "build-dir"])
async def test_a_fast_dd_of_1_gib_is_stopped(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path], into: str
) -> None:
    src = build_dir("disk-writer", steps=1, step=1024, pause=0, into=into)
    status, reason, _ended = await build(engine, src, recorder)
    assert status is JobStatus.FAILED, reason
    assert "512 MiB" in reason and "disk" in reason, reason
