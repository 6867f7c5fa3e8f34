"""A running build outlives the service (`orchestrator serve` as a real process, real makepkg).

The build (``gapped``) prints numbered lines until the test releases it, so it prints before,
during and after the time no service watches; a client that resumes with ``Last-Event-ID``
must see every line exactly once, in order, and the build must end as if it had been watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from orchestrator import Settings
from orchestrator.narration import sse

from .conftest import job_containers
from .service import tar_dir
from .test_serve import free_port, wait_healthy

pytestmark = pytest.mark.docker


@dataclass
class Services:
    """`orchestrator serve` processes on one data directory and instance, one after another."""

    settings: Settings
    logs: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, *args: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {
            **os.environ,
            "ORCHESTRATOR_DATA_DIR": str(self.settings.data_dir),
            "ORCHESTRATOR_INSTANCE_ID": self.settings.instance_id,
            "ORCHESTRATOR_PORT": str(port),
            **self.extra_env,
        }
        with (self.logs / f"service-{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "serve", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    async def start(
        self, session: aiohttp.ClientSession, *args: str
    ) -> tuple[subprocess.Popen[bytes], str]:
        proc, url = self.spawn(*args)
        await wait_healthy(url, session)
        return proc, url

    def output(self, index: int) -> str:
        return (self.logs / f"service-{index}.log").read_text(errors="replace")


@pytest.fixture
def services(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    made = Services(settings, tmp_path)
    try:
        yield made
    finally:
        for proc in made.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Client:
    """One client's view of a job's stream across services: it resumes with Last-Event-ID."""

    job_id: str
    last_id: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None

    async def read(
        self,
        session: aiohttp.ClientSession,
        url: str,
        until: Callable[[dict[str, Any]], bool] | None = None,
        timeout_s: float = 90,
    ) -> None:
        """Read from where it stopped until ``until``, the stream's end, or a dead service."""
        headers = {"Last-Event-ID": str(self.last_id)} if self.last_id else {}

        async def read() -> None:
            stream_url = f"{url}/v1/jobs/{self.job_id}/stream"
            async with session.get(stream_url, headers=headers) as response:
                assert response.status == 200
                async for message in sse.messages(response.content.iter_any()):
                    if message.is_end:
                        self.end = message.json()
                    elif not message.is_done:
                        event = message.json()
                        self.events.append(event)
                        self.last_id = int(message.id)
                        if until is not None and until(event):
                            return

        with contextlib.suppress(aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            await asyncio.wait_for(read(), timeout_s)

    def lines(self, stream: str, pattern: str) -> list[str]:
        match = re.compile(pattern).fullmatch
        return [
            line
            for e in self.events
            if e["action"] == "output" and e.get("stream") == stream
            for line in e["message"].split("\n")
            if match(line)
        ]

    def check_every_line_once(self, min_errors: int = 2) -> None:
        """Every line the build printed, once, in order, on each stream (``min_errors``: at
        least that many stderr lines, when the build was let run long enough to print them)."""
        out = self.lines("stdout", r"(line|last) \d+")
        assert out, "no output"
        last = int(out[-1].removeprefix("last "))
        assert out == [f"line {i}" for i in range(1, last + 1)] + [f"last {last}"]
        # Every fifth line before the release also went to stderr.
        errors = self.lines("stderr", r"err \d+")
        assert errors == [f"err {i}" for i in range(5, 5 * len(errors) + 1, 5)]
        assert len(errors) >= min_errors

    def said(self, text: str) -> bool:
        return any(text in e["message"] for e in self.events)


def line_at_least(n: int) -> Callable[[dict[str, Any]], bool]:
    def seen(event: dict[str, Any]) -> bool:
        numbers = re.findall(r"^line (\d+)$", event["message"], re.MULTILINE)
        return event["action"] == "output" and any(int(x) >= n for x in numbers)

    return seen


def has(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: text in event["message"]


async def submit(session: aiohttp.ClientSession, url: str, src: Path, **params: str) -> str:
    async with session.post(
        f"{url}/v1/builds",
        params=params,
        data=tar_dir(src),
        headers={"Content-Type": "application/gzip"},
    ) as response:
        body = await response.json()
        assert response.status == 201, body
        return str(body["job_id"])


def container_of(client: docker.DockerClient, job_id: str) -> Any:
    [found] = client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"orchestrator.job={job_id}"}
    )
    return found


