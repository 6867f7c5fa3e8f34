"""The build engine against the real daemon, real images and real makepkg."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from orchestrator import (
    Action,
    BuildRequest,
    CancelReason,
    CancelToken,
    Engine,
    JobStatus,
    PkgbuildError,
    Settings,
    VariantRefused,
)
from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL

from .. import waiting
from ..conftest import Recorder
from .conftest import BACKENDS, job_containers, job_id

pytestmark = pytest.mark.docker


def container_events(client: docker.DockerClient, job: str, since: float) -> list[str]:
    """Every container event the daemon saw for ``job``'s label since ``since``."""
    until = time.time() + 0.5
    events = client.events(
        since=int(since) - 1,
        until=int(until) + 1,
        filters={"type": "container", "label": f"{JOB_LABEL}={job}"},
        decode=True,
    )
    return [str(e.get("status") or e.get("Action")) for e in events]


def said_every_step(recorder: Recorder) -> None:
    """The narration of a build that succeeded: each step's action, and SUCCEEDED last."""
    actions = recorder.actions()
    for expected in (
        Action.VALIDATED,
        Action.CONTAINER_CREATED,
        Action.SOURCES_COPIED,
        Action.BUILD_STARTED,
        Action.ARTIFACT_STORED,
        Action.CONTAINER_REMOVED,
    ):
        assert expected in actions
    assert actions[-1] is Action.SUCCEEDED


