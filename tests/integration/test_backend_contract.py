"""The ``Backend`` contract (``tests/contract.py``) on the real engines, Docker and Swarm, with
the real build image: the same tests the fake passes in ``tests/unit/test_backend_contract.py``."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import docker
import pytest

from orchestrator import Settings
from orchestrator.backend.engines import open_backend
from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL

from ..contract import Contract, Subject
from .conftest import BACKENDS, job_id, left_behind

pytestmark = [pytest.mark.docker, BACKENDS]

GATEWAY = "172.17.0.1"  # the docker0 bridge: where this node's tasks reach the host


@pytest.fixture
async def subject(settings: Settings, docker_client: docker.DockerClient) -> AsyncIterator[Subject]:
    if settings.backend == "swarm":
        # A fixed listener, as adoption needs: so Swarm claims it, and is held to it.
        with socket.socket() as sock:
            sock.bind((GATEWAY, 0))
            port = int(sock.getsockname()[1])
        settings = settings.model_copy(update={"swarm_listen": f"{GATEWAY}:{port}"})
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
