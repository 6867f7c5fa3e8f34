"""A running build outlives the service (`orchestrator serve` as a real process, real makepkg).

The build (``gapped``) prints numbered lines until the test releases it, so it prints before,
during and after the time no service watches; a client that resumes with ``Last-Event-ID``
must see every line exactly once, in order, and the build must end as if it had been watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import signal
import sqlite3
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from orchestrator import Settings

from .. import waiting
from .adoption import (
    Client,
    Services,
    a_build_survives_a_kill_9,
    container_of,
    ended_with_its_package,
    finish_adopted,
    has,
    job,
    kill_and_restart,
    line_at_least,
    printed_past,
    release,
    submit,
)
from .conftest import job_containers

pytestmark = pytest.mark.docker


async def test_a_build_survives_a_kill_9_of_the_service(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    await a_build_survives_a_kill_9(services, session, build_dir("gapped"), docker_client)


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

    def end(job_id: str) -> None:
        release(docker_client, job_id)
        assert container_of(docker_client, job_id).wait(timeout=60)["StatusCode"] == 0

    reader, _, url = await kill_and_restart(
        services, session, build_dir("gapped"), signal.SIGKILL, meanwhile=end
    )
    await ended_with_its_package(session, url, reader, docker_client)
    assert reader.end is not None and reader.end["exit_code"] == 0
    assert reader.said("it had ended meanwhile")


async def test_cancel_right_after_adoption_leaves_nothing(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    reader, _, url = await kill_and_restart(
        services, session, build_dir("gapped"), signal.SIGKILL, lines=3
    )
    job_id = reader.job_id
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

    async def run_out(job_id: str) -> None:
        # Its minute runs out while no service runs (the store's clock moved, not the test's).
        await asyncio.to_thread(_move_start, services.settings, job_id, time.time() - 61)
        assert container_of(docker_client, job_id).status == "running"

    reader, _, url = await kill_and_restart(
        services, session, build_dir("gapped"), lines=3, meanwhile=run_out, timeout_s="60"
    )
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "timed_out", reader.end
    assert reader.said("Service restarted: build adopted")
    assert job_containers(docker_client, reader.job_id) == []


async def test_a_log_rotated_while_no_service_ran_is_not_read_back_from_the_wrong_line(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    """The build's json-file log (capped at 8 KiB) is rotated while no service runs, and then
    holds more lines than the store: counting the store's lines from its start would skip
    lines the store never had. The next service tells the rotated log apart, says plainly that
    lines were lost, and stores the log from its first line on: no line twice, none skipped
    that the log still holds."""
    services.extra_env["ORCHESTRATOR_BUILD_LOG_MAX_BYTES"] = str(8 * 1024)
    held: list[int] = []

    def numbered(container: Any) -> list[int]:
        text = container.logs(stdout=True, stderr=False).decode()
        return [int(n) for n in re.findall(r"^line (\d+)$", text, re.MULTILINE)]

    def signal_build(job_id: str, sig: str) -> None:
        # Every process of the build but the container's first (no freezer cgroup here).
        done = container_of(docker_client, job_id).exec_run(
            ["bash", "-c", f"kill {sig} -1"], user="builder"
        )
        assert done.exit_code == 0, done.output

    def frozen_once_rotated(job_id: str) -> bool:
        # Stopped while its log is as wanted, so the next service reads back that log.
        signal_build(job_id, "-STOP")
        held[:] = numbered(container_of(docker_client, job_id))
        if held and held[0] > 1 and len(held) > 40:
            return True
        signal_build(job_id, "-CONT")
        return False

    async def rotate(job_id: str) -> None:
        await waiting.until(
            lambda: frozen_once_rotated(job_id),
            timeout_s=120,
            interval_s=0.2,
            what="the log rotated, then holding more lines than the store",
        )

    reader, _, url = await kill_and_restart(
        services, session, build_dir("gapped"), signal.SIGKILL, meanwhile=rotate
    )
    await reader.read(session, url, until=has("Service restarted: build adopted"))
    out = [int(line.split()[1]) for line in reader.lines("stdout", r"line \d+")]
    # Lines 1 to ``before`` were stored before the kill; the rotation took some after them.
    before = next((i for i, n in enumerate(out) if n != i + 1), len(out))
    assert out[before:] == held, "the read back did not start at the log's first line"
    assert before < held[0] - 1
    assert reader.said("lost"), "the lines the rotated log no longer held were not said lost"

    # Cancelled still stopped: Docker 20.10's follow read doubles lines across a rotation
    # (``docker logs -f`` too), which no service can undo; the log holds still here.
    async with session.post(f"{url}/v1/jobs/{reader.job_id}/cancel") as response:
        assert response.status == 200, await response.json()
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "cancelled", reader.end
    for stream, pattern in (("stdout", r"line \d+"), ("stderr", r"err \d+")):
        numbers = [int(line.split()[1]) for line in reader.lines(stream, pattern)]
        assert numbers == sorted(set(numbers)), f"a line of {stream} stored twice"


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
    reader, _, url = await kill_and_restart(
        services,
        session,
        build_dir("gapped"),
        lines=3,
        meanwhile=lambda job_id: container_of(docker_client, job_id).remove(force=True),
    )
    record = await job(session, url, reader.job_id)
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
    await waiting.until(
        lambda: rustc_runs(docker_client, reader.job_id),
        timeout_s=120,
        interval_s=0.2,
        what="rustc running",
    )
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
