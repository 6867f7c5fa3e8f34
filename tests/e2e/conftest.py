"""End-to-end fixtures: the service image built from the Dockerfile and run with testcontainers,
and `orchestrator serve` as a plain process for the CLI tests."""

from __future__ import annotations

import contextlib
import os

# Ryuk (testcontainers' reaper) would have to be pulled; our fixtures clean up after themselves.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.image import DockerImage

from .. import waiting
from ..conftest import SESSION_PREFIX, instance_id, remove_instance_volumes
from ..integration.test_serve import free_port
from ..leftovers import SESSION_LABEL

REPO = Path(__file__).resolve().parents[2]
SERVICE_IMAGE = "orchestrator/service:e2e"

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


def wait_healthy(url: str, timeout_s: float = 60) -> None:

    def health() -> int | Exception:
        """The answer's status, or why there was none (not up yet)."""
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                return int(response.status)
        except Exception as exc:
            return exc

    waiting.until_sync(
        health,
        lambda answer: answer == 200,
        timeout_s=timeout_s,
        interval_s=0.2,
        what=f"{url} healthy",
    )


@pytest.fixture(scope="session")
def service_image() -> str:
    subprocess.run([str(REPO / "images/collect-ca")], check=True)
    base = os.environ.get("ORCHESTRATOR_BASE_IMAGE", "orchestrator/base:trixie")
    DockerImage(
        path=str(REPO), tag=SERVICE_IMAGE, clean_up=False, buildargs={"BASE_IMAGE": base}
    ).build()
    return SERVICE_IMAGE


@dataclass
class ServiceContainer:
    container: DockerContainer
    url: str

    @property
    def wrapped(self) -> docker.models.containers.Container:
        return self.container.get_wrapped_container()


@pytest.fixture
def run_service(service_image: str, docker_client: docker.DockerClient) -> Iterator[object]:
    """Start service containers on a shared data volume; all are removed afterwards."""
    instance = instance_id("e2e-")
    volume = docker_client.volumes.create(f"orchestrator-e2e-{uuid.uuid4().hex[:8]}")
    started: list[DockerContainer] = []

    def start(
        *, socket: bool = True, wait: bool = True, on_stop: str = "cancel"
    ) -> ServiceContainer:
        # Stopped with a build running, a test's service ends it (the default would leave it
        # running for a next start that may not come) unless the test says otherwise.
        container = (
            DockerContainer(service_image)
            .with_kwargs(labels={SESSION_LABEL: SESSION_PREFIX})  # the session's own
            .with_env("ORCHESTRATOR_ON_STOP", on_stop)
            .with_env("ORCHESTRATOR_INSTANCE_ID", instance)
            .with_env("ORCHESTRATOR_ALLOW_UNAUTHENTICATED", "true")
            .with_volume_mapping(volume.name, "/var/lib/orchestrator", "rw")
        )
        if socket:
            container.with_volume_mapping("/var/run/docker.sock", "/var/run/docker.sock", "rw")
        # Published on loopback only, on a port the daemon picks.
        container.ports = {"7835/tcp": ("127.0.0.1", None)}  # type: ignore[dict-item]
        container.start()
        started.append(container)
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        url = ""
        if socket:
            port = wrapped.attrs["NetworkSettings"]["Ports"]["7835/tcp"][0]["HostPort"]
            url = f"http://127.0.0.1:{port}"
            if wait:
                wait_healthy(url)
        return ServiceContainer(container, url)

    yield start
    for container in started:
        # Stopped as a user stops it (SIGTERM), so it removes its own containers, readings
        # included; removing it at once (SIGKILL) left them behind. Then removed with its
        # volumes (v=True).
        with contextlib.suppress(docker.errors.APIError):
            container.get_wrapped_container().stop(timeout=75)
        container.stop()
    volume.remove(force=True)
    remove_instance_volumes(docker_client, instance)


@pytest.fixture(scope="module")
def cli_service(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[str]:
    """`orchestrator serve` as a process, for the CLI tests."""
    data = tmp_path_factory.mktemp("cli-service")
    port = free_port()
    instance = instance_id("cli-")
    env = {
        **os.environ,
        "ORCHESTRATOR_DATA_DIR": str(data),
        "ORCHESTRATOR_INSTANCE_ID": instance,
        "ORCHESTRATOR_PORT": str(port),
        "ORCHESTRATOR_ON_STOP": "cancel",  # a build still running at the end goes with it
    }
    env.pop("ORCHESTRATOR_API_TOKEN", None)
    log = (data / "service.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        remove_instance_volumes(docker_client, instance)
