"""Scenarios for what the hardening and makepkg's reading cost: submit latency, a full disk.

Run from ``bench/run.py`` (``--only submit`` / ``--only diskfull``); they use its ``Service``
and ``Row``. ``diskfull`` mounts a small tmpfs for the service's data, so it needs root.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from run import PKGBUILDS, REPO, Api, Row, Service, build_tar, pct  # type: ignore[import-not-found]

MiB = 1024**2
OLD_READER = "a634250"  # the last commit with the static PKGBUILD reader


async def _post(api: Api, tar: bytes, **params: str) -> tuple[int, float]:
    began = time.perf_counter()
    async with api.session.post(
        f"{api.url}/v1/builds",
        data=tar,
        params=params,
        headers={"Content-Type": "application/x-tar"},
    ) as response:
        await response.read()
        return response.status, time.perf_counter() - began


def _old_static_reader() -> types.ModuleType | None:
    """The static reader as it was, loaded from git, to time it beside makepkg's reading."""
    folder = Path(tempfile.mkdtemp(prefix="old-reader-")) / "oldpkg"
    folder.mkdir()
    try:
        for name in ("pkgbuild.py", "_shlex.py", "errors.py"):
            text = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{OLD_READER}:orchestrator/{name}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            (folder / name).write_text(text)
        (folder / "__init__.py").write_text("")
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_file_location(
        "oldpkg", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules["oldpkg"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("oldpkg.pkgbuild")


async def submit(api: Api, reps: int) -> list[Row]:
    """POST /v1/builds → 201, and with dry_run → 200: makepkg reads the PKGBUILD in its
    sandbox each time. Beside it, the old static reader's time for the same PKGBUILD."""
    tar = build_tar("trivial")
    created: list[float] = []
    dry: list[float] = []
    again: list[float] = []
    for _ in range(reps * 3):
        # A PKGBUILD makepkg has not read before (a comment makes each one new).
        status, took = await _post(api, _unique(tar), dry_run="true")
        assert status == 200, status
        dry.append(took)
        status, took = await _post(api, tar, dry_run="true")  # the same one again
        assert status == 200, status
        again.append(took)
    for _ in range(reps * 3):
        # One at a time, each cancelled before the next: the latency of the answer alone, not
        # of the answer while a dozen builds share the machine.
        began = time.perf_counter()
        async with api.session.post(
            f"{api.url}/v1/builds",
            data=_unique(tar),
            headers={"Content-Type": "application/x-tar"},
        ) as response:
            assert response.status == 201, await response.text()
            job = (await response.json())["job_id"]
        created.append(time.perf_counter() - began)
        async with api.session.post(f"{api.url}/v1/jobs/{job}/cancel") as response:
            await response.read()
    rows = [
        Row(
            "submit → 201 (makepkg reads in a sandbox)",
            [t * 1000 for t in created],
            None,
            "ms",
            "p50 ≤ 300",
            pct(created, 50) <= 0.3,
        ),
        Row("dry_run → 200, a new PKGBUILD", [t * 1000 for t in dry], None, "ms"),
        Row("dry_run → 200, a PKGBUILD read before", [t * 1000 for t in again], None, "ms"),
        *await burst(api, tar, reps),
    ]
    rows += _reading_cpu(reps)
    old = _old_static_reader()
    if old is not None:
        folder = Path(tempfile.mkdtemp(prefix="old-reader-src-"))
        (folder / "PKGBUILD").write_text((PKGBUILDS / "trivial" / "PKGBUILD").read_text())
        parsed: list[float] = []
        for _ in range(reps * 3):
            began = time.perf_counter()
            old.parse_dir(folder)
            parsed.append(time.perf_counter() - began)
        rows.append(
            Row(
                f"old static reader ({OLD_READER}), parse only",
                [t * 1000 for t in parsed],
                None,
                "ms",
                note="what submit spent reading the PKGBUILD before",
            )
        )
    return rows


async def burst(api: Api, tar: bytes, reps: int, size: int = 16) -> list[Row]:
    """``size`` distinct PKGBUILDs submitted at once, as a CI matrix does: each answer's time,
    and how many were refused. Each burst's jobs are cancelled before the next burst. Then the
    same as dry runs: the readings alone, with no build starting beside them."""
    rows = await _burst(api, tar, reps, size, {})
    return rows + await _burst(api, tar, reps, size, {"dry_run": "true"})


async def _burst(api: Api, tar: bytes, reps: int, size: int, params: dict[str, str]) -> list[Row]:
    took: list[float] = []
    refused = 0
    kind = "dry runs → 200" if params else "submit → 201"
    for _ in range(max(2, reps // 2)):

        async def one() -> tuple[bool, float, str | None]:
            began = time.perf_counter()
            async with api.session.post(
                f"{api.url}/v1/builds",
                data=_unique(tar),
                params=params,
                headers={"Content-Type": "application/x-tar"},
            ) as response:
                body = await response.json()
                ok = response.status == (200 if params else 201)
                return ok, time.perf_counter() - began, body.get("job_id")

        answers = await asyncio.gather(*(one() for _ in range(size)))
        for ok, seconds, job in answers:
            took.append(seconds)
            refused += not ok
            if job:
                async with api.session.post(f"{api.url}/v1/jobs/{job}/cancel") as response:
                    await response.read()
    return [
        Row(
            f"{kind}, {size} distinct PKGBUILDs at once",
            [t * 1000 for t in took],
            None,
            "ms",
            "p95 ≤ 2000",
            pct(took, 95) <= 2.0,
        ),
        Row(
            f"{kind}: refused in bursts of {size}",
            [float(refused)],
            None,
            "count",
            "0",
            not refused,
        ),
    ]


# CPU time, not wall time: what a reading costs does not change with what else the host runs,
# and a burst of readings on 2 cores cannot be answered faster than their sum over 2.
_READING_CPU = """
cd /tmp && cp /w/PKGBUILD . && export BUILDDIR=/tmp SRCDEST=/tmp PKGDEST=/tmp
for i in $(seq "$1"); do makepkg --printsrcinfo; done >/dev/null 2>&1; times >&2
for i in $(seq "$1"); do env "BASH_FUNC_grep%%=$2" makepkg --printsrcinfo; done >/dev/null 2>&1
times >&2
"""


def _reading_cpu(reps: int, image: str = "orchestrator/build:cpu") -> list[Row]:
    """CPU seconds of one ``makepkg --printsrcinfo`` of the trivial PKGBUILD, as makepkg runs
    grep and with the reading's own ``grep`` function (``orchestrator.readers``)."""
    from orchestrator.build.readers import _GREP

    runs = reps * 5
    printed = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network=none",
            "-v",
            f"{PKGBUILDS / 'trivial'}:/w:ro",
            image,
            "bash",
            "-c",
            _READING_CPU,
            "bench",
            str(runs),
            _GREP,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stderr.split("\n")
    # `times` prints the shell's own line, then its children's: the second, then the fourth.
    totals = [_cpu_s(printed[1]), _cpu_s(printed[3])]
    plain, ours = totals[0] / runs, (totals[1] - totals[0]) / runs
    return [
        Row("makepkg --printsrcinfo, CPU per reading (makepkg's grep)", [plain * 1000], None, "ms"),
        Row(
            "the same, with the reading's grep function",
            [ours * 1000],
            None,
            "ms",
            note=f"{ours / plain:.2f}× the CPU",
        ),
    ]


def _cpu_s(line: str) -> float:
    """``0m1.234s 0m0.567s`` (user, system) as seconds in all."""
    total = 0.0
    for part in line.split():
        minutes, _, seconds = part.rstrip("s").partition("m")
        total += int(minutes) * 60 + float(seconds)
    return total


def _unique(tar: bytes) -> bytes:
    """The same upload with a PKGBUILD no one has read yet."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(tar)) as source,
        tarfile.open(fileobj=out, mode="w") as tar_out,
    ):
        for member in source.getmembers():
            data = source.extractfile(member)
            body = data.read() if data is not None else b""
            if member.name == "PKGBUILD":
                body += f"# {uuid.uuid4().hex}\n".encode()
                member.size = len(body)
            tar_out.addfile(member, io.BytesIO(body))
    return out.getvalue()


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    block = bytes(MiB)
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(block)
            fh.flush()
    return filler


async def _until(check: Any, timeout_s: float = 60) -> float:
    began = time.perf_counter()
    while time.perf_counter() - began < timeout_s:
        if await check():
            return time.perf_counter() - began
        await asyncio.sleep(0.05)
    raise TimeoutError("not within the time")


async def diskfull(session: aiohttp.ClientSession) -> list[Row]:
    """The data disk fills under a running build: how soon the job ends naming it, submits get
    507 and /health 503; then space comes back: how soon work is taken again, unattended."""
    if os.geteuid() != 0:
        return [Row("disk full (needs root for a tmpfs)", [], None, "s", note="skipped")]
    mount = Path(tempfile.mkdtemp(prefix="orchestrator-bench-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    service = Service(
        mount,
        env={
            "ORCHESTRATOR_DISK_MIN_FREE_BYTES": str(8 * MiB),
            "ORCHESTRATOR_DISK_RESERVE_BYTES": str(8 * MiB),
            "ORCHESTRATOR_MAX_CONCURRENT_BUILDS": "2",
        },
    )
    try:
        await service.ready(session)
        api = Api(session, service.url)
        job = await api.submit(build_tar("busy", burst=10))
        async for _, event in api.events(job):
            if event.get("action") == "output":
                break
        filled = time.perf_counter()
        filler = await asyncio.to_thread(_fill, mount)

        async def job_ended() -> bool:
            async with session.get(f"{api.url}/v1/jobs/{job}") as response:
                body = await response.json()
                return bool(body["status"] == "failed" and "data disk" in (body["reason"] or ""))

        try:
            await _until(job_ended)
        except TimeoutError:
            async with session.get(f"{api.url}/v1/jobs/{job}") as response:
                text = await response.text()
            raise TimeoutError(f"the job did not end naming the disk: {text}") from None
        ended_s = time.perf_counter() - filled
        status, refused_s = await _post(api, build_tar("trivial"))
        async with session.get(f"{api.url}/health") as response:
            unhealthy = response.status
        filler.unlink()
        freed = time.perf_counter()

        async def healthy() -> bool:
            async with session.get(f"{api.url}/health") as response:
                return response.status == 200

        await _until(healthy)
        back_s = time.perf_counter() - freed
        accepted, _ = await _post(api, build_tar("trivial"))
        return [
            Row("disk full → running job failed, naming the disk", [ended_s], None, "s"),
            Row(
                f"disk full → submit answered {status}",
                [refused_s * 1000],
                None,
                "ms",
                "507",
                status == 507,
            ),
            Row(f"disk full → /health {unhealthy}", [0.0], None, "", "503", unhealthy == 503),
            Row("space back → /health 200, no restart", [back_s], None, "s"),
            Row(
                f"space back → submit answered {accepted}", [0.0], None, "", "201", accepted == 201
            ),
        ]
    finally:
        service.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)
