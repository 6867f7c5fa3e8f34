"""A full data disk: the running job ends naming the disk, new work is refused with 507, health
says so, and all of it recovers by itself once there is room again.

The data directory is a small tmpfs mounted for the test (the suite runs as root, as CI does), so
the disk really fills: SQLite, the uploads and the packages all meet ENOSPC for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator import Settings

from ..waiting import until
from .conftest import serve
from .service import has_line, read_sse, submit, tar_dir, wait_status

pytestmark = pytest.mark.docker

MiB = 1024**2


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def settings(settings: Settings, small_disk: Path) -> Settings:
    return settings.model_copy(
        update={
            "data_dir": small_disk,
            "disk_min_free_bytes": 4 * MiB,
            "disk_reserve_bytes": 8 * MiB,
            "disk_poll_s": 0.2,
            "max_concurrent_builds": 1,
        }
    )


def fill(folder: Path) -> Path:
    """Write zeros until the disk says no more."""
    filler = folder / "filler"
    block = bytes(MiB)
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(block)
            fh.flush()
    return filler


async def test_a_full_disk_ends_the_job_refuses_work_and_recovers(
    settings: Settings, build_dir: Callable[..., Path]
) -> None:
    async with serve(settings) as client:
        assert (await client.get("/health")).status == 200
        job = (await submit(client, build_dir("ticker")))["job_id"]
        waiting = (await submit(client, build_dir("hello-c")))["job_id"]
        await read_sse(client, job, until=has_line("tick 3"))

        filler = await asyncio.to_thread(fill, settings.data_dir)

        sse = await read_sse(client, job, timeout_s=60)
        assert sse.end is not None and sse.end["status"] == "failed", sse.end
        assert "the data disk is full" in sse.end["reason"]
        assert str(settings.data_dir) in sse.end["reason"]
        assert (await client.post(f"/v1/jobs/{job}/cancel")).status == 409
        # The job that was waiting still waits: it was not started on a full disk.
        assert (await (await client.get(f"/v1/jobs/{waiting}")).json())["status"] == "queued"

        refused = await client.post(
            "/v1/builds",
            data=tar_dir(build_dir("hello-c")),
            headers={"Content-Type": "application/gzip"},
        )
        body = await refused.json()
        assert refused.status == 507, body
        assert body["error"] == "insufficient_storage" and "data disk is full" in body["message"]
        health = await client.get("/health")
        report = await health.json()
        assert health.status == 503 and report["disk"]["full"], report

        filler.unlink()

        async def health_status() -> int:
            return (await client.get("/health")).status

        await until(health_status, lambda status: status == 200, interval_s=0.1, what="room")
        ended = await wait_status(client, waiting, {"succeeded", "failed"})
        assert ended["status"] == "succeeded", ended
        again = (await submit(client, build_dir("hello-c")))["job_id"]
        final = await wait_status(client, again, {"succeeded", "failed"})
        assert final["status"] == "succeeded", final


async def test_an_upload_that_would_fill_the_disk_is_refused_and_stops_nothing(
    settings: Settings, build_dir: Callable[..., Path], tmp_path: Path
) -> None:
    # Found by a hostile review: a 40 MiB upload on a 48 MiB disk was accepted, filled the
    # disk, and so stopped everyone's running build (and then waited for room it held itself).
    big = build_dir("hello-c")
    (big / "blob.bin").write_bytes(os.urandom(40 * MiB))
    async with serve(settings) as client:
        job = (await submit(client, build_dir("ticker")))["job_id"]
        await read_sse(client, job, until=has_line("tick 3"))
        refused = await client.post(
            "/v1/builds", data=tar_dir(big), headers={"Content-Type": "application/gzip"}
        )
        body = await refused.json()
        assert refused.status == 507, body
        assert "the data disk has room for" in body["message"]
        await asyncio.sleep(2 * settings.disk_poll_s)
        assert (await client.get("/health")).status == 200
        assert (await (await client.get(f"/v1/jobs/{job}")).json())["status"] == "running"
        assert (await client.post(f"/v1/jobs/{job}/cancel")).status == 200
