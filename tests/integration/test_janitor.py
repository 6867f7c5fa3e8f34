"""Nothing is left behind when the daemon fails a removal: a proxy in front of the real daemon's
socket refuses removals (500) or holds them past ``docker_timeout_s``, and the janitor removes
what the build could not; and what no live job owns is swept up by its label."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import docker
import pytest

from orchestrator import Settings
from orchestrator.build.runner import INSPECT_LABEL, INSTANCE_LABEL, JOB_LABEL

from .. import waiting
from .conftest import job_containers, serve
from .daemon_proxy import DaemonProxy
from .service import has_line, read_sse, submit, wait_status

pytestmark = pytest.mark.docker

# tenacity's attempts for one removal (backend/docker.py): all of them refused, it fails for good.
ATTEMPTS = 4


async def gone(client: docker.DockerClient, label: str, timeout_s: float = 60) -> list[str]:
    """The containers carrying ``label``, once none is left or ``timeout_s`` has passed (polled:
    the daemon tells no one when a container goes; the service runs on this loop meanwhile)."""

    def listed() -> list[str]:
        found = client.containers.list(ignore_removed=True, all=True, filters={"label": label})
        return [str(c.name) for c in found]

    return await waiting.until(
        lambda: asyncio.to_thread(listed),
        lambda found: not found,
        timeout_s=timeout_s,
        interval_s=0.2,
        on_timeout="return",
    )


@pytest.mark.parametrize("how", ["refuse", "hold"])
async def test_a_build_container_the_daemon_would_not_remove_is_removed_by_the_janitor(
    settings: Settings,
    proxy: DaemonProxy,
    docker_client: docker.DockerClient,
    build_dir: Callable[..., Path],
    how: Literal["refuse", "hold"],
) -> None:
    settings = settings.model_copy(
        update={"docker_url": proxy.url, "docker_timeout_s": 10.0, "caches": False}
    )
    async with serve(settings) as client:
        job_id = (await submit(client, build_dir("hello-c")))["job_id"]
        started = await read_sse(client, job_id, until=lambda e: e["action"] == "build_started")
        [made] = [e["message"] for e in started.events if e["action"] == "container_created"]
        container = made.split()[1]  # "Container <id> created from <image>"
        proxy.spoil_removals(ATTEMPTS if how == "refuse" else 1, how, of=container)
        job = await wait_status(client, job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded"  # the build's outcome stands
        assert len(proxy.spoiled) == (ATTEMPTS if how == "refuse" else 1)
        stream = await read_sse(client, job_id)
        assert any(m.startswith("Could not remove the container") for m in stream.messages())
        assert await gone(docker_client, f"{JOB_LABEL}={job_id}") == []
        metrics = await (await client.get("/metrics")).text()
        assert "orchestrator_removals_failed_total 1.0" in metrics
        assert 'orchestrator_janitor_removed_total{how="retry"} 1.0' in metrics


async def test_what_no_live_job_owns_is_swept_up_and_a_running_build_is_not(
    settings: Settings, docker_client: docker.DockerClient, build_dir: Callable[..., Path]
) -> None:
    settings = settings.model_copy(
        update={"caches": False, "janitor_interval_s": 0.5, "janitor_grace_s": 2.0}
    )
    async with serve(settings) as client:
        job_id = (await submit(client, build_dir("forker", marker=uuid.uuid4().hex)))["job_id"]
        await read_sse(client, job_id, until=has_line("children started"))
        # What a reading whose removal failed leaves: this instance's, its job long over.
        orphan = docker_client.containers.run(
            settings.image_cpu,
            ["sleep", "300"],
            labels={INSTANCE_LABEL: settings.instance_id, INSPECT_LABEL: "an-ended-job"},
            detach=True,
        )
        assert await gone(docker_client, f"{INSPECT_LABEL}=an-ended-job") == []
        assert job_containers(docker_client, job_id, settle=False) != []  # live: untouched
        await client.post(f"/v1/jobs/{job_id}/cancel")
        await wait_status(client, job_id, {"cancelled"})
        metrics = await (await client.get("/metrics")).text()
        assert 'orchestrator_janitor_removed_total{how="sweep"} 1.0' in metrics
    assert orphan.id not in {
        c.id for c in docker_client.containers.list(ignore_removed=True, all=True)
    }
