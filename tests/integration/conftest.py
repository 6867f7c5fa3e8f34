"""Fixtures for tests against the real Docker daemon and the real build images."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import docker
import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Engine, Settings
from orchestrator.api import create_app
from orchestrator.runner import INSTANCE_LABEL, JOB_LABEL

pytestmark = pytest.mark.docker


@pytest.fixture
async def engine(settings: Settings, docker_client: docker.DockerClient) -> AsyncIterator[Engine]:
    async with await Engine.open(settings) as engine:
        yield engine
    # Every test must leave nothing behind, whatever it did.
    left = docker_client.containers.list(
        all=True, filters={"label": f"{INSTANCE_LABEL}={settings.instance_id}"}
    )
    assert left == [], f"containers left behind: {[c.name for c in left]}"
    remove_volumes(docker_client, settings.instance_id)


def remove_volumes(client: docker.DockerClient, instance_id: str) -> None:
    """A test's build caches go with it (the session's end sweeps what a failure left)."""
    for volume in client.volumes.list(filters={"label": f"{INSTANCE_LABEL}={instance_id}"}):
        volume.remove(force=True)


def job_containers(client: docker.DockerClient, job_id: str) -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"{JOB_LABEL}={job_id}"})
    return [c.id for c in found]


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
