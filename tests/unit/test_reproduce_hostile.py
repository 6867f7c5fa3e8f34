"""A hostile client (or a hostile PKGBUILD, whose package a reproduction reads) against the
reproduce endpoint and the build date it reads back."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import Script
from orchestrator.build import reproduce
from orchestrator.build.reproduce import MAX_DIFFOSCOPE_PACKAGES
from orchestrator.errors import OrchestratorError
from orchestrator.storage.uploads import _tree_bytes

from ..conftest import PKGBUILDS
from ..integration.service import tar_dir
from .test_reproduce import GZ, _job, _post, _until, hello_backend

# Far more .PKGINFO than the reader may keep (it keeps 1 MiB).
HUGE_PKGINFO_BYTES = 256 * 1024 * 1024


def _pkginfo_bomb(path: Path) -> Path:
    """A package (gzip tar, a few hundred KiB) whose .PKGINFO unpacks to HUGE_PKGINFO_BYTES:
    its builddate first, then zeros."""
    head = b"pkgname = p\nbuilddate = 1700000000\n"
    info = tarfile.TarInfo(".PKGINFO")
    info.size = HUGE_PKGINFO_BYTES
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    squeeze = zlib.compressobj(1, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        out.write(squeeze.compress(header + head))
        zeros = bytes(1 << 20)
        left = HUGE_PKGINFO_BYTES - len(head)
        while left > 0:
            out.write(squeeze.compress(zeros[: min(left, len(zeros))]))
            left -= len(zeros)
        out.write(squeeze.compress(bytes(1024)))  # the end of the archive
        out.write(squeeze.flush())
    return path


def test_a_huge_pkginfo_is_not_read_into_memory(tmp_path: Path) -> None:
    """Read in a process allowed 128 MiB more address space than it has (getrusage's peak
    would count what the pytest process it was forked from held)."""
    package = _pkginfo_bomb(tmp_path / "p-1-1-x86_64.pkg.tar.gz")
    probe = (
        "import re, resource, sys\n"
        "from pathlib import Path\n"
        "from orchestrator.build.reproduce import build_date\n"
        "status = Path('/proc/self/status').read_text()\n"
        "size_kib = int(re.search(r'VmSize:\\s+(\\d+)', status).group(1))\n"
        "limit = (size_kib + 128 * 1024) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        "print(build_date(Path(sys.argv[1])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(package)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (0, "1700000000\n"), done.stderr[-2000:]


def test_a_package_that_never_ends_is_given_up_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bsdtar reading a package that never ends (a FIFO nobody writes: as a package that
    unpacks for ever) is stopped at PKGINFO_READ_TIMEOUT_S, in the request that asked."""
    monkeypatch.setattr(reproduce, "PKGINFO_READ_TIMEOUT_S", 0.5)
    fifo = tmp_path / "p-1-1-x86_64.pkg.tar.zst"
    os.mkfifo(fifo)
    with pytest.raises(OrchestratorError, match=r"more than 0.5 s"):
        reproduce.build_date(fifo)


async def _built(client: TestClient) -> str:
    upload = {"data": tar_dir(PKGBUILDS / "hello-c"), "headers": {"Content-Type": GZ}}
    built = await _post(client, "/v1/builds", **upload)
    await _until(client, built["job_id"], "succeeded")
    return str(built["job_id"])


async def test_hostile_bodies_get_client_errors(settings: Settings) -> None:
    backend = hello_backend()
    async with TestClient(TestServer(create_app(settings, backend=backend))) as client:
        job_id = await _built(client)
        bodies: list[Any] = [
            {"operation": "reproduce", "job": 123},
            {"operation": "reproduce", "job": ["x"]},
            {"operation": "reproduce", "job": None},
            {"operation": "reproduce", "job": "../../etc/passwd"},
            {"operation": "reproduce", "job": job_id, "timeout_s": "x"},
            {"operation": "reproduce", "job": job_id, "timeout_s": -1},
            {"operation": "reproduce", "job": job_id, "timeout_s": 1e309},
            {"operation": "reproduce", "job": job_id, "timeout_s": True},
            {"operation": "reproduce", "job": {"$ne": 1}},
            {"operation": "reproduce", "job": "a" * 100},
            {"operation": "reproduce", "job": "x\u0000y"},
        ]
        for body in bodies:
            answer = await client.post("/v1/jobs", json=body)
            assert 400 <= answer.status < 500, (body, answer.status, await answer.text())
        for raw in (b'{"operation": "reproduce", "job": "' + b"\xff" + b'"}', b"[]", b"1e999"):
            answer = await client.post(
                "/v1/jobs", data=raw, headers={"Content-Type": "application/json"}
            )
            assert 400 <= answer.status < 500, (raw, answer.status, await answer.text())
        for path in (
            "/v1/jobs/%2e%2e/reproduce",
            "/v1/jobs/x%00/reproduce",
            "/v1/jobs/" + "a" * 300 + "/reproduce",
        ):
            answer = await client.post(path)
            assert 400 <= answer.status < 500, (path, answer.status, await answer.text())


