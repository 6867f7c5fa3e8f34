"""A running build outlives the service on a one-node swarm (`orchestrator serve` as a real
process, real makepkg): its service is found again, its output read back from the service logs,
and its packages taken at the same listener (a fixed ``swarm_listen``) with a token the next
process derives again. A task whose build ended while no service listened keeps sending its
packages until the next one takes them."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp
import docker
import pytest

from orchestrator import Settings

from .. import waiting
from .adoption import (
    Services,
    a_build_survives_a_kill_9,
    container_of,
    ended_with_its_package,
    finish_adopted,
    kill_and_restart,
    printed_past,
    release,
)

pytestmark = [pytest.mark.docker, pytest.mark.swarm]

GATEWAY = "172.17.0.1"  # the docker0 bridge: where this node's tasks reach the host


@pytest.fixture
def backend_name() -> str:
    return "swarm"


@pytest.fixture
def on_swarm(services: Services, settings: Settings) -> Services:
    """Both processes listen for the tasks at the same fixed address, as adoption needs."""
    with socket.socket() as sock:
        sock.bind((GATEWAY, 0))
        port = int(sock.getsockname()[1])
    services.extra_env.update(
        ORCHESTRATOR_BACKEND="swarm", ORCHESTRATOR_SWARM_LISTEN=f"{GATEWAY}:{port}"
    )
    return services


async def test_a_swarm_build_survives_a_kill_9_of_the_service(
    on_swarm: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    await a_build_survives_a_kill_9(on_swarm, session, build_dir("gapped"), docker_client)


async def test_sigterm_leaves_the_swarm_build_running_for_the_next_service(
    on_swarm: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:

    async def left_running(job_id: str) -> None:
        assert container_of(docker_client, job_id).status == "running"
        await printed_past(docker_client, job_id, 60)

    reader, _, url = await kill_and_restart(
        on_swarm, session, build_dir("gapped"), signal.SIGTERM, meanwhile=left_running
    )
    await finish_adopted(session, url, reader, docker_client)


async def test_a_swarm_build_that_ended_while_no_service_listened_hands_its_packages_over(
    on_swarm: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:

    async def end(job_id: str) -> None:
        release(docker_client, job_id)
        # makepkg is done while nobody listens; the task goes on trying to send its packages.
        container = container_of(docker_client, job_id)
        await waiting.until(
            lambda: b"Finished making" in container.logs(), timeout_s=90, what="the build's end"
        )

    reader, _, url = await kill_and_restart(
        on_swarm, session, build_dir("gapped"), signal.SIGKILL, meanwhile=end
    )
    await ended_with_its_package(session, url, reader, docker_client)
