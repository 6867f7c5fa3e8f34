"""What a service killed around reproduce's inputs leaves, and what the next start does with it.

An upload is kept (``artifacts/{job}/inputs.tar``, staged as ``.new-inputs.tar``) before its
job is stored: a kill -9 in between leaves kept inputs that no job will ever own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import Settings

from .conftest import serve
from .service import submit, wait_status

pytestmark = pytest.mark.docker


async def test_inputs_an_upload_killed_before_its_job_was_stored_are_removed_at_start(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    async with serve(settings) as client:
        built = (await submit(client, build_dir("hello-c")))["job_id"]
        assert (await wait_status(client, built, {"succeeded", "failed"}))["status"] == "succeeded"
    kept = sorted(p.name for p in (settings.artifacts_dir / built).iterdir())
    assert "inputs.tar" in kept
    # As a kill leaves them: one renamed into place, one still being written.
    unowned = {uuid.uuid4().hex: "inputs.tar", uuid.uuid4().hex: ".new-inputs.tar"}
    for job_id, name in unowned.items():
        (settings.artifacts_dir / job_id).mkdir()
        (settings.artifacts_dir / job_id / name).write_bytes(b"\0" * 4096)

    async with serve(settings) as client:
        for job_id in unowned:
            assert not (settings.artifacts_dir / job_id).exists()
        assert sorted(p.name for p in (settings.artifacts_dir / built).iterdir()) == kept
        job = await (await client.get(f"/v1/jobs/{built}")).json()
        assert job["status"] == "succeeded"