async def test_reproduce_of_a_reproduce_and_twice_at_once_are_refused(settings: Settings) -> None:
    backend = hello_backend()
    async with TestClient(TestServer(create_app(settings, backend=backend))) as client:
        job_id = await _built(client)
        backend.script = Script([("stdout", "started", 0), ("stdout", "never printed", 60)])
        first = await _post(client, f"/v1/jobs/{job_id}/reproduce")
        again = await client.post(f"/v1/jobs/{job_id}/reproduce")
        assert again.status == 409, await again.text()
        of_rebuild = await client.post(f"/v1/jobs/{first['job_id']}/reproduce")
        assert 400 <= of_rebuild.status < 500, await of_rebuild.text()
        extra = await client.post(
            "/v1/jobs", json={"operation": "reproduce", "job": job_id, "publish": True}
        )
        assert 400 <= extra.status < 500, await extra.text()
        assert (await client.post(f"/v1/jobs/{first['job_id']}/cancel")).status == 200
        await _until(client, first["job_id"], "cancelled")
        assert (await _job(client, job_id))["status"] == "succeeded"


async def test_a_hostile_host_header_is_no_server_error(settings: Settings) -> None:
    guarded = settings.model_copy(update={"api_token": SecretStr("t0ken")})
    async with TestClient(TestServer(create_app(guarded, backend=hello_backend()))) as client:
        for host in ("a b", "x:99999", "evil.example;rm -rf ~", "\u00e9.example", ":1"):
            answer = await client.get(
                "/v1/repo", headers={"Host": host, "Authorization": "Bearer t0ken"}
            )
            assert answer.status == 400, (host, answer.status, await answer.text())
    async with TestClient(TestServer(create_app(settings, backend=hello_backend()))) as client:
        # Without a token: a loopback name the guard lets through, with a port no URL holds.
        for host in ("localhost:99999", "127.0.0.1:99999", "[::1]:70000"):
            answer = await client.get("/v1/repo", headers={"Host": host})
            assert answer.status == 400, (host, answer.status, await answer.text())
        good = await client.get("/v1/repo", headers={"Host": "localhost:8080"})
        assert good.status == 200, await good.text()
        assert (await good.json())["key_url"].startswith("http://localhost:8080/")


async def test_diffoscope_runs_on_a_few_differing_packages_not_on_every_one(
    settings: Settings,
) -> None:
    """A PKGBUILD that makes hundreds of packages, none reproducible, gets no hundreds of
    diffoscope containers nor a report of hundreds of times 64 KiB (every job read holds it)."""
    backend = hello_backend()
    first = dict(backend.script.packages)
    many = 3 * MAX_DIFFOSCOPE_PACKAGES
    for n in range(many):
        first[f"extra{n}-1-1-x86_64.pkg.tar.gz"] = b"first"
    backend.script = Script(packages=first)
    async with TestClient(TestServer(create_app(settings, backend=backend))) as client:
        job_id = await _built(client)
        again = {name: b"again" for name in first}
        backend.script = Script([("stdout", "x" * 1000, 0)], packages=again)
        rebuild = await _post(client, f"/v1/jobs/{job_id}/reproduce")
        done = await _until(client, rebuild["job_id"], "succeeded")
    report = done["reproduction"]
    assert report["state"] == "differs" and len(report["packages"]) == many + 1
    diffed = [p for p in report["packages"] if p["differences"] and "x" * 1000 in p["differences"]]
    assert len(diffed) == MAX_DIFFOSCOPE_PACKAGES
    ran = [s for s in backend.steps.values() if s.image == settings.image_diffoscope]
    assert len(ran) == MAX_DIFFOSCOPE_PACKAGES
    rest = [p for p in report["packages"] if p not in diffed]
    assert all("not compared" in p["differences"] for p in rest)


async def test_queued_rebuilds_count_against_the_queues_share_of_the_disk(
    settings: Settings,
) -> None:
    """A rebuild unpacks its build's upload again when it is queued (up to 512 MiB from a small
    gzip): as an upload, it counts against ORCHESTRATOR_MAX_QUEUED_UPLOAD_BYTES, or a client
    could queue rebuilds of many builds and fill the disk (which stops everyone's builds)."""
    one = _tree_bytes(PKGBUILDS / "hello-c")
    settings = settings.model_copy(
        update={"max_concurrent_builds": 1, "max_queued_upload_bytes": one + 1}
    )
    backend = hello_backend()
    async with TestClient(TestServer(create_app(settings, backend=backend))) as client:
        first, second = await _built(client), await _built(client)
        backend.script = Script([("stdout", "started", 0), ("stdout", "never printed", 60)])
        held = await _post(client, f"/v1/jobs/{first}/reproduce")
        refused = await client.post(f"/v1/jobs/{second}/reproduce")
        assert refused.status == 507, await refused.text()
        assert "ORCHESTRATOR_MAX_QUEUED_UPLOAD_BYTES" in (await refused.json())["message"]
        assert (await client.post(f"/v1/jobs/{held['job_id']}/cancel")).status == 200
        await _until(client, held["job_id"], "cancelled")
        backend.script = hello_backend().script
        again = await _post(client, f"/v1/jobs/{second}/reproduce")
        await _until(client, again["job_id"], "succeeded")
    assert not list(settings.work_dir.glob("*")), "a refused rebuild left its sources"
