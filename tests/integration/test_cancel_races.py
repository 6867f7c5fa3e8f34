"""Cancels forced into each window of a build's end, and into its container's creation, on the
real daemon: whatever the answer, nothing of the job is left on it once the answer comes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import docker
import pytest

from orchestrator import Settings
from orchestrator.backend import Step
from orchestrator.backend.docker import DockerBackend
from orchestrator.build.readers import READER_LABEL
from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL
from orchestrator.engine import Engine
from orchestrator.errors import JobStateConflict
from orchestrator.jobs import Submission
from orchestrator.jobs.registry import Registry
from orchestrator.kinds import BuildKind
from orchestrator.metrics import Metrics
from orchestrator.narration.bus import Bus
from orchestrator.storage.store import Store

from .. import waiting
from .conftest import job_containers, job_id, remove_volumes

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # These tests time windows, not makepkg: a busy machine must not fail them before one.
    return settings.model_copy(update={"inspect_timeout_s": 120.0})


class WindowDocker(DockerBackend):
    """Holds the ``nth`` call of one step of a build's end (``window``) until the test opens
    the gate."""

    def __init__(self, settings: Settings, window: str, nth: int) -> None:
        super().__init__(settings)
        self.window, self.nth = window, nth
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        # The cache's measure runs in a thread: held there, between its container's run and
        # its removal.
        self._loop = asyncio.get_running_loop()
        self.measuring, self.held, self.release = (threading.Event() for _ in range(3))

    async def _hold(self, step: str) -> None:
        if step != self.window:
            return
        self.nth -= 1
        if self.nth == 0:
            self.entered.set()
            await self.gate.wait()

    async def collect(self, handle: str, path: str, max_bytes: int | None = None) -> IO[bytes]:
        await self._hold("collect")
        return await super().collect(handle, path, max_bytes)

    async def destroy(self, handle: str) -> None:
        await self._hold("destroy")
        await super().destroy(handle)

    def _volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        self.measuring.set()
        return super()._volume_usage(name, image, labels)

    def _remove(self, container_id: str) -> None:
        # The measure's container is held made, not yet removed: the window it is on the daemon.
        if self.window == "volume_usage" and self.measuring.is_set() and not self.held.is_set():
            self.held.set()
            self._loop.call_soon_threadsafe(self.entered.set)
            self.release.wait(120)
        super()._remove(container_id)


@asynccontextmanager
async def open_registry(settings: Settings, backend: DockerBackend) -> AsyncIterator[Registry]:
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


def on_the_daemon(client: docker.DockerClient, settings: Settings) -> list[str]:
    """The instance's containers as they are now (not once removals end): what a caller who
    got the answer would find."""
    label = f"{INSTANCE_LABEL}={settings.instance_id}"
    found = client.api.containers(all=True, filters={"label": label})
    # The warm PKGBUILD readers serve the service, not the job: they stay while it runs.
    return [f"{c['Names']} {c['Command']}" for c in found if READER_LABEL not in c["Labels"]]


# The build's first collect is its cache report; its first destroy removes its container (the
# reading is an exec in a warm reader, which is never destroyed for a job).
@pytest.mark.parametrize(("window", "nth"), [("collect", 1), ("destroy", 1), ("volume_usage", 1)])
async def test_a_cancel_in_any_window_of_a_builds_end_leaves_nothing(
    settings: Settings,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    window: str,
    nth: int,
) -> None:
    backend = WindowDocker(settings, window, nth)
    try:
        async with open_registry(settings, backend) as registry:

            async def cancel_and_look() -> list[str]:
                with contextlib.suppress(JobStateConflict):  # too late: it had exited
                    await registry.cancel(job)
                return on_the_daemon(docker_client, settings)

            job = registry.new_job_id()
            src = settings.work_dir / job
            src.parent.mkdir(parents=True, exist_ok=True)
            build_dir("disk-writer", steps=1, step=1, pause=0, into=".").rename(src)
            body = {"variant": "cpu"}
            await registry.submit("build", Submission(job, body, body, upload=src))
            await asyncio.wait_for(backend.entered.wait(), 300)
            handle = registry._handles.get(job)  # gone: the job has answered as ended already
            cancel = asyncio.ensure_future(cancel_and_look())
            try:
                await waiting.until(  # the cancel is in (or answered) while the window is held
                    lambda: cancel.done() or (handle is not None and handle.token.cancelled),
                    timeout_s=30,
                    what="the cancel",
                )
            finally:
                backend.gate.set()
                backend.release.set()
            assert await asyncio.wait_for(cancel, 120) == []
    finally:
        backend.release.set()
        remove_volumes(docker_client, settings.instance_id)


class HeldCreate(DockerBackend):
    """Holds the daemon's create of a container (in its thread) until the test releases it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.creating = threading.Event()
        self.release = threading.Event()
        self.created = threading.Event()

    def _create(self, step: Step) -> str:
        self.creating.set()
        self.release.wait(60)
        try:
            return super()._create(step)
        finally:
            self.created.set()


async def test_a_build_cancelled_while_its_container_is_made_leaves_none(
    settings: Settings, docker_client: docker.DockerClient
) -> None:
    backend = HeldCreate(settings)
    job = job_id()
    labels = {JOB_LABEL: job, INSTANCE_LABEL: settings.instance_id}
    step = Step(settings.image_cpu, ("true",), labels)
    try:
        setup = asyncio.ensure_future(backend.setup(step))
        assert await asyncio.to_thread(backend.creating.wait, 30)
        setup.cancel()
        await asyncio.sleep(0)  # the cancel reaches setup while the create is still held
        backend.release.set()
        with pytest.raises(asyncio.CancelledError):
            await setup
        assert await asyncio.to_thread(backend.created.wait, 30)  # the daemon has made it
        assert job_containers(docker_client, job, settle=False) == []
    finally:
        backend.release.set()
        await backend.reap({JOB_LABEL: job})
        await backend.close()
