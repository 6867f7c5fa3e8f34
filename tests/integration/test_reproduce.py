"""Reproduce with real builds: GNU hello (C, Debian's orig tarball) and hexyl (a published
crate, cargo) built, then rebuilt from their stored inputs and compared, bit for bit; and a
package that embeds the time and random bytes, whose rebuild differs where diffoscope says.

Builds are the expensive part (CI time): one module-scoped run makes the three builds and
their three rebuilds once, and the tests assert on what it found. The service is then started
again on the same data, and the reports are still there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from orchestrator import Settings
from orchestrator.narration import sse

from ..conftest import PKGBUILDS, instance_id, remove_instance_volumes
from ..leftovers import Leftovers
from ..waiting import until
from .conftest import serve
from .service import submit

pytestmark = [pytest.mark.docker, pytest.mark.timeout(3600)]

# Each first build with its cache, as users build; each rebuild is made without (ccache's and
# sccache's objects are the compiler's, and cargo's home keeps its uncached path: rustc writes
# it into the binary).
CACHE = {"gnu-hello": "on", "hexyl": "on", "unreproducible": "on"}
_TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "interrupted"}


async def _job(client: TestClient, job_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/jobs/{job_id}")
    assert answer.status == 200
    return dict(await answer.json())


async def _ended(client: TestClient, job_id: str) -> dict[str, Any]:
    return await until(
        lambda: _job(client, job_id),
        lambda job: job["status"] in _TERMINAL,
        timeout_s=1800,
        interval_s=2,
        what=f"job {job_id} to end",
    )


async def _said(client: TestClient, job_id: str) -> list[str]:
    response = await client.get(f"/v1/jobs/{job_id}/stream")
    messages = [m async for m in sse.messages(response.content.iter_any())]
    return [
        str(m.json()["message"])
        for m in messages
        if not m.is_done and not m.is_end and m.json()["action"] == "reproduced"
    ]


async def _reproduce_all(settings: Settings) -> dict[str, Any]:
    found: dict[str, Any] = {}
    async with serve(settings) as client:
        built = {
            name: await submit(client, PKGBUILDS / name, cache=cache)
            for name, cache in CACHE.items()
        }
        for name, job in built.items():
            ended = await _ended(client, job["job_id"])
            assert ended["status"] == "succeeded", (name, ended)
        rebuilds = {}
        for name, job in built.items():
            answer = await client.post(f"/v1/jobs/{job['job_id']}/reproduce")
            body = await answer.json()
            assert answer.status == 202, body
            assert answer.headers["Location"] == f"/v1/jobs/{body['job_id']}"
            rebuilds[name] = body["job_id"]
        for name, rebuild in rebuilds.items():
            found[name] = {
                "rebuild": await _ended(client, rebuild),
                "original": await _job(client, built[name]["job_id"]),
                "said": await _said(client, rebuild),
            }
    # The reports are in the store: a service started again on the same data shows them.
    async with serve(settings) as client:
        for seen in found.values():
            seen["after_restart"] = await _job(client, seen["original"]["id"])
    return found


@pytest.fixture(scope="module")
def reproduced(
    tmp_path_factory: pytest.TempPathFactory, nothing_left_behind: Leftovers | None
) -> Iterator[dict[str, Any]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("reproduce") / "data",
        instance_id=instance_id(),
        build_cpus=1.0,
        build_memory_bytes=2 * 1024**3,
        max_concurrent_builds=2,
        on_stop="cancel",
    )
    try:
        yield asyncio.run(_reproduce_all(settings))
    finally:
        if nothing_left_behind is not None:  # the first builds' caches
            remove_instance_volumes(nothing_left_behind.client, settings.instance_id)


def _report(found: dict[str, Any], name: str) -> dict[str, Any]:
    rebuild = found[name]["rebuild"]
    assert rebuild["status"] == "succeeded", rebuild
    report = dict(rebuild["reproduction"])
    assert report["rebuild"] == rebuild["id"]
    assert report["original"] == found[name]["original"]["id"]
    # The original shows its latest reproduction: this one, the same, after a restart too.
    assert found[name]["original"]["reproduction"] == report
    assert found[name]["after_restart"]["reproduction"] == report
    return report


@pytest.mark.parametrize("name", ["gnu-hello", "hexyl"])
def test_a_real_build_rebuilt_from_its_inputs_is_bit_identical(
    reproduced: dict[str, Any], name: str
) -> None:
    report = _report(reproduced, name)
    assert report["state"] == "identical", report
    [package] = report["packages"]
    assert package["name"].startswith(f"{name}-") and package["identical"] is True
    assert package["original_sha256"] == package["rebuilt_sha256"]
    assert package["differences"] is None
    said = reproduced[name]["said"]
    assert said == [
        f"✅ {package['name']}: bit-identical",
        "✅ Reproduced: every package is bit-identical",
    ]


def test_a_package_holding_the_time_differs_and_diffoscope_says_where(
    reproduced: dict[str, Any],
) -> None:
    report = _report(reproduced, "unreproducible")
    assert report["state"] == "differs"
    [package] = report["packages"]
    assert package["identical"] is False
    assert package["rebuilt_sha256"] not in (None, package["original_sha256"])
    # diffoscope, sandboxed, names the file inside the package that differs.
    text = package["differences"]
    assert "usr/share/unreproducible/stamp" in text, text
    assert len(text.encode()) <= 64 * 1024
    said = reproduced["unreproducible"]["said"]
    assert said[-1] == f"⚠️ Not reproducible: differs ({package['name']})"
