"""Builds on a second swarm node: a second Docker engine on this machine (``nodes.py``) joins the
swarm as a worker, and the manager is paused so that every task lands on the worker. A build
there succeeds with its package and whole narration (its inputs and packages crossing the veth
to the handoff listener); draining that node, or killing its engine, mid-build ends the build
``failed`` naming the node.

For the worker to reach the manager, the swarm must be advertised on the host's end of the veth:
the module leaves the session's loopback swarm, makes one there, and makes the loopback one
again at its end (the other swarm tests expect it). The build image is copied once for the
module (``docker save | docker load``, about a minute for the 2.2 GB cpu image).
"""

from __future__ import annotations

import asyncio
import contextlib
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from orchestrator import (
    Action,
    BuildRequest,
    BuildResult,
    CancelToken,
    Engine,
    JobStatus,
    Settings,
)
from orchestrator.build.runner import JOB_LABEL

from .. import waiting
from ..conftest import Recorder
from .conftest import job_containers, job_id
from .nodes import (
    HOST_ADDR,
    HOSTNAME,
    SecondEngine,
    join,
    manager_id,
    set_availability,
    swarm_on,
    wait_node,
)
from .test_engine import marked_processes, said_every_step

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.nodes]

HEARTBEAT_S = 1.0  # the swarm's dispatcher heartbeat: a dead node is down within seconds


@dataclass
class Worker:
    engine: SecondEngine
    node_id: str

    def containers(self, job: str) -> list[str]:
        found = self.engine.client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"{JOB_LABEL}={job}"}
        )
        return [str(c.name) for c in found]


@pytest.fixture(scope="module")
def worker(swarm_manager: None, docker_client: docker.DockerClient) -> Iterator[Worker]:
    """The second engine, with the build image, a worker of a swarm advertised on the veth."""
    info = docker_client.info()["Swarm"]
    if (
        info.get("NodeAddr") != "127.0.0.1"
        or info.get("Nodes") != 1
        or docker_client.services.list()
    ):
        pytest.fail(f"the multi-node tests remake the session's own swarm, not this one: {info}")
    second = SecondEngine()
    try:
        second.up()
        second.load(Settings().image_cpu)
        swarm_on(docker_client, HOST_ADDR, heartbeat_s=HEARTBEAT_S)
        yield Worker(second, join(docker_client, second))
    finally:
        swarm_on(docker_client, "127.0.0.1")  # the session's swarm again, as swarm_manager made it
        second.clean()
        second.close()


@pytest.fixture
def on_worker(worker: Worker, docker_client: docker.DockerClient) -> Iterator[Worker]:
    """The worker up, ready and active, and the manager paused: every new task goes there."""
    if not worker.engine.running:
        worker.engine.start()
    wait_node(docker_client, worker.node_id, "ready")
    set_availability(docker_client, worker.node_id, "active")
    manager = manager_id(docker_client)
    set_availability(docker_client, manager, "pause")
    try:
        yield worker
    finally:
        set_availability(docker_client, manager, "active")


@pytest.fixture
def backend_name() -> str:
    return "swarm"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Where the worker's tasks reach this process: the host's end of the veth.
    return settings.model_copy(update={"swarm_listen": f"{HOST_ADDR}:0"})


@contextlib.asynccontextmanager
async def placed(
    worker: Worker, engine: Engine, recorder: Recorder, request: BuildRequest
) -> AsyncIterator[asyncio.Task[BuildResult]]:
    """The build submitted, once its container runs on the worker (the build still going);
    cancelled at the end if it has not ended."""
    run = asyncio.create_task(engine.build(request, recorder, CancelToken()))
    try:
        await waiting.until(
            lambda: worker.containers(request.job_id) or run.done(),
            timeout_s=90,
            interval_s=0.1,
            what="the build's container on the worker",
        )
        assert not run.done(), run.result()
        yield run
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


