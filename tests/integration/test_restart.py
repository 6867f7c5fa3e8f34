"""A restart keeps the queue: queued jobs keep their sources and run afterwards, in order."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from orchestrator import Settings

from .. import waiting
from .conftest import job_containers, serve
from .service import has_line, read_sse, submit, wait_status

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A stop that cancels (the suite's): the running build ends, the queue is what is kept.
    return settings.model_copy(update={"max_concurrent_builds": 1, "on_stop": "cancel"})


async def test_queued_jobs_survive_a_graceful_restart_and_run_in_order(
    settings: Settings, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    async with serve(settings) as client:
        running = (await submit(client, build_dir("forker", marker=uuid.uuid4().hex)))["job_id"]
        await read_sse(client, running, until=has_line("children started"))
        queued = [(await submit(client, build_dir("hello-c")))["job_id"] for _ in range(3)]
        for job in queued:
            assert (await (await client.get(f"/v1/jobs/{job}")).json())["status"] == "queued"
    # Stopped as on SIGTERM: the running build is interrupted, the queue is kept with its sources.
    assert job_containers(docker_client, running) == []
    for job in queued:
        assert (settings.work_dir / job / "PKGBUILD").is_file()

    async with serve(settings) as client:
        job = await (await client.get(f"/v1/jobs/{running}")).json()
        assert (job["status"], job["cancel_reason"]) == ("interrupted", "shutdown")
        ended = [await wait_status(client, job, {"succeeded", "failed"}) for job in queued]
        assert [job["status"] for job in ended] == ["succeeded"] * 3
        # One at a time, first in first out: each started after the one before it ended.
        for before, after in itertools.pairwise(ended):
            assert before["finished_at"] <= after["started_at"]
        sse = await read_sse(client, queued[0])
        assert any("after a restart" in line for line in sse.messages())
        assert sse.end is not None and sse.end["status"] == "succeeded"
        # Sources go right after the final status is written.
        await waiting.until(
            lambda: [job for job in queued if (settings.work_dir / job).exists()],
            lambda left: not left,
            timeout_s=5,
            what="their sources gone",
        )
