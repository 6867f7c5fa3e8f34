"""Operations through ``POST /v1/jobs`` on the fake backend, as a client sees them: a catalog
worker installed, a model downloaded from a local HTTP server, one job per subject, and an
unknown operation refused. (``test_api_wire`` checks these answers' shapes; this checks what
they do.)"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.narration import sse

from .. import waiting

MODEL = b"GGUF" + bytes(range(256)) * 64
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()
WORKER_BINARY = b"#!/bin/sh\necho hello from the worker\n"


def package_with(path: str, data: bytes) -> bytes:
    """A package (a gzipped tar) holding one executable file at ``path``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class Origin:
    """A model server; ``hold`` keeps every answer waiting until it is set."""

    url: str
    hold: asyncio.Event
    requests: int = 0


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    state = Origin("", asyncio.Event())
    state.hold.set()

    async def model(request: web.Request) -> web.Response:
        state.requests += 1
        await state.hold.wait()
        return web.Response(body=MODEL, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/org/tiny/resolve/{revision}/tiny.gguf", model)
    server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
    await server.start_server()
    state.url = str(server.make_url("/org/tiny/resolve/main/tiny.gguf"))
    yield state
    state.hold.set()
    await server.close()


@pytest.fixture
def settings_with_hf(settings: Settings, origin: Origin) -> Settings:
    """hf:// names resolve to the local origin."""
    base = origin.url.split("/org/")[0]
    template = base + "/{repo}/resolve/{revision}/{file}"
    return settings.model_copy(update={"model_url_template": template})


async def start(client: TestClient, body: dict[str, Any]) -> str:
    response = await client.post("/v1/jobs", json=body)
    created = await response.json()
    assert response.status == 201, created
    assert response.headers["Location"] == f"/v1/jobs/{created['job_id']}"
    return str(created["job_id"])


async def job_until(
    client: TestClient, job_id: str, done: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    async def job() -> dict[str, Any]:
        return dict(await (await client.get(f"/v1/jobs/{job_id}")).json())

    return await waiting.until(job, done, what=f"job {job_id} {what}")


async def finished(client: TestClient, job_id: str) -> dict[str, Any]:
    return await job_until(client, job_id, lambda j: j["finished_at"] is not None, "finished")


async def until_running(client: TestClient, job_id: str) -> None:
    await job_until(client, job_id, lambda j: j["status"] == "running", "running")


async def narration(client: TestClient, job_id: str) -> list[str]:
    response = await client.get(f"/v1/jobs/{job_id}/stream")
    messages = [m async for m in sse.messages(response.content.iter_any())]
    return [m.json()["message"] for m in messages if not (m.is_end or m.is_done)]


async def refusal(client: TestClient, body: dict[str, Any], status: int) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body)
    answer: dict[str, Any] = await response.json()
    assert response.status == status, answer
    return answer


async def test_worker_install_builds_the_catalog_worker_and_installs_its_binary(
    settings: Settings,
) -> None:
    package = package_with("usr/bin/hello-worker-c", WORKER_BINARY)
    backend = FakeBackend(Script(packages={"hello-c-1.0.0-1-x86_64.pkg.tar.gz": package}))
    async with TestClient(TestServer(create_app(settings, backend=backend))) as client:
        job_id = await start(client, {"operation": "worker_install", "worker_id": "hello-c"})
        job = await finished(client, job_id)

        assert job["status"] == "succeeded", job
        assert (job["operation"], job["pkgname"], job["pkgver"]) == (
            "worker_install",
            "hello-c",
            "1.0.0",
        )
        assert job["variant"] == "cpu"
        worker = await (await client.get("/v1/workers/hello-c")).json()
        assert worker["job_id"] == job_id and worker["version"] == "1.0.0"
        assert worker["sha256"] == hashlib.sha256(WORKER_BINARY).hexdigest()
        installed = settings.workers_dir.joinpath(worker["path"]).resolve()
        assert installed.read_bytes() == WORKER_BINARY
        said = await narration(client, job_id)
        assert said[0].startswith("📥 Queued install of")
        assert "✅ Worker hello-c 1.0.0 installed" in said


async def test_worker_install_of_a_package_without_the_binary_fails_and_installs_nothing(
    settings: Settings,
) -> None:
    # The fake's default package holds no usr/bin/hello-worker-c.
    async with TestClient(TestServer(create_app(settings, backend=FakeBackend()))) as client:
        job_id = await start(client, {"operation": "worker_install", "worker_id": "hello-c"})
        job = await finished(client, job_id)
        assert job["status"] == "failed" and "install of hello-c failed" in job["reason"]
        assert (await client.get("/v1/workers/hello-c")).status == 404


async def test_model_download_fetches_verifies_and_lists_the_model(
    settings_with_hf: Settings, origin: Origin
) -> None:
    settings = settings_with_hf
    async with TestClient(TestServer(create_app(settings, backend=FakeBackend()))) as client:
        body = {"operation": "model_download", "url": origin.url, "name": "tiny.gguf"}
        job_id = await start(client, {**body, "sha256": MODEL_SHA.upper()})
        job = await finished(client, job_id)

        assert job["status"] == "succeeded", job
        assert (job["operation"], job["pkgname"]) == ("model_download", "tiny.gguf")
        assert (settings.models_dir / "tiny.gguf").read_bytes() == MODEL
        [model] = (await (await client.get("/v1/models")).json())["models"]
        assert (model["name"], model["sha256"], model["size_bytes"]) == (
            "tiny.gguf",
            MODEL_SHA,
            len(MODEL),
        )
        assert model["url"] == origin.url

        # hf://REPO/FILE@REVISION goes through the settings' template.
        hf = {"operation": "model_download", "url": "hf://org/tiny/tiny.gguf@v2", "name": "b.gguf"}
        job = await finished(client, await start(client, hf))
        assert job["status"] == "succeeded", job
        assert (settings.models_dir / "b.gguf").read_bytes() == MODEL


async def test_a_model_with_the_wrong_sha256_is_not_kept(
    settings: Settings, origin: Origin
) -> None:
    async with TestClient(TestServer(create_app(settings, backend=FakeBackend()))) as client:
        body = {"operation": "model_download", "url": origin.url, "name": "tiny.gguf"}
        job = await finished(client, await start(client, {**body, "sha256": "0" * 64}))
        assert job["status"] == "failed" and "sha256 mismatch" in job["reason"]
        assert not (settings.models_dir / "tiny.gguf").exists()
        assert (await (await client.get("/v1/models")).json())["models"] == []


async def test_a_second_job_on_the_same_subject_is_a_409_until_the_first_ends(
    settings: Settings, origin: Origin
) -> None:
    origin.hold.clear()  # the first download waits on the server
    slow = Script([("stdout", "started", 0), ("stdout", "never printed", 60)])
    async with TestClient(TestServer(create_app(settings, backend=FakeBackend(slow)))) as client:
        download = {"operation": "model_download", "url": origin.url, "name": "tiny.gguf"}
        first = await start(client, download)
        await until_running(client, first)
        busy = await refusal(client, download, 409)
        assert busy["error"] == "conflict" and busy["status"] == "running"
        assert first in busy["message"]
        assert (await client.delete("/v1/models/tiny.gguf")).status == 409
        # Another name is another subject.
        other = await start(client, {**download, "name": "other.gguf"})

        install = {"operation": "worker_install", "worker_id": "hello-c"}
        installing = await start(client, install)  # queued: both slots are taken
        assert installing in (await refusal(client, install, 409))["message"]

        for job_id in (first, other, installing):
            assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status == 200
        origin.hold.set()
        again = await finished(client, await start(client, download))
        assert again["status"] == "succeeded", again


@pytest.mark.parametrize("body", [{"operation": "nap"}, {}, {"operation": None}])
async def test_an_unknown_operation_is_a_422_naming_the_known_ones(
    settings: Settings, body: dict[str, Any]
) -> None:
    async with TestClient(TestServer(create_app(settings, backend=FakeBackend()))) as client:
        answer = await refusal(client, body, 422)
        assert answer["error"] == "unknown_operation"
        assert answer["operations"] == ["worker_install", "model_download", "reproduce"]
        assert (await (await client.get("/v1/jobs")).json())["total"] == 0
