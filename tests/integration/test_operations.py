"""Catalog, worker install and model download, over real HTTP, the real daemon and makepkg,
and a real local HTTP server for the model files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Settings
from orchestrator.catalog.workers import SHIPPED

from .. import waiting
from ..conftest import compiling
from .conftest import job_containers, serve
from .service import has_line, read_sse

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return compiling(settings)  # compile-bound: the service's default CPUs, not the suite's one


async def start(client: TestClient, expect: int = 201, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body)
    data = dict(await response.json())
    assert response.status == expect, data
    return data


def catalog_entry(root: Path, worker_id: str, version: str, build: str) -> None:
    """A C worker whose build() runs ``build`` first (e.g. a long sleep)."""
    folder = root / worker_id
    folder.mkdir(parents=True)
    source = f'#include <stdio.h>\nint main(void) {{ puts("{worker_id} {version}"); return 0; }}\n'
    (folder / "w.c").write_text(source)
    (folder / "PKGBUILD").write_text(
        f"pkgname={worker_id}\npkgver={version}\npkgrel=1\narch=('x86_64')\n"
        "source=('w.c')\nsha256sums=('SKIP')\n"
        f"build() {{\n    {build}\n    cc -o {worker_id} w.c\n}}\n"
        f'package() {{\n    install -Dm755 {worker_id} "$pkgdir/usr/bin/{worker_id}"\n}}\n'
    )
    meta = {
        "id": worker_id,
        "name": worker_id,
        "version": version,
        "license": "MIT",
        "worker_type": "cpu",
        "platforms": ["linux"],
        "architectures": ["x86_64"],
        "binary_name": worker_id,
    }
    (folder / "worker.json").write_text(json.dumps(meta))


async def checked_catalog(client: TestClient) -> dict[str, Any]:
    """The catalog's listing once makepkg has read its PKGBUILDs (beside start-up)."""

    async def listing() -> dict[str, Any]:
        return dict(await (await client.get("/v1/catalog/workers")).json())

    return await waiting.until(
        listing, lambda listed: listed["checked"], timeout_s=60, interval_s=0.1, what="the check"
    )


async def test_catalog_endpoints(client: TestClient) -> None:
    listed = await checked_catalog(client)
    assert {w["id"] for w in listed["workers"]} == {
        "echo-worker",
        "echo-worker-cuda",
        "hello-c",
        "rust-hello",
        "rust-hello-cuda",
        "metal-hello",
    }
    # Every shipped PKGBUILD is one makepkg reads, with the version its entry says.
    assert listed["checked"] and listed["problems"] == []
    one = await (await client.get("/v1/catalog/workers/rust-hello")).json()
    assert (one["worker_type"], one["binary_name"]) == ("cpu", "rust-hello-worker")
    pkgbuild = await (await client.get("/v1/catalog/workers/rust-hello/pkgbuild")).text()
    assert "cargo build --release --offline" in pkgbuild
    assert (await client.get("/v1/catalog/workers/nope")).status == 404
    assert (await client.get("/v1/catalog/workers/nope/pkgbuild")).status == 404


