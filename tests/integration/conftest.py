"""Fixtures for tests against the real Docker daemon and the real build images."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from orchestrator import Engine, Settings
from orchestrator.runner import INSTANCE_LABEL, JOB_LABEL

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the Docker daemon is not reachable: {exc}")
    settings = Settings()
    for image in (settings.image_cpu,):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"build image {image} is missing: run images/bootstrap first")
    yield client
    # A test that failed half-way may leave a container; sweep every test instance's.
    for container in client.containers.list(all=True, filters={"label": INSTANCE_LABEL}):
        if container.labels.get(INSTANCE_LABEL, "").startswith("test-"):
            container.remove(force=True)
    client.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        instance_id=f"test-{uuid.uuid4().hex[:12]}",
        build_cpus=1.0,
        build_memory_bytes=1024**3,
    )


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