def marked_processes(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


@BACKENDS
async def test_c_program_builds_and_returns_its_package(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    job, t0 = job_id(), time.time()
    result = await engine.build(BuildRequest(job, build_dir("hello-c")), recorder, CancelToken())

    assert result.status is JobStatus.SUCCEEDED, recorder.lines()
    assert result.exit_code == 0
    [package] = result.artifacts
    assert package.name == "hello-c-1.0.0-1-x86_64.pkg.tar.gz"
    with tarfile.open(package) as tar:
        binary = tar.extractfile("usr/bin/hello")
        assert binary is not None
        assert binary.read(4) == b"\x7fELF"
        assert ".PKGINFO" in tar.getnames()

    said_every_step(recorder)
    assert any(line.startswith("==> Making package: hello-c") for line in recorder.lines())
    assert job_containers(docker_client, job) == []
    # The daemon saw the container start: the same check proves "never started" elsewhere.
    assert "start" in container_events(docker_client, job, t0)


async def test_wrong_checksum_fails_with_makepkgs_error(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    result = await engine.build(
        BuildRequest(job_id(), build_dir("bad-checksum")), recorder, CancelToken()
    )
    assert result.status is JobStatus.FAILED
    assert result.exit_code not in (None, 0)
    assert "hello.c ... FAILED" in "\n".join(recorder.lines())
    assert any("did not pass the validity check" in line for line in recorder.lines("stderr"))
    assert recorder.events[-1].action is Action.FAILED
    assert "makepkg exited with code" in recorder.events[-1].message
    assert result.artifacts == ()


@BACKENDS
async def test_output_arrives_while_the_build_runs(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    result = await engine.build(
        BuildRequest(job_id(), build_dir("slow-printer")), recorder, CancelToken()
    )
    assert result.status is JobStatus.SUCCEEDED
    first = recorder.arrival_of(lambda e: "tick 1" in e.message.split("\n"))
    exited = recorder.arrival_of(lambda e: e.action is Action.BUILD_EXITED)
    # The build prints for 3 s: the first line must not wait for the end.
    assert exited - first > 2.0
    ticks = [line for line in recorder.lines("stdout") if line.startswith("tick")]
    tocks = [line for line in recorder.lines("stderr") if line.startswith("tock")]
    assert ticks == [f"tick {i}" for i in range(1, 7)]
    assert tocks == [f"tock {i}" for i in range(1, 7)]


@BACKENDS
async def test_no_line_is_lost_when_the_container_exits_in_a_burst(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = 200_000
    caplog.set_level(logging.INFO, logger="orchestrator.backend._pushed")
    result = await engine.build(
        BuildRequest(job_id(), build_dir("flood", lines=count)), recorder, CancelToken()
    )
    assert result.status is JobStatus.SUCCEEDED
    numbers = [line for line in recorder.lines("stdout") if line.isdigit()]
    assert numbers == [str(i) for i in range(1, count + 1)]
    assert "flood-end" in recorder.lines("stderr")
    # On swarm the task pushed it all: the service logs had nothing to add.
    assert "completed from the service logs" not in caplog.text


@BACKENDS
@pytest.mark.parametrize("grace_s", [0.0, 1.0])
async def test_cancel_kills_the_container_and_every_process(
    settings: Settings,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    grace_s: float,
) -> None:
    marker = f"orch-test-{uuid.uuid4().hex}"
    settings = settings.model_copy(update={"kill_grace_s": grace_s})
    job, token = job_id(), CancelToken()
    async with await Engine.open(settings) as engine:
        request = BuildRequest(job, build_dir("forker", marker=marker))
        run = asyncio.create_task(engine.build(request, recorder, token))
        try:
            await recorder.wait_for(lambda e: "children started" in e.message.split("\n"))
            # The survivors-check sees the build's processes (3 children and the main loop),
            # so it would catch a leak.
            await waiting.until(
                lambda: marked_processes(marker),
                lambda found: len(found) >= 4,
                timeout_s=5,
                interval_s=0.1,
                what="the build's 4 processes",
            )
            assert job_containers(docker_client, job) != []

            started = time.monotonic()
            assert token.cancel(CancelReason.USER)
            result = await asyncio.wait_for(run, 60)
            took_s = time.monotonic() - started
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run

    assert result.status is JobStatus.CANCELLED
    assert recorder.events[-1].action is Action.CANCELLED
    assert "cancelled by user" in recorder.events[-1].message
    assert took_s < 30  # generous: how fast it really is belongs to the benchmarks
    assert job_containers(docker_client, job) == []
    assert marked_processes(marker) == []
    assert not (settings.artifacts_dir / job).exists()
    leftovers = list(settings.data_dir.rglob("*")) if settings.data_dir.exists() else []
    # The cache index, the Swarm handoff's secret and its cache volumes are the service's own
    # state, not the job's.
    own = {"caches.json", "swarm-handoff.key", "swarm-volumes"}
    volumes = settings.data_dir / "swarm-volumes"
    assert [p.name for p in leftovers if p.name not in own and volumes not in p.parents] == []


@BACKENDS
async def test_cancel_before_start_means_the_container_never_starts(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    job, t0, token = job_id(), time.time(), CancelToken()
    token.cancel()
    result = await engine.build(BuildRequest(job, build_dir("hello-c")), recorder, token)
    assert result.status is JobStatus.CANCELLED
    assert Action.CONTAINER_CREATED not in recorder.actions()
    assert container_events(docker_client, job, t0) == []


@BACKENDS
async def test_timeout_kills_the_build(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    job = job_id()
    request = BuildRequest(job, build_dir("forker", marker=job))
    result = await engine.build(request, recorder, CancelToken(), timeout_s=3)
    assert result.status is JobStatus.TIMED_OUT
    assert recorder.events[-1].action is Action.TIMED_OUT
    assert "after 3 s" in recorder.events[-1].message
    assert job_containers(docker_client, job) == []
    assert marked_processes(job) == []


async def test_metal_is_refused_before_anything_starts(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    request = BuildRequest(job_id(), build_dir("hello-c"), variant="metal")
    with pytest.raises(VariantRefused, match="needs macOS") as refused:
        await engine.prepare(request)
    assert "'cpu'" in str(refused.value)

    result = await engine.build(request, recorder, CancelToken())
    assert result.status is JobStatus.FAILED
    assert "Linux container cannot use it" in result.reason
    assert Action.CONTAINER_CREATED not in recorder.actions()


async def test_a_pkgbuild_makepkg_refuses_never_gets_a_build_container(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    src = build_dir("hello-c")
    lines = (src / "PKGBUILD").read_text().splitlines()
    (src / "PKGBUILD").write_text("\n".join([*lines, 'pkgdesc="never closed', ""]))
    request = BuildRequest(job_id(), src)
    with pytest.raises(PkgbuildError, match="makepkg refused the PKGBUILD") as refused:
        await engine.prepare(request)
    # bash's own words, with the line, as makepkg passed them on.
    assert "unexpected EOF" in str(refused.value) or "matching" in str(refused.value)

    result = await engine.build(request, recorder, CancelToken())
    assert result.status is JobStatus.FAILED
    assert "makepkg refused the PKGBUILD" in result.reason
    assert Action.CONTAINER_CREATED not in recorder.actions()


async def test_cuda_path_without_a_gpu_builds_and_warns(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    # No GPU and (unless asked for) no CUDA image here: the cpu image stands in, so what is
    # tested is the cuda path through the code: variant, GPU detection, warning, build.
    settings = settings.model_copy(update={"image_cuda": settings.image_cpu})
    async with await Engine.open(settings) as engine:
        assert await engine.backend.gpu_runtime() is False
        request = BuildRequest(job_id(), build_dir("hello-c"), variant="cuda")
        result = await engine.build(request, recorder, CancelToken())
    assert result.status is JobStatus.SUCCEEDED
    warnings = [e.message for e in recorder.events if e.action is Action.WARNING]
    assert any("without a GPU" in w for w in warnings)


async def test_missing_cuda_image_says_how_to_make_it(
    settings: Settings, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    settings = settings.model_copy(update={"image_cuda": "orchestrator/build:no-such-cuda"})
    async with await Engine.open(settings) as engine:
        request = BuildRequest(job_id(), build_dir("hello-c"), variant="cuda")
        result = await engine.build(request, recorder, CancelToken())
    assert result.status is JobStatus.FAILED
    assert "images/bootstrap --cuda" in result.reason
    assert "never pulled" in result.reason


async def test_start_up_reaps_this_instances_orphans_only(
    settings: Settings, docker_client: docker.DockerClient
) -> None:
    def orphan(instance: str) -> str:
        container = docker_client.containers.create(
            settings.image_cpu,
            ["sleep", "300"],
            labels={INSTANCE_LABEL: instance, JOB_LABEL: job_id()},
        )
        container.start()
        return str(container.id)

    ours, theirs = orphan(settings.instance_id), orphan(f"other-{uuid.uuid4().hex[:8]}")
    try:
        async with await Engine.open(settings) as engine:
            assert engine.reaped == [ours]
        ids = {c.id for c in docker_client.containers.list(ignore_removed=True, all=True)}
        assert ours not in ids
        assert theirs in ids
    finally:
        docker_client.api.remove_container(theirs, force=True, v=True)


async def test_kill_and_destroy_are_safe_to_repeat(
    engine: Engine, docker_client: docker.DockerClient, settings: Settings
) -> None:
    container = docker_client.containers.create(
        settings.image_cpu, ["true"], labels={INSTANCE_LABEL: settings.instance_id}
    )
    container.start()
    container.wait()
    await engine.backend.kill(str(container.id))  # already exited: not an error
    await engine.backend.destroy(str(container.id))
    await engine.backend.destroy(str(container.id))  # already gone: not an error
