"""The service as users run it: its image from the Dockerfile, the host's socket, a volume."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.narration.sse import Parser

from .. import waiting
from ..integration.conftest import job_containers
from ..integration.service import tar_dir
from .conftest import ServiceContainer

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


def http(method: str, url: str, body: bytes | None = None, **headers: str) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        data = response.read()
        return (
            json.loads(data) if response.headers.get_content_type() == "application/json" else data
        )


def submit(service: ServiceContainer, src: Path) -> str:
    created = http(
        "POST", f"{service.url}/v1/builds", tar_dir(src), **{"Content-Type": "application/gzip"}
    )
    return str(created["job_id"])


def sse(
    service: ServiceContainer, job_id: str, until: str | None = None
) -> tuple[list[str], dict[str, Any] | None, bool]:
    """Narration lines, end marker and [DONE] of a job's stream (stopping at line ``until``)."""
    messages: list[str] = []
    end: dict[str, Any] | None = None
    done = False
    parser = Parser()
    with urllib.request.urlopen(f"{service.url}/v1/jobs/{job_id}/stream", timeout=300) as stream:
        for message in (m for raw in stream for m in parser.feed(raw)):
            if message.is_done:
                done = True
                break
            if message.is_end:
                end = message.json()
                continue
            lines = message.json()["message"].split("\n")  # output events hold runs of lines
            messages += lines
            if until is not None and until in lines:
                break
    return messages, end, done


def test_build_stream_and_download_through_the_container(
    run_service: Callable[..., ServiceContainer], build_dir: Callable[..., Path]
) -> None:
    service = run_service()
    job_id = submit(service, build_dir("hello-c"))
    messages, end, done = sse(service, job_id)
    assert done
    assert end is not None and end["status"] == "succeeded"
    assert any(m.startswith("==> Making package: hello-c") for m in messages)
    [artifact] = http("GET", f"{service.url}/v1/jobs/{job_id}/artifacts")["artifacts"]
    data = http("GET", service.url + artifact["url"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "usr/bin/hello" in tar.getnames()


def test_cancel_mid_build_leaves_no_container(
    run_service: Callable[..., ServiceContainer],
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    service = run_service()
    job_id = submit(service, build_dir("forker", marker=uuid.uuid4().hex))
    sse(service, job_id, until="children started")
    assert job_containers(docker_client, job_id) != []
    cancelled = http("POST", f"{service.url}/v1/jobs/{job_id}/cancel")
    assert cancelled["status"] == "cancelled"
    assert job_containers(docker_client, job_id) == []


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_build_outlives_its_service_container_and_the_next_one_adopts_it(
    run_service: Callable[..., ServiceContainer],
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    how: str,
) -> None:
    first = run_service(on_stop="leave")
    job_id = submit(first, build_dir("forker", marker=uuid.uuid4().hex))
    sse(first, job_id, until="children started")
    if how == "stop":
        first.wrapped.stop(timeout=60)  # SIGTERM: the build is left running
    else:
        first.wrapped.kill()  # SIGKILL: the build runs on unwatched
    assert job_containers(docker_client, job_id) != []

    second = run_service()  # same volume, same instance: it adopts the build
    assert http("GET", f"{second.url}/v1/jobs/{job_id}")["status"] == "running"
    cancelled = http("POST", f"{second.url}/v1/jobs/{job_id}/cancel")
    assert cancelled["status"] == "cancelled"
    messages, end, done = sse(second, job_id)
    assert "children started" in messages  # its log survived
    assert any(m.startswith("🔁 Service restarted: build adopted") for m in messages)
    assert end is not None and end["status"] == "cancelled"
    assert done
    assert job_containers(docker_client, job_id) == []


def test_without_the_socket_it_says_what_is_missing(
    run_service: Callable[..., ServiceContainer],
) -> None:
    service = run_service(socket=False)
    wrapped = service.wrapped

    def status() -> str:
        wrapped.reload()
        return str(wrapped.status)

    waiting.until_sync(
        status, lambda now: now == "exited", timeout_s=30, interval_s=0.2, what="the exit"
    )
    assert wrapped.attrs["State"]["ExitCode"] == 78
    logs = wrapped.logs().decode()
    assert "Docker socket /var/run/docker.sock is not mounted" in logs
    assert "-v /var/run/docker.sock:/var/run/docker.sock" in logs


def test_the_image_runs_the_service_unprivileged(
    run_service: Callable[..., ServiceContainer],
) -> None:
    service = run_service()
    status = service.wrapped.exec_run(["cat", "/proc/1/status"]).output.decode()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == "10001"
    health = service.wrapped.attrs["Config"]["Healthcheck"]["Test"]
    assert "/health" in " ".join(health)
