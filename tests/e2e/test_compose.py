"""The README's main command: scripts/up brings the product up with compose, the CLI builds."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from ..conftest import SESSION_PREFIX, remove_instance_volumes
from ..integration.test_serve import free_port
from .conftest import REPO, wait_healthy
from .test_cli import cli

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


@pytest.fixture
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
