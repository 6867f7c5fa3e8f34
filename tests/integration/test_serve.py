"""`orchestrator serve` as a real process with ``ORCHESTRATOR_ON_STOP=cancel``: SIGTERM stops
builds, closes streams, leaves nothing (the default, leaving them running: test_adopt.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import docker
import pytest

from orchestrator import Settings
from orchestrator.build.readers import READER_LABEL
from orchestrator.build.runner import INSTANCE_LABEL
from orchestrator.narration import sse

from .. import waiting
from .conftest import job_containers
from .service import tar_dir
from .test_engine import marked_processes

pytestmark = pytest.mark.docker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    env = {
        **os.environ,
        "ORCHESTRATOR_DATA_DIR": str(settings.data_dir),
        "ORCHESTRATOR_INSTANCE_ID": settings.instance_id,
        "ORCHESTRATOR_PORT": str(port),
        "ORCHESTRATOR_ON_STOP": "cancel",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def wait_healthy(url: str, session: aiohttp.ClientSession) -> None:
    async def healthy() -> bool:
        try:
            async with session.get(f"{url}/health") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await waiting.until(healthy, interval_s=0.1, what=f"the service at {url} healthy")


async def test_sigterm_interrupts_builds_ends_streams_and_leaves_nothing(
    service: tuple[subprocess.Popen[str], str],
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    proc, url = service
    marker = f"orch-serve-{uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as session:
        await wait_healthy(url, session)
        async with session.post(
            f"{url}/v1/builds",
            data=tar_dir(build_dir("forker", marker=marker)),
            headers={"Content-Type": "application/gzip"},
        ) as response:
            assert response.status == 201
            job_id = (await response.json())["job_id"]

        messages: list[str] = []
        end: dict[str, str] = {}
        async with session.get(f"{url}/v1/jobs/{job_id}/stream") as stream:
            async for message in sse.messages(stream.content.iter_any()):
                if message.is_end:
                    end = message.json()
                elif not message.is_done:
                    lines = message.json()["message"].split("\n")
                    messages += lines
                    if "children started" in lines:
                        assert job_containers(docker_client, job_id) != []
                        proc.send_signal(signal.SIGTERM)
    # The stream ended because the service shut down, and said how the job ended.
    assert end["status"] == "interrupted"
    assert "shutting down" in messages[-1]
    assert await asyncio.to_thread(proc.wait, 60) == 0
    assert job_containers(docker_client, job_id) == []
    assert marked_processes(marker) == []


def test_refuses_a_public_bind_without_a_token(settings: Settings) -> None:
    env = {**os.environ, "ORCHESTRATOR_DATA_DIR": str(settings.data_dir)}
    env.pop("ORCHESTRATOR_API_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "ORCHESTRATOR_API_TOKEN" in done.stderr


async def test_a_service_killed_outright_leaves_none_of_its_readers(
    service: tuple[subprocess.Popen[str], str],
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    settings: Settings,
) -> None:
    # kill -9 runs no clean-up: the readers end because their stdin (this process's socket)
    # does, and Docker removes them. Nothing waits for a restart that may never come.
    proc, url = service
    mine = {"label": [f"{INSTANCE_LABEL}={settings.instance_id}", READER_LABEL]}
    async with aiohttp.ClientSession() as session:
        await wait_healthy(url, session)
        async with session.post(
            f"{url}/v1/builds",
            params={"dry_run": "true"},
            data=tar_dir(build_dir("hello-c")),
            headers={"Content-Type": "application/gzip"},
        ) as response:
            assert response.status == 200, await response.text()
    # The low-level list: the high-level one inspects each, and they are going away meanwhile.
    assert docker_client.api.containers(all=True, filters=mine)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    await waiting.until(
        lambda: docker_client.api.containers(all=True, filters=mine),
        lambda readers: not readers,
        timeout_s=30,
        interval_s=0.2,
        what="the readers gone with the service",
    )
