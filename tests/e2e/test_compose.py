"""The README's main command: scripts/up brings the product up with compose, the CLI builds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import docker
import pytest

from ..conftest import SESSION_PREFIX, remove_instance_volumes
from ..integration.test_adopt import Client, has, line_at_least, release, submit
from ..integration.test_serve import free_port
from .conftest import REPO, wait_healthy
from .test_cli import cli

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


@pytest.fixture(scope="module")  # one project for the module: each `up` builds the image
def compose_up(docker_client: docker.DockerClient) -> Iterator[str]:
    port = free_port()
    # Its own project (so its own volume and instance, the session's), on a free port.
    project = f"{SESSION_PREFIX}compose-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": project,
        "ORCHESTRATOR_PORT": str(port),
    }
    up = subprocess.run(
        [str(REPO / "scripts/up"), "-d"], env=env, capture_output=True, text=True, timeout=900
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout_s=120)
        yield url
    finally:
        # -v: its data volume goes too; the build caches its service made are the test's.
        subprocess.run(
            [str(REPO / "scripts/down"), "-v"], env=env, capture_output=True, timeout=300
        )
        remove_instance_volumes(docker_client, project)


def test_scripts_up_serves_and_the_cli_builds(
    compose_up: str, build_dir: Callable[..., Path], tmp_path: Path
) -> None:
    done = cli(compose_up, "build", str(build_dir("hello-c")), "--follow", "-o", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "[orchestrator] ✅ Build succeeded: built hello-c-1.0.0-1-x86_64.pkg.tar.gz" in done.stdout
    )
    assert (tmp_path / "hello-c-1.0.0-1-x86_64.pkg.tar.gz").is_file()


async def test_an_upgrade_by_scripts_up_leaves_the_running_build_to_the_new_container(
    compose_up: str, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    """`scripts/up -d` again (compose down, the image built again, a new container up), while
    a build runs: the new container adopts it, and it ends as if nothing happened."""
    project = compose_project(docker_client, compose_up)
    before = service_container(docker_client, project)
    async with aiohttp.ClientSession() as session:
        reader = Client(await submit(session, compose_up, build_dir("gapped")))
        await reader.read(session, compose_up, until=line_at_least(10))
        env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": project,
            "ORCHESTRATOR_PORT": port_of(compose_up),
        }
        again = subprocess.run(
            [str(REPO / "scripts/up"), "-d"], env=env, capture_output=True, text=True, timeout=900
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert service_container(docker_client, project) != before
        await asyncio.to_thread(wait_healthy, compose_up, 120)
        await reader.read(session, compose_up, until=has("Service restarted: build adopted"))
        release(docker_client, reader.job_id)
        await reader.read(session, compose_up)
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    reader.check_every_line_once()


def compose_project(client: docker.DockerClient, url: str) -> str:
    """The project of the compose service published on ``url``'s port."""
    for container in client.containers.list(
        ignore_removed=True, filters={"label": "com.docker.compose.service"}
    ):
        ports = container.attrs["NetworkSettings"]["Ports"] or {}
        bound = [b["HostPort"] for b in ports.get("7835/tcp") or []]
        if port_of(url) in bound:
            return str(container.labels["com.docker.compose.project"])
    raise AssertionError(f"no compose service on {url}")


def service_container(client: docker.DockerClient, project: str) -> str:
    [container] = client.containers.list(
        ignore_removed=True, filters={"label": f"com.docker.compose.project={project}"}
    )
    return str(container.id)


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]