async def printed_past(client: docker.DockerClient, job_id: str, n: int) -> None:
    """Until the build's log (the engine's) holds line ``n``: it printed while unwatched."""
    deadline = time.monotonic() + 30
    container = container_of(client, job_id)
    while f"line {n}\n".encode() not in container.logs(stdout=True, stderr=False):
        assert time.monotonic() < deadline, "the build stopped printing"
        await asyncio.sleep(0.1)


def release(client: docker.DockerClient, job_id: str) -> None:
    container_of(client, job_id).exec_run(["touch", "/tmp/release"], user="builder")


async def job(session: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/jobs/{job_id}") as response:
        return dict(await response.json())


async def finish_adopted(
    session: aiohttp.ClientSession,
    url: str,
    reader: Client,
    docker_client: docker.DockerClient,
) -> None:
    """On the new service: the adopted stream goes on; released, the build succeeds with its
    package and every line once; its container is removed."""
    await reader.read(session, url, until=has("Service restarted: build adopted"))
    release(docker_client, reader.job_id)
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    reader.check_every_line_once()
    async with session.get(f"{url}/v1/jobs/{reader.job_id}/artifacts") as response:
        names = [a["name"] for a in (await response.json())["artifacts"]]
    assert names and names[0].startswith("gapped-1.0-1-any.pkg.tar")
    assert job_containers(docker_client, reader.job_id) == []


async def test_a_build_survives_a_kill_9_of_the_service(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    proc, url = await services.start(session)
    reader = Client(await submit(session, url, build_dir("gapped")))
    await reader.read(session, url, until=line_at_least(10))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    await printed_past(docker_client, reader.job_id, 60)  # well past what the client saw

    _, url = await services.start(session)
    await finish_adopted(session, url, reader, docker_client)
    assert reader.said("lines read back")


async def test_sigterm_leaves_the_build_running_and_exits_at_once(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    proc, url = await services.start(session)
    reader = Client(await submit(session, url, build_dir("gapped")))
    stopping: list[float] = []

    def stop_at_line_10(event: dict[str, Any]) -> bool:
        if not stopping and line_at_least(10)(event):
            stopping.append(time.monotonic())
            proc.send_signal(signal.SIGTERM)
        return False

    # The stream is open when the service stops: it ends with the service; the job goes on.
    await reader.read(session, url, until=stop_at_line_10)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    assert time.monotonic() - stopping[0] < 10
    assert reader.end is None
    assert reader.said("picked up again when the service is back")
    assert container_of(docker_client, reader.job_id).status == "running"
    await printed_past(docker_client, reader.job_id, 60)

    _, url = await services.start(session)
    await finish_adopted(session, url, reader, docker_client)


async def test_a_build_that_ended_while_no_service_ran_is_finished_as_if_watched(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    proc, url = await services.start(session)
    reader = Client(await submit(session, url, build_dir("gapped")))
    await reader.read(session, url, until=line_at_least(10))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    release(docker_client, reader.job_id)
    assert container_of(docker_client, reader.job_id).wait(timeout=60)["StatusCode"] == 0

    _, url = await services.start(session)
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    assert reader.end["exit_code"] == 0
    reader.check_every_line_once()
    assert reader.said("it had ended meanwhile")
    assert job_containers(docker_client, reader.job_id) == []


async def test_cancel_right_after_adoption_leaves_nothing(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    proc, url = await services.start(session)
    job_id = await submit(session, url, build_dir("gapped"))
    await Client(job_id).read(session, url, until=line_at_least(3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    _, url = await services.start(session)
    async with session.post(f"{url}/v1/jobs/{job_id}/cancel") as response:
        body = await response.json()
        assert response.status == 200, body
    assert body["status"] == "cancelled"
    assert job_containers(docker_client, job_id) == []


async def test_a_timeout_that_falls_while_the_service_is_down_ends_the_build_on_start(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    proc, url = await services.start(session)
    job_id = await submit(session, url, build_dir("gapped"), timeout_s="60")
    await Client(job_id).read(session, url, until=line_at_least(3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Its minute runs out while no service runs (the store's clock moved, not the test's).
    await asyncio.to_thread(_move_start, services.settings, job_id, time.time() - 61)
    assert container_of(docker_client, job_id).status == "running"

    _, url = await services.start(session)
    reader = Client(job_id)
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "timed_out", reader.end
    assert reader.said("Service restarted: build adopted")
    assert job_containers(docker_client, job_id) == []


def _move_start(settings: Settings, job_id: str, started_at: float) -> None:
    with contextlib.closing(sqlite3.connect(settings.data_dir / "orchestrator.db")) as conn:
        conn.execute("UPDATE jobs SET started_at = ? WHERE id = ?", (started_at, job_id))
        conn.commit()


async def test_a_container_removed_while_the_service_is_down_ends_interrupted(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    proc, url = await services.start(session)
    job_id = await submit(session, url, build_dir("gapped"))
    await Client(job_id).read(session, url, until=line_at_least(3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    container_of(docker_client, job_id).remove(force=True)

    _, url = await services.start(session)
    record = await job(session, url, job_id)
    assert record["status"] == "interrupted"
    assert "container is gone" in record["reason"]


async def test_a_second_service_on_the_same_data_dir_refuses_to_start(
    services: Services, session: aiohttp.ClientSession
) -> None:
    await services.start(session)
    second, _ = services.spawn()
    assert await asyncio.to_thread(second.wait, 30) == 1
    assert "already runs on the data directory" in services.output(1)


async def test_a_drain_waits_for_the_running_build_before_it_exits(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    proc, url = await services.start(session, "--drain")
    reader = Client(await submit(session, url, build_dir("gapped")))
    await reader.read(session, url, until=line_at_least(3))
    proc.send_signal(signal.SIGTERM)
    await printed_past(docker_client, reader.job_id, 10)
    assert proc.poll() is None  # still waiting for the build
    release(docker_client, reader.job_id)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    assert job_containers(docker_client, reader.job_id) == []

    _, url = await services.start(session)
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    reader.check_every_line_once()


def rustc_runs(client: docker.DockerClient, job_id: str) -> bool:
    processes = container_of(client, job_id).top(ps_args="-o pid,comm")["Processes"] or []
    return any(row[-1] == "rustc" for row in processes)


async def test_a_published_crate_survives_a_kill_9_during_rustc(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    """hexyl from the crate registry, cold (no cache): the service dies while rustc compiles
    its dependencies; the next one adopts the build, which ends with a working package, and
    cargo's lines are each stored once."""
    proc, url = await services.start(session)
    reader = Client(await submit(session, url, build_dir("hexyl"), cache="off"))
    await reader.read(session, url, until=has("Compiling "), timeout_s=300)
    deadline = time.monotonic() + 120
    while not rustc_runs(docker_client, reader.job_id):
        assert time.monotonic() < deadline, "rustc never ran"
        await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    _, url = await services.start(session)
    await reader.read(session, url, timeout_s=900)
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    assert reader.said("Service restarted: build adopted")
    compiled = reader.lines("stderr", r"\s*Compiling \S+ v\S+.*")
    assert any(" hexyl v0.17.0" in line for line in compiled)
    assert len(compiled) == len(set(compiled)), "a line was stored twice"
    async with session.get(f"{url}/v1/jobs/{reader.job_id}/artifacts") as response:
        [artifact] = (await response.json())["artifacts"]
    async with session.get(f"{url}{artifact['url']}") as response:
        package = await response.read()
    with tarfile.open(fileobj=io.BytesIO(package)) as tar:
        assert "usr/bin/hexyl" in tar.getnames()
    assert job_containers(docker_client, reader.job_id) == []
