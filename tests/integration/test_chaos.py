"""The service killed at chosen moments of a build's life (`orchestrator serve` as a real
process, real makepkg): whatever moment, the next start must end the job as the build ended,
with its package, every line once, and nothing left behind.

Each test aims at one moment a random kill can hit; it waits on conditions (the daemon's, the
stream's), never on time.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
import docker
import pytest

from .adoption import (
    Client,
    Services,
    container_of,
    kill_and_restart,
    line_at_least,
    printed_past,
    release,
    submit,
)
from .conftest import job_containers
from .daemon_proxy import DaemonProxy

pytestmark = pytest.mark.docker


async def test_a_kill_9_once_the_finished_build_s_container_is_removed_ends_it_succeeded(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    proxy: DaemonProxy,
) -> None:
    """The build succeeded and its package is stored; the service dies after the daemon has
    removed the container but before it has written the job's end (here: before it heard the
    daemon's answer). The next start must not call a succeeded build interrupted."""
    services.extra_env["ORCHESTRATOR_DOCKER_URL"] = proxy.url
    proc, url = await services.start(session)
    reader = Client(await submit(session, url, build_dir("gapped")))
    await reader.read(session, url, until=line_at_least(3))
    proxy.spoil_removals(1, "swallow", of=container_of(docker_client, reader.job_id).id[:12])
    release(docker_client, reader.job_id)
    assert await asyncio.to_thread(proxy.swallowed.wait, 120), "the container was never removed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert job_containers(docker_client, reader.job_id) == []

    del services.extra_env["ORCHESTRATOR_DOCKER_URL"]
    _, url = await services.start(session)
    await reader.read(session, url)
    assert reader.said("📦 Stored gapped-1.0-1-any.pkg.tar")
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    reader.check_every_line_once(min_errors=0)
    async with session.get(f"{url}/v1/jobs/{reader.job_id}/artifacts") as response:
        names = [a["name"] for a in (await response.json())["artifacts"]]
    assert names and names[0].startswith("gapped-1.0-1-any.pkg.tar")


async def test_a_kill_9_before_the_build_s_container_exists_queues_the_job_again(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    proxy: DaemonProxy,
) -> None:
    """Just after the submit's 201 a worker takes the job (the store says ``running``) and sets
    its build up; the service dies before the container exists (here: its creation is held).
    Nothing had started: the next start must run it from its sources, as it does for a
    container that was created but not started, not end it ``interrupted`` because "its
    container is gone"."""
    services.extra_env["ORCHESTRATOR_DOCKER_URL"] = proxy.url
    proc, url = await services.start(session)
    proxy.hold_creates(1)
    reader = Client(await submit(session, url, build_dir("gapped")))
    assert await asyncio.to_thread(proxy.create_held.wait, 60), "no container was created"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert job_containers(docker_client, reader.job_id) == []

    del services.extra_env["ORCHESTRATOR_DOCKER_URL"]
    _, url = await services.start(session)
    await reader.read(session, url, until=line_at_least(3))
    assert reader.end is None, reader.end
    release(docker_client, reader.job_id)
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    reader.check_every_line_once(min_errors=0)


async def test_a_sigterm_while_the_finished_build_s_container_is_removed_ends_it_succeeded(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    proxy: DaemonProxy,
) -> None:
    """A SIGTERM while a slow daemon removes the container of a build that succeeded (its
    package stored): the removal outlasts the stop's grace, the service leaves the job
    ``running`` for the next start, which finds no container and ends it ``interrupted``."""
    services.extra_env.update(ORCHESTRATOR_DOCKER_URL=proxy.url, ORCHESTRATOR_DOCKER_TIMEOUT_S="10")
    proc, url = await services.start(session)
    reader = Client(await submit(session, url, build_dir("gapped")))
    await reader.read(session, url, until=line_at_least(3))
    proxy.spoil_removals(1, "swallow", of=container_of(docker_client, reader.job_id).id[:12])
    release(docker_client, reader.job_id)
    assert await asyncio.to_thread(proxy.swallowed.wait, 120), "the container was never removed"
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 60) == 0

    services.extra_env.clear()
    _, url = await services.start(session)
    await reader.read(session, url)
    assert reader.said("📦 Stored gapped-1.0-1-any.pkg.tar")
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end


async def test_a_sigterm_during_a_long_read_back_stops_the_service(
    services: Services,
    session: aiohttp.ClientSession,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    """The second service reads back ~50 000 lines a killed one missed; a SIGTERM meanwhile
    must stop it within a few seconds as at any other time (it was lost: "Exception ignored
    when trying to write to the signal wakeup fd: BlockingIOError", the loop's self-pipe full
    of the read-back's wake-ups). A third service then finishes the build, every line once."""
    reader, second, url = await kill_and_restart(
        services,
        session,
        build_dir("chaos-burst", bursts=10, mib=1),
        signal.SIGKILL,
        lines=2000,
        meanwhile=lambda job_id: printed_past(docker_client, job_id, 45000, timeout_s=180),
    )
    await Client(reader.job_id, last_id=reader.last_id).read(
        session, url, until=line_at_least(5000)
    )
    second.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(second.wait, 20)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, services.output(1)[-2000:]

    _, url = await services.start(session)
    await reader.read(session, url, until=lambda event: "build adopted" in event["message"])
    release(docker_client, reader.job_id)
    await reader.read(session, url)
    assert reader.end is not None and reader.end["status"] == "succeeded", reader.end
    reader.check_every_line_once()
