"""Fixtures for tests against the real Docker daemon and the real build images."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import docker
import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Engine, Settings
from orchestrator.api import create_app
from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL

from .. import waiting
from ..conftest import LEFT_BEHIND, SESSION_PREFIX
from .daemon_proxy import DaemonProxy

if TYPE_CHECKING:
    from .adoption import Services

pytestmark = pytest.mark.docker


# Both engines, for the acceptance tests: `@BACKENDS` on a test that takes `settings`.
BACKENDS = pytest.mark.parametrize(
    "backend_name", ["docker", pytest.param("swarm", marks=pytest.mark.swarm)]
)


@pytest.fixture(scope="session")
def swarm_manager(docker_client: docker.DockerClient) -> Iterator[None]:
    """This engine as a swarm manager: a one-node swarm on loopback made for the session (and
    left again at its end) unless the engine is in one already."""
    state = docker_client.info().get("Swarm", {}).get("LocalNodeState")
    made = state == "inactive"
    if made:
        docker_client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    elif not docker_client.info().get("Swarm", {}).get("ControlAvailable"):
        pytest.fail(f"the engine is in a swarm ({state}) but not a manager: swarm tests need one")
    yield
    # Before the swarm is left (which would take them with it): reported as left behind.
    for service in docker_client.services.list(filters={"label": INSTANCE_LABEL}):
        if (
            (service.attrs["Spec"].get("Labels") or {})
            .get(INSTANCE_LABEL, "")
            .startswith(SESSION_PREFIX)
        ):
            LEFT_BEHIND.append(f"swarm service {service.name}")
            service.remove()
    if made:
        docker_client.swarm.leave(force=True)


def left_behind(client: docker.DockerClient, label: str) -> list[str]:
    """Containers and swarm services carrying ``label``, once what is being removed is gone.

    A swarm node's agent removes a task's container just after the manager has dropped the
    task (about a second; no manager API tells when): so wait a little for that, no longer."""

    def found() -> list[str]:
        names = [
            str(c.name)
            for c in client.containers.list(ignore_removed=True, all=True, filters={"label": label})
        ]
        with contextlib.suppress(docker.errors.APIError):  # not a swarm manager: no services
            names += [str(s.name) for s in client.services.list(filters={"label": label})]
        return names

    return waiting.until_sync(
        found, lambda names: not names, timeout_s=15, interval_s=0.2, on_timeout="return"
    )


@pytest.fixture
async def engine(settings: Settings, docker_client: docker.DockerClient) -> AsyncIterator[Engine]:
    async with await Engine.open(settings) as engine:
        yield engine
    # Every test must leave nothing behind, whatever it did.
    left = left_behind(docker_client, f"{INSTANCE_LABEL}={settings.instance_id}")
    assert left == [], f"containers or services left behind: {left}"
    remove_volumes(docker_client, settings.instance_id)


def remove_volumes(client: docker.DockerClient, instance_id: str) -> None:
    """A test's build caches go with it (the session's end sweeps what a failure left)."""
    for volume in client.volumes.list(filters={"label": f"{INSTANCE_LABEL}={instance_id}"}):
        volume.remove(force=True)


def job_containers(client: docker.DockerClient, job_id: str, *, settle: bool = True) -> list[str]:
    """The job's containers and swarm services; with ``settle``, once removals have finished."""
    if settle:
        return left_behind(client, f"{JOB_LABEL}={job_id}")
    found = client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{JOB_LABEL}={job_id}"}
    )
    return [str(c.id) for c in found]


def job_id() -> str:
    return uuid.uuid4().hex


# A build's SSE stream lasts as long as the build, and a cold cargo build on a busy machine
# passed aiohttp's default 300 s total, which cut the stream mid-build. pytest-timeout bounds
# each test instead.
STREAMING = aiohttp.ClientTimeout(total=None, sock_connect=30)


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[TestClient]:
    """The app over real HTTP on 127.0.0.1 (aiohttp's test server), cleaned up on exit."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    async with TestClient(server, timeout=STREAMING) as client:
        yield client


@pytest.fixture
async def client(
    settings: Settings, docker_client: docker.DockerClient
) -> AsyncIterator[TestClient]:
    async with serve(settings) as client:
        yield client


@pytest.fixture
def services(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    """`orchestrator serve` processes one after another (see adoption.py); whichever still
    runs at the end is stopped."""
    from .adoption import Services

    made = Services(settings, tmp_path)
    try:
        yield made
    finally:
        for proc in made.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=STREAMING) as session:
        yield session


@pytest.fixture
def proxy() -> Iterator[DaemonProxy]:
    """A proxy in front of the daemon's socket that a test tells which calls to spoil."""
    # A short path of its own: a unix socket's path may not be longer than 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="daemon-"))
    try:
        with DaemonProxy(folder / "docker.sock") as proxy:
            yield proxy
    finally:
        shutil.rmtree(folder, ignore_errors=True)
