"""`orchestrator serve` processes that follow one another on one data directory, a client
whose view of a job's stream goes across them (it resumes with Last-Event-ID), and the steps
the adoption tests share: a service stopped under a running build, the next one finishing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker

from orchestrator import Settings
from orchestrator.narration import sse

from .. import waiting
from .conftest import job_containers
from .service import tar_dir
from .test_serve import free_port, wait_healthy


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


async def printed_past(
    client: docker.DockerClient, job_id: str, n: int, timeout_s: float = 30
) -> None:
    """Until the build's log (the engine's) holds line ``n``: it printed while unwatched (its
    tail is enough: lines only grow)."""
    container = container_of(client, job_id)
    line = f"line {n}\n".encode()
    await waiting.until(
        lambda: line in container.logs(stdout=True, stderr=False, tail=20000),
        timeout_s=timeout_s,
        interval_s=0.1,
        what=f"line {n} in the build's log",
    )


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
    """On the new service: the adopted stream goes on; released, the build ends as
    ``ended_with_its_package`` says."""
    await reader.read(session, url, until=has("Service restarted: build adopted"))
    release(docker_client, reader.job_id)
    await ended_with_its_package(session, url, reader, docker_client)


async def ended_with_its_package(
    session: aiohttp.ClientSession,
    url: str,
    reader: Client,
    docker_client: docker.DockerClient,
) -> None:
    """The rest of the stream: the build succeeds with its package and every line once; its
    container is removed."""
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    reader.check_every_line_once()
    async with session.get(f"{url}/v1/jobs/{reader.job_id}/artifacts") as response:
        names = [a["name"] for a in (await response.json())["artifacts"]]
    assert names and names[0].startswith("gapped-1.0-1-any.pkg.tar")
    assert job_containers(docker_client, reader.job_id) == []


async def kill_and_restart(
    services: Services,
    session: aiohttp.ClientSession,
    src: Path,
    sig: signal.Signals = signal.SIGKILL,
    *,
    lines: int = 10,
    meanwhile: Callable[[str], object] | None = None,
    **params: str,
) -> tuple[Client, subprocess.Popen[bytes], str]:
    """A build of ``src`` on a new service that ``sig`` stops once its client has seen line
    ``lines`` (a SIGTERM must let it exit cleanly, a SIGKILL kill it); ``meanwhile(job_id)``
    (awaited if it answers an awaitable) while no service runs; then the next service.
    The client, the next service's process and its URL."""
    proc, url = await services.start(session)
    reader = Client(await submit(session, url, src, **params))
    await reader.read(session, url, until=line_at_least(lines))
    proc.send_signal(sig)
    assert await asyncio.to_thread(proc.wait, 10) == (0 if sig is signal.SIGTERM else -sig)
    if meanwhile is not None and inspect.isawaitable(done := meanwhile(reader.job_id)):
        await done
    proc, url = await services.start(session)
    return reader, proc, url


async def a_build_survives_a_kill_9(
    services: Services,
    session: aiohttp.ClientSession,
    src: Path,
    docker_client: docker.DockerClient,
) -> None:
    """The service killed (-9) under a build that goes on printing well past what the client
    saw; the next one adopts it, reads back what it missed, and finishes it."""
    reader, _, url = await kill_and_restart(
        services,
        session,
        src,
        signal.SIGKILL,
        meanwhile=lambda job_id: printed_past(docker_client, job_id, 60),
    )
    await finish_adopted(session, url, reader, docker_client)
    assert reader.said("lines read back")