async def test_a_build_on_the_worker_succeeds_with_its_package_and_whole_narration(
    on_worker: Worker,
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    job = job_id()
    request = BuildRequest(job, build_dir("slow-printer"))
    async with placed(on_worker, engine, recorder, request) as run:
        result = await asyncio.wait_for(run, 120)
    assert result.status is JobStatus.SUCCEEDED, (result.reason, recorder.lines())
    [package] = result.artifacts
    assert package.name.startswith("slow-printer-1.0-1-any.pkg.tar")
    with tarfile.open(package) as tar:
        assert "usr/share/slow-printer/done" in tar.getnames()
    stdout, stderr = recorder.lines("stdout"), recorder.lines("stderr")
    assert [line for line in stdout if line.startswith("tick ")] == [
        f"tick {i}" for i in range(1, 7)
    ]
    assert [line for line in stderr if line.startswith("tock ")] == [
        f"tock {i}" for i in range(1, 7)
    ]
    assert any(line.startswith("==> Making package: slow-printer") for line in recorder.lines())
    said_every_step(recorder)
    assert job_containers(docker_client, job) == []
    assert gone_from(on_worker, job) == []


def gone_from(worker: Worker, job: str) -> list[str]:
    """The job's containers on the worker, once its agent has removed them (a second or so
    after the manager dropped the task)."""
    return waiting.until_sync(
        lambda: worker.containers(job),
        lambda names: not names,
        timeout_s=30,
        interval_s=0.2,
        on_timeout="return",
    )


async def build_until_lost(
    worker: Worker,
    engine: Engine,
    recorder: Recorder,
    src: Path,
    lose: Callable[[], None],
    job: str,
) -> tuple[BuildResult, float]:
    """A build that runs forever, on the worker; ``lose()`` once it has started its
    children. Its result, and how long after ``lose()`` it came."""
    async with placed(worker, engine, recorder, BuildRequest(job, src)) as run:
        started = recorder.wait_for(lambda e: "children started" in e.message.split("\n"), 90)
        await asyncio.wait({asyncio.ensure_future(started), run}, return_when="FIRST_COMPLETED")
        assert not run.done(), (run.result(), recorder.lines())
        lost_at = time.monotonic()
        lose()
        result = await asyncio.wait_for(run, 120)
        return result, time.monotonic() - lost_at


async def test_draining_the_worker_mid_build_fails_the_build_naming_the_node(
    on_worker: Worker,
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    marker, job = f"orch-drain2-{uuid.uuid4().hex}", job_id()
    try:
        result, _ = await build_until_lost(
            on_worker,
            engine,
            recorder,
            build_dir("forker", marker=marker),
            lambda: set_availability(docker_client, on_worker.node_id, "drain"),
            job,
        )
    finally:
        set_availability(docker_client, on_worker.node_id, "active")
    assert result.status is JobStatus.FAILED
    assert f"({HOSTNAME}) was drained" in result.reason
    assert recorder.events[-1].action is Action.FAILED
    assert "children started" in recorder.lines()  # what it said before is kept
    assert gone_from(on_worker, job) == []
    assert marked_processes(marker) == []


async def test_killing_the_workers_engine_mid_build_fails_the_build_naming_the_node(
    on_worker: Worker,
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    marker, job = f"orch-kill2-{uuid.uuid4().hex}", job_id()
    src = build_dir("forker", marker=marker)
    result, took_s = await build_until_lost(
        on_worker, engine, recorder, src, on_worker.engine.kill, job
    )
    assert result.status is JobStatus.FAILED
    assert f"({HOSTNAME}) went down" in result.reason, result
    assert recorder.events[-1].action is Action.FAILED
    assert "children started" in recorder.lines()
    # The dead engine's containers run on until it is back, which stops them.
    on_worker.engine.start()
    wait_node(docker_client, on_worker.node_id, "ready")
    assert gone_from(on_worker, job) == []
    leftover = waiting.until_sync(
        lambda: marked_processes(marker), lambda found: not found, timeout_s=30, on_timeout="return"
    )
    assert leftover == []
    print(f"the build ended {took_s:.1f} s after the engine was killed")
