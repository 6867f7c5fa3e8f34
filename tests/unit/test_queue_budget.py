"""The queue's share of the disk: unpacked uploads of unfinished jobs stay under one cap, 507
beyond it, and the room comes back as jobs end. Real HTTP, real files, the fake backend."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend, Script

from ..conftest import PKGBUILDS

KiB = 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "max_queued_upload_bytes": 300 * KiB,
            "max_concurrent_builds": 1,
            "disk_min_free_bytes": 0,
            "disk_reserve_bytes": 0,
        }
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    # A build that keeps running until cancelled, so the jobs behind it stay queued.
    backend = FakeBackend(Script([("stdout", "tick", 0.05)] * 2000))
    async with TestClient(TestServer(create_app(settings, backend=backend))) as client:
        yield client


def upload(padding_bytes: int) -> bytes:
    """hello-c plus a file of zeros: gzip makes it tiny, unpacked it takes its full size."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path in sorted((PKGBUILDS / "hello-c").iterdir()):
            tar.add(path, arcname=path.name)
        info = tarfile.TarInfo("padding.bin")
        info.size = padding_bytes
        tar.addfile(info, io.BytesIO(bytes(padding_bytes)))
    return out.getvalue()


async def post(client: TestClient, body: bytes) -> tuple[int, dict[str, object]]:
    response = await client.post(
        "/v1/builds", data=body, headers={"Content-Type": "application/gzip"}
    )
    return response.status, dict(await response.json())


async def test_uploads_of_unfinished_jobs_stay_under_the_cap(
    client: TestClient, settings: Settings
) -> None:
    body = upload(120 * KiB)
    assert len(body) < 4 * KiB
    first = [await post(client, body) for _ in range(2)]
    assert [status for status, _ in first] == [201, 201]
    status, refused = await post(client, body)
    assert status == 507, refused
    assert refused["error"] == "insufficient_storage"
    assert "ORCHESTRATOR_MAX_QUEUED_UPLOAD_BYTES" in str(refused["message"])
    # Nothing of the refused upload stays behind.
    assert len(list(settings.work_dir.iterdir())) == 2

    # A job ending gives its room back.
    job = str(first[1][1]["job_id"])
    assert (await client.post(f"/v1/jobs/{job}/cancel")).status == 200
    status, _ = await post(client, body)
    assert status == 201


async def test_uploads_still_arriving_hold_no_room_and_time_out(settings: Settings) -> None:
    # Found by a hostile review: four clients that sent headers announcing 100 MB and then
    # nothing held the queue's whole share, and every other upload got 507, indefinitely.
    slow = settings.model_copy(update={"upload_timeout_s": 1.0})
    async with TestClient(TestServer(create_app(slow, backend=FakeBackend()))) as client:
        stalled = []
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
            writer.write(
                b"POST /v1/builds HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/gzip\r\nContent-Length: 100000000\r\n\r\n0123456789"
            )
            await writer.drain()
            stalled.append((reader, writer))
        status, body = await post(client, upload(1024))
        assert status == 201, body
        for reader, writer in stalled:
            answer = await asyncio.wait_for(reader.read(200), 10)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            writer.close()


async def test_uploads_arriving_together_wait_for_each_other_to_unpack(settings: Settings) -> None:
    # Found by bench/run.py: 16 small uploads at once, and 8 got 507. Each claims the most it
    # may unpack to (max_build_dir_bytes) until it has unpacked, so a few claims took the whole
    # share although every upload was tiny. A claim that finds no room while others are still
    # unpacking waits for them to settle to their real size.
    crowded = settings.model_copy(update={"max_build_dir_bytes": 200 * KiB})
    async with TestClient(TestServer(create_app(crowded, backend=FakeBackend()))) as client:
        body = upload(1024)
        answers = await asyncio.gather(*(post(client, body) for _ in range(12)))
        assert [status for status, _ in answers] == [201] * 12, answers