async def test_a_malformed_entry_is_reported_and_skipped(
    settings: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    root = tmp_path / "catalog"
    catalog_entry(root, "good", "1.0", "true")
    catalog_entry(root, "bad-field", "1.0", "true")
    meta = json.loads((root / "bad-field" / "worker.json").read_text())
    meta["worker_type"] = "tpu"
    (root / "bad-field" / "worker.json").write_text(json.dumps(meta))
    catalog_entry(root, "bad-pkgbuild", "1.0", "true")
    (root / "bad-pkgbuild" / "PKGBUILD").write_text(
        "pkgname=x\npkgver=1:0\npkgrel=1\narch=(any)\npackage() { :; }\n"
    )
    catalog_entry(root, "bad-version", "2.0", "true")
    text = (root / "bad-version" / "PKGBUILD").read_text()
    (root / "bad-version" / "PKGBUILD").write_text(text.replace("pkgver=2.0", "pkgver=3.0"))
    async with serve(settings.model_copy(update={"catalog": str(root)})) as client:
        listed = await checked_catalog(client)
    assert listed["checked"]
    assert [w["id"] for w in listed["workers"]] == ["good"]
    problems = "\n".join(listed["problems"])
    assert "'bad-field': worker_type" in problems
    # makepkg read them (in its sandbox), and said why not.
    assert "'bad-pkgbuild': pkgbuild: makepkg refused the PKGBUILD: " in problems
    assert "pkgver is not allowed to contain colons" in problems
    assert "'bad-version': pkgbuild: version '2.0' does not match the PKGBUILD's" in problems


@pytest.mark.parametrize(
    ("worker_id", "binary", "says"),
    [
        ("hello-c", "hello-worker-c", "hello-worker-c: ready (cpu)"),
        ("rust-hello", "rust-hello-worker", "rust-hello-worker: ready (cpu)"),
    ],
)
async def test_install_builds_and_the_binary_runs(
    client: TestClient, settings: Settings, worker_id: str, binary: str, says: str
) -> None:
    job = await start(client, operation="worker_install", worker_id=worker_id)
    assert set(job) >= {"job_id", "sse_url"}
    sse = await read_sse(client, job["job_id"], timeout_s=300)
    assert sse.end is not None and sse.end["status"] == "succeeded", sse.messages()[-15:]
    assert (
        sse.messages()[-1]
        == f"✅ Worker {worker_id} {'1.0.0' if worker_id == 'hello-c' else '0.2.0'} installed"
    )

    installed = await (await client.get(f"/v1/workers/{worker_id}")).json()
    path = Path(installed["path"])
    assert path.name == binary
    assert hashlib.sha256(path.read_bytes()).hexdigest() == installed["sha256"]
    assert subprocess.run([path], capture_output=True, text=True, check=True).stdout.strip() == says
    listed = await (await client.get("/v1/workers")).json()
    assert [w["id"] for w in listed["workers"]] == [worker_id]

    removed = await client.delete(f"/v1/workers/{worker_id}")
    assert removed.status == 200
    assert not path.exists()
    assert (await client.get(f"/v1/workers/{worker_id}")).status == 404
    assert (await client.delete(f"/v1/workers/{worker_id}")).status == 404


async def test_cancel_mid_install_keeps_the_previous_version(
    settings: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    first, second = tmp_path / "v1", tmp_path / "v2"
    catalog_entry(first, "w", "1.0", "true")
    catalog_entry(second, "w", "2.0", "echo slow-build-started; sleep 300")
    async with serve(settings.model_copy(update={"catalog": str(first)})) as client:
        job = await start(client, operation="worker_install", worker_id="w")
        assert (await read_sse(client, job["job_id"])).end["status"] == "succeeded"  # type: ignore[index]
        before = await (await client.get("/v1/workers/w")).json()

    async with serve(settings.model_copy(update={"catalog": str(second)})) as client:
        job = await start(client, operation="worker_install", worker_id="w")
        await read_sse(client, job["job_id"], until=has_line("slow-build-started"))
        busy = await client.delete("/v1/workers/w")
        assert busy.status == 409  # not while an install of it runs
        assert await start(client, 409, operation="worker_install", worker_id="w")
        cancelled = await (await client.post(f"/v1/jobs/{job['job_id']}/cancel")).json()
        assert cancelled["status"] == "cancelled"
        after = await (await client.get("/v1/workers/w")).json()
    assert after == before  # same version, same file, same checksum
    assert subprocess.run([after["path"]], capture_output=True, text=True).stdout.strip() == "w 1.0"
    leftovers = [p.name for p in (settings.workers_dir / "w").iterdir()]
    assert sorted(leftovers) == sorted(["current", Path(before["path"]).parent.name])
    assert job_containers(docker_client, job["job_id"]) == []


async def test_two_installs_of_one_worker_at_once_one_is_refused(
    settings: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    catalog_entry(tmp_path / "c", "w", "1.0", "sleep 300")
    async with serve(settings.model_copy(update={"catalog": str(tmp_path / "c")})) as client:
        body = {"operation": "worker_install", "worker_id": "w"}
        answers = await asyncio.gather(
            client.post("/v1/jobs", json=body), client.post("/v1/jobs", json=body)
        )
        assert sorted(a.status for a in answers) == [201, 409]
        [accepted] = [await a.json() for a in answers if a.status == 201]
        cancelled = await client.post(f"/v1/jobs/{accepted['job_id']}/cancel")
        assert (await cancelled.json())["status"] == "cancelled"


@pytest.mark.timeout(900)
async def test_the_http_worker_builds_with_its_crates_and_serves(
    client: TestClient, settings: Settings
) -> None:
    # A real worker: axum, tokio, clap, serde from the crate registry, compiled by cargo.
    job = await start(client, operation="worker_install", worker_id="echo-worker")
    sse = await read_sse(client, job["job_id"], timeout_s=600)
    assert sse.end is not None and sse.end["status"] == "succeeded", sse.messages()[-15:]
    assert sum(m.strip().startswith("Compiling ") for m in sse.messages()) >= 20
    installed = await (await client.get("/v1/workers/echo-worker")).json()
    worker = await asyncio.create_subprocess_exec(
        installed["path"], "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert worker.stdout is not None
        banner = (await asyncio.wait_for(worker.stdout.readline(), 10)).decode().strip()
        assert banner.startswith("echo-worker 0.3.0 cpu listening on 127.0.0.1:"), banner
        port = int(banner.rsplit(":", 1)[1])
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/v1/infer", json={"prompt": "tokens one by one"}
            ) as answer,
        ):
            assert await answer.json() == {
                "tokens": ["tokens", "one", "by", "one"],
                "variant": "cpu",
            }
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 10)


@pytest.mark.cuda
@pytest.mark.timeout(900)
async def test_the_cuda_worker_builds_in_the_cuda_image_without_a_gpu(
    settings: Settings,
) -> None:
    async with serve(settings) as client:
        job = await start(client, operation="worker_install", worker_id="echo-worker-cuda")
        sse = await read_sse(client, job["job_id"], timeout_s=600)
        assert sse.end is not None and sse.end["status"] == "succeeded", sse.messages()[-15:]
        assert any("without a GPU" in m and "cannot run here" in m for m in sse.messages())
        assert any(f"from {settings.image_cuda}" in m for m in sse.messages())
        installed = await (await client.get("/v1/workers/echo-worker-cuda")).json()
    out = subprocess.run(
        [installed["path"], "--describe"], capture_output=True, text=True, check=True
    ).stdout
    # nvcc compiled its kernel to PTX, which the binary carries; describing it needs no GPU.
    assert out.startswith("echo-worker 0.3.0 cuda (kernel: "), out
    assert "bytes of PTX" in out


async def test_operation_errors(client: TestClient) -> None:
    metal = await start(client, 422, operation="worker_install", worker_id="metal-hello")
    assert "macOS" in metal["message"]
    unknown = await start(client, 422, operation="frobnicate")
    assert unknown["operations"] == ["worker_install", "model_download", "reproduce"]
    assert await start(client, 404, operation="worker_install", worker_id="nope")
    assert await start(client, 400, operation="worker_install")
    assert await start(client, 400, operation="model_download", url="ftp://x/y", name="m")
    assert await start(client, 400, operation="model_download", url="http://x/y", name="../m")
    bad = await client.post(
        "/v1/jobs", data=b"not json", headers={"Content-Type": "application/json"}
    )
    assert bad.status == 400


# -- model download --------------------------------------------------------------------------

PAYLOAD = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)  # 3 MiB


