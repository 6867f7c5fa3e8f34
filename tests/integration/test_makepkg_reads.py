"""makepkg reads the PKGBUILD: in a sandbox at submit, its .SRCINFO the source of truth.

Real makepkg (the build image's), real HTTP. PKGBUILDs in the style of rbee's workers: values
from command substitutions, per-architecture sources, top-level `if`/`for`, brace expansion,
`${var//pattern}`, split packages: everything a static reader got wrong or refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from aiohttp.test_utils import TestClient

from orchestrator import Engine, Settings
from orchestrator.build.runner import INSTANCE_LABEL

from .. import waiting
from .service import dry_run, submit, tar_dir, wait_status

pytestmark = pytest.mark.docker


async def test_values_only_bash_can_compute_are_read_as_makepkg_reads_them(
    client: TestClient, build_dir: Callable[..., Path], settings: Settings
) -> None:
    found = await dry_run(client, build_dir("rbee-style-bin"))
    assert found["pkgnames"] == ["llm-worker-demo-bin"]
    assert found["version"] == "0.4.2_rc.1-1"
    assert found["sources"] == [
        "llm-worker.service",
        "https://example.invalid/releases/v0.4.2-rc.1/llm-worker-linux-amd64.tar.gz",
        "https://example.invalid/releases/v0.4.2-rc.1/llm-worker-linux-amd64.tar.gz.sig",
    ]
    assert "\tsource_aarch64 = https://example.invalid/releases/v0.4.2-rc.1/" in found["srcinfo"]
    assert found["srcinfo"].startswith("pkgbase = llm-worker-demo-bin\n")
    assert found["problems"] == []
    # openssl and gcc-libs are in the image; nvidia-utils is not, and is named.
    [warning] = found["warnings"]
    assert warning.endswith(": nvidia-utils"), warning
    assert list(settings.work_dir.iterdir()) == []  # a dry run leaves nothing
    assert (await (await client.get("/v1/jobs")).json())["total"] == 0


async def test_a_split_package_builds_with_the_names_makepkg_gives(
    client: TestClient, build_dir: Callable[..., Path]
) -> None:
    created = await submit(client, build_dir("rbee-style-split"))
    assert created["pkgnames"] == ["sd-worker-demo-cpu", "sd-worker-demo-common"]
    assert (created["pkgname"], created["pkgver"]) == ("sd-worker-demo", "1:1.2.0-2")
    job = await wait_status(client, created["job_id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    # The names makepkg gives (the compression suffix is the image's makepkg.conf's).
    assert sorted(a["name"].partition(".pkg.tar")[0] for a in job["artifacts"]) == [
        "sd-worker-demo-common-1:1.2.0-2-any",
        "sd-worker-demo-cpu-1:1.2.0-2-x86_64",
    ]
    assert job["srcinfo"].startswith("pkgbase = sd-worker-demo\n")
    assert "\nmakedepends" not in job["srcinfo"] and "\tmakedepends = cmake" in job["srcinfo"]


async def test_makepkgs_refusal_is_a_422_with_its_own_words(
    client: TestClient, tmp_path: Path
) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    (src / "PKGBUILD").write_text(
        "pkgname=bad\npkgver=1:0\npkgrel=1\narch=(any)\npackage() { :; }\n"
    )
    response = await client.post(
        "/v1/builds", data=tar_dir(src), headers={"Content-Type": "application/gzip"}
    )
    body = await response.json()
    assert response.status == 422, body
    assert "pkgver is not allowed to contain colons" in body["message"]
    (src / "PKGBUILD").write_text("pkgname=bad\npkgver=1\npkgrel=1\narch=(any)\nfi\n")
    body = await dry_run(client, src, expect=422)
    assert "syntax error" in body["message"]


async def test_a_missing_local_source_is_a_problem_and_a_422(
    client: TestClient, build_dir: Callable[..., Path]
) -> None:
    src = build_dir("rbee-style-bin")
    (src / "llm-worker.service").unlink()
    found = await dry_run(client, src)
    assert found["problems"] == ["local source 'llm-worker.service' is not in the upload"]
    refused = await submit(client, src, expect=422)
    assert refused["problems"] == found["problems"]


async def test_a_top_level_that_floods_its_output_costs_little(
    client: TestClient, tmp_path: Path
) -> None:
    # Found by a hostile review: 400 MB on stderr became an 847 MB answer, kept for 10 minutes.
    src = tmp_path / "flood"
    src.mkdir()
    (src / "PKGBUILD").write_text(
        "pkgname=flood\npkgver=1\npkgrel=1\narch=(any)\n"
        "yes 'a line the top level prints again and again' | head -c 50M >&2\nexit 1\n"
    )
    refused = await dry_run(client, src, expect=422)
    assert len(json.dumps(refused)) < 64 * 1024


@pytest.mark.parametrize("cancelled_once", ["made", "running"])
async def test_a_reading_cancelled_midway_leaves_no_container(
    settings: Settings,
    tmp_path: Path,
    docker_client: docker.DockerClient,
    cancelled_once: str,
) -> None:
    # A review saw readings' containers left after the service stopped (it cancels the
    # catalog's readings). Cancelled once its reader's container is made (it is being
    # started, or makepkg is on its way), or once makepkg runs.
    src = tmp_path / "hang"
    src.mkdir()
    (src / "PKGBUILD").write_text(
        "pkgname=hang\npkgver=1\npkgrel=1\narch=(any)\nsleep 300\npackage() { :; }\n"
    )
    async with await Engine.open(settings) as engine:
        labels = engine.runner.inspect_labels("cancel-me")
        inspector = engine.runner.inspector
        reading = asyncio.create_task(inspector.read(src, settings.image_cpu, labels))
        mine = {"label": f"{INSTANCE_LABEL}={settings.instance_id}"}

        def made() -> list[str]:
            found = docker_client.containers.list(ignore_removed=True, all=True, filters=mine)
            return [str(c.name) for c in found]

        def commands() -> list[str]:
            running = docker_client.containers.list(
                ignore_removed=True, filters={**mine, "status": "running"}
            )
            return [row[-1] for c in running for row in c.top()["Processes"] or []]

        if cancelled_once == "made":
            await waiting.until(
                lambda: asyncio.to_thread(made), timeout_s=30, what="the reader's container"
            )
        else:
            await waiting.until(
                lambda: asyncio.to_thread(commands),
                lambda seen: "sleep 300" in seen,
                timeout_s=30,
                interval_s=0.1,
                what="the reading running",
            )
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
    left = docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{INSTANCE_LABEL}={settings.instance_id}"}
    )
    assert left == []
