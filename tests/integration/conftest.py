"""Fixtures for tests against the real Docker daemon and the real build images."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import docker
import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Engine, Settings
from orchestrator.api import create_app
from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL

from ..conftest import LEFT_BEHIND, SESSION_PREFIX

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
    deadline = time.monotonic() + 15
    while True:
        found = [
            str(c.name)
            for c in client.containers.list(ignore_removed=True, all=True, filters={"label": label})
        ]
        with contextlib.suppress(docker.errors.APIError):  # not a swarm manager: no services
            found += [str(s.name) for s in client.services.list(filters={"label": label})]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


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


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[TestClient]:
    """The app over real HTTP on 127.0.0.1 (aiohttp's test server), cleaned up on exit."""
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def client(
    settings: Settings, docker_client: docker.DockerClient
) -> AsyncIterator[TestClient]:
    async with serve(settings) as client:
        yield client