@asynccontextmanager
async def model_server(
    *, cut_first_after: int | None = None, delay_s: float = 0.0
) -> AsyncIterator[tuple[str, list[str | None]]]:
    """A real HTTP server on 127.0.0.1 serving PAYLOAD with Range support."""
    ranges: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Range")
        ranges.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        response = web.StreamResponse(status=206 if header else 200)
        response.content_length = len(PAYLOAD) - start
        if header:
            response.headers["Content-Range"] = f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
        await response.prepare(request)
        sent = 0
        for offset in range(start, len(PAYLOAD), 256 * 1024):
            chunk = PAYLOAD[offset : offset + 256 * 1024]
            if cut_first_after is not None and len(ranges) == 1 and sent >= cut_first_after:
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-body
                return response
            await response.write(chunk)
            sent += len(chunk)
            if delay_s:
                await asyncio.sleep(delay_s)
        return response

    app = web.Application()
    app.router.add_get("/model.bin", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/model.bin")), ranges
    finally:
        await server.close()


async def test_model_download_resumes_verifies_and_lists(
    client: TestClient, settings: Settings
) -> None:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    async with model_server(cut_first_after=1024 * 1024) as (url, ranges):
        job = await start(client, operation="model_download", url=url, name="m.bin", sha256=digest)
        sse = await read_sse(client, job["job_id"])
    assert sse.end is not None and sse.end["status"] == "succeeded", sse.messages()
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert any("resuming" in m for m in sse.messages())
    assert any(e["action"] == "progress" for e in sse.events)
    assert (settings.models_dir / "m.bin").read_bytes() == PAYLOAD
    models = await (await client.get("/v1/models")).json()
    assert [(m["name"], m["sha256"]) for m in models["models"]] == [("m.bin", digest)]
    assert (await client.delete("/v1/models/m.bin")).status == 200
    assert not (settings.models_dir / "m.bin").exists()
    assert (await client.delete("/v1/models/m.bin")).status == 404


async def test_model_download_rejects_a_wrong_checksum(
    client: TestClient, settings: Settings
) -> None:
    async with model_server() as (url, _):
        job = await start(
            client, operation="model_download", url=url, name="m.bin", sha256="0" * 64
        )
        sse = await read_sse(client, job["job_id"])
    assert sse.end is not None and sse.end["status"] == "failed"
    assert "sha256 mismatch" in sse.messages()[-1]
    assert not (settings.models_dir / "m.bin").exists()
    assert list((settings.models_dir / ".partial").glob("*")) == []


async def test_cancel_stops_a_download_and_removes_the_partial_file(
    client: TestClient, settings: Settings
) -> None:
    async with model_server(delay_s=0.5) as (url, _):
        job = await start(client, operation="model_download", url=url, name="slow.bin")
        await read_sse(client, job["job_id"], until=lambda e: e["action"] == "progress")
        assert (await client.delete("/v1/models/slow.bin")).status == 409
        cancelled = await (await client.post(f"/v1/jobs/{job['job_id']}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    assert not (settings.models_dir / "slow.bin").exists()
    assert list((settings.models_dir / ".partial").glob("*")) == []


def test_the_shipped_catalog_is_in_the_package() -> None:
    assert (SHIPPED / "rust-hello" / "PKGBUILD").is_file()
