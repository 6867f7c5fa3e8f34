"""The ``Backend`` contract (``tests/contract.py``) on the real engines, Docker and Swarm, with
the real build image: the same tests the fake passes in ``tests/unit/test_backend_contract.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import docker
import pytest

from orchestrator import Settings
from orchestrator.backend.engines import open_backend
from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL

from ..contract import Contract, Subject
from .conftest import BACKENDS, job_id, left_behind

pytestmark = [pytest.mark.docker, BACKENDS]


@pytest.fixture
async def subject(settings: Settings, docker_client: docker.DockerClient) -> AsyncIterator[Subject]:
    backend = open_backend(settings)
    await backend.ping()
    labels = {INSTANCE_LABEL: settings.instance_id, JOB_LABEL: job_id()}
    try:
        yield Subject(backend, settings.image_cpu, labels)
    finally:
        await backend.reap({INSTANCE_LABEL: settings.instance_id})
        await backend.close()
    left = left_behind(docker_client, f"{INSTANCE_LABEL}={settings.instance_id}")
    assert left == [], f"containers or services left behind: {left}"


class TestEngine(Contract):
    pass
