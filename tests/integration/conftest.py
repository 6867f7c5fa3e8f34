"""Fixtures for tests against the real Docker daemon and the real build images."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import docker
import pytest

from orchestrator import Engine, Settings
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


def job_containers(client: docker.DockerClient, job_id: str) -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"{JOB_LABEL}={job_id}"})
    return [c.id for c in found]


def job_id() -> str:
    return uuid.uuid4().hex
