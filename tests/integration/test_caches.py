"""Build caches against the real daemon and real makepkg, cargo, sccache and ccache: a second
build hits, a changed source is rebuilt, a poisoned download is fetched again, two builds of one
package at once both succeed, a cancelled build leaves the cache usable, pruning keeps the cap,
and the API lists, removes and skips caches."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from orchestrator import Action, BuildRequest, CancelToken, Engine, JobStatus, Settings
from orchestrator.build.caches import volume_name
from orchestrator.build.runner import INSTANCE_LABEL, BuildResult

from .. import waiting
from ..conftest import SESSION_PREFIX, Recorder, compiling
from ..leftovers import SESSION_LABEL
from .conftest import job_id, serve
from .service import submit, wait_status
from .test_real_builds import run_in_image

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return compiling(settings)  # compile-bound: the service's default CPUs, not the suite's one


async def build(
    engine: Engine, src: Path, *, cache: bool = True, token: CancelToken | None = None
) -> tuple[BuildResult, Recorder]:
    recorder = Recorder()
    request = BuildRequest(job_id(), src, cache=cache)
    result = await engine.build(request, recorder, token or CancelToken())
    if result.status is not JobStatus.SUCCEEDED and token is None:
        print("\n".join(recorder.lines()[-60:]))
    return result, recorder


def report(result: BuildResult) -> dict[str, Any]:
    assert result.cache is not None
    return dict(result.cache)


async def succeeded(
    engine: Engine, src: Path, *, cache: bool = True
) -> tuple[BuildResult, dict[str, Any], Recorder]:
    """A build that must succeed: its result, its cache report, and what it said."""
    result, recorder = await build(engine, src, cache=cache)
    assert result.status is JobStatus.SUCCEEDED
    return result, report(result), recorder


def cache_volumes(client: docker.DockerClient, settings: Settings) -> list[str]:
    found = client.volumes.list(filters={"label": f"{INSTANCE_LABEL}={settings.instance_id}"})
    return sorted(v.name for v in found)


def greet(client: docker.DockerClient, settings: Settings, result: BuildResult) -> str:
    [package] = result.artifacts
    out = run_in_image(client, settings.image_cpu, package, "usr/bin/greet-c", "$BIN")
    out += run_in_image(client, settings.image_cpu, package, "usr/bin/greet-rs", "$BIN")
    return out


@pytest.mark.timeout(1200)  # two cold-ish builds of a real crate and a warm one
async def test_a_rust_crate_after_a_cancel_builds_and_then_rebuilds_from_the_cache(
    engine: Engine, build_dir: Callable[..., Path]
) -> None:
    # Cancelled while rustc runs: the cache is left half-filled, by a killed build.
    token, recorder = CancelToken(), Recorder()
    src = build_dir("hexyl")
    running = asyncio.ensure_future(engine.build(BuildRequest(job_id(), src), recorder, token))
    try:
        await recorder.wait_for(lambda e: "Compiling " in e.message, timeout_s=300)
    finally:
        token.cancel()
        cancelled = await asyncio.wait_for(running, 60)
    assert cancelled.status is JobStatus.CANCELLED

    # The next build uses what the killed one left, and succeeds.
    second, _ = await build(engine, build_dir("hexyl"))
    assert second.status is JobStatus.SUCCEEDED
    assert report(second)["warm"] is True
    assert report(second)["sources"] == {"hits": 1, "misses": 0}  # the .crate, from SRCDEST

    # The one after downloads nothing and compiles nothing: cargo finds every crate fresh
    # in the kept build-dir (so it does not even ask sccache).
    third, recorder = await build(engine, build_dir("hexyl"))
    assert third.status is JobStatus.SUCCEEDED
    lines = recorder.lines()
    assert not [line for line in lines if "Downloaded " in line or "Downloading" in line]
    assert not [line for line in lines if line.strip().startswith("Compiling ")]
    assert any(line.strip().startswith("Finished `release` profile") for line in lines)
    said = [e.message for e in recorder.events if e.action is Action.CACHE]
    assert said[0] == "Cache hexyl:cpu (warm) mounted at /cache"
    assert "sources 1 of 1 reused" in said[-1]


@pytest.mark.timeout(900)
async def test_a_changed_source_is_rebuilt_and_an_unchanged_one_hits(
    engine: Engine,
    build_dir: Callable[..., Path],
    settings: Settings,
    docker_client: docker.DockerClient,
) -> None:
    first, _, _ = await succeeded(engine, build_dir("greeter"))
    assert greet(docker_client, settings, first) == "hello from C\nhello from Rust\n"

    same, cached, _ = await succeeded(engine, build_dir("greeter"))
    assert cached["ccache"]["hits"] >= 1 and cached["ccache"]["misses"] == 0
    # Its prepare() copies the Rust files (new mtimes), so cargo compiles them again: the
    # library comes from sccache.
    assert cached["sccache"]["hits"] >= 1
    assert greet(docker_client, settings, same) == "hello from C\nhello from Rust\n"

    changed = build_dir("greeter")
    for name, old, new in (("greet.c", "hello", "bye"), ("lib.rs", "hello", "bye")):
        path = changed / name
        path.write_text(path.read_text().replace(old, new))
        # Older than the kept output, as a file from a tarball or a backup can be: cargo
        # would take it as unchanged by its mtime alone.
        os.utime(path, (1_500_000_000, 1_500_000_000))
    rebuilt, cached, _ = await succeeded(engine, changed)
    assert cached["warm"] is True
    assert greet(docker_client, settings, rebuilt) == "bye from C\nbye from Rust\n"
    assert cached["ccache"]["misses"] >= 1 and cached["sccache"]["misses"] >= 1


@pytest.mark.timeout(900)
async def test_a_cached_download_that_no_longer_matches_is_fetched_again(
    engine: Engine,
    build_dir: Callable[..., Path],
    settings: Settings,
    docker_client: docker.DockerClient,
) -> None:
    first, _ = await build(engine, build_dir("gnu-hello"))
    assert first.status is JobStatus.SUCCEEDED
    assert report(first)["sources"] == {"hits": 0, "misses": 1}
    # Someone (another build of a package by that name) swaps the tarball in the cache.
    volume = volume_name(settings.instance_id, "gnu-hello:cpu")
    docker_client.containers.run(
        settings.image_cpu,
        ["bash", "-c", "echo poison >> /cache/src/hello_2.10.orig.tar.gz"],
        user="root",
        volumes={volume: {"bind": "/cache", "mode": "rw"}},
        network_mode="none",
        labels={SESSION_LABEL: SESSION_PREFIX},
        remove=True,
    )
    second, recorder = await build(engine, build_dir("gnu-hello"))
    assert second.status is JobStatus.SUCCEEDED
    assert report(second)["sources"] == {"hits": 0, "misses": 1}  # downloaded again, verified
    assert not any("FAILED" in line for line in recorder.lines())
    # The autotools build's C compilations come from ccache.
    ccache = report(second)["ccache"]
    assert ccache["hits"] >= 5 and ccache["hits"] > ccache["misses"], ccache


@pytest.mark.timeout(900)
async def test_two_builds_of_one_package_at_once_both_succeed(
    engine: Engine, build_dir: Callable[..., Path]
) -> None:
    (a, _), (b, _) = await asyncio.gather(
        build(engine, build_dir("greeter")), build(engine, build_dir("greeter"))
    )
    assert a.status is JobStatus.SUCCEEDED and b.status is JobStatus.SUCCEEDED
    used = sorted(report(r)["used"] for r in (a, b))
    assert used == [False, True]
    without = next(report(r) for r in (a, b) if not report(r)["used"])
    assert "in use by another build" in without["why"]
    # The cache the first one filled is intact: the next build hits it.
    again, _ = await build(engine, build_dir("greeter"))
    assert report(again)["warm"] is True and report(again)["ccache"]["hits"] >= 1


@pytest.mark.timeout(900)
async def test_pruning_keeps_the_cap(
    settings: Settings, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    capped = settings.model_copy()
    async with await Engine.open(capped) as engine:
        await build(engine, build_dir("hello-c"))
        await engine.caches.settled()  # measured (by root, in a container) and pruned
        [entry] = engine.caches.listing()
        # Room for hello-c's cache (one object file) and half a MiB: not for greeter's cargo
        # output and compiled crates.
        capped.cache_max_bytes = entry["size_bytes"] + 512 * 1024
        assert len(cache_volumes(docker_client, capped)) == 1
        big, _ = await build(engine, build_dir("greeter"))
        await engine.caches.settled()
        assert report(big)["used"] is True
        listed = engine.caches.listing()
        assert sum(c["size_bytes"] for c in listed) <= capped.cache_max_bytes
        # greeter's is the newest but over the cap on its own; hello-c's fits and stays.
        assert [c["key"] for c in listed] == ["hello-c:cpu"]
        assert cache_volumes(docker_client, capped) == [
            volume_name(capped.instance_id, "hello-c:cpu")
        ]


async def test_the_api_lists_removes_and_skips_caches(
    settings: Settings, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    client: TestClient
    async with serve(settings) as client:
        created = await submit(client, build_dir("hello-c"))
        job = await wait_status(client, created["job_id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded"
        assert job["cache"]["used"] is True and job["cache"]["key"] == "hello-c:cpu"

        async def caches() -> dict[str, Any]:
            return dict(await (await client.get("/v1/caches")).json())

        listed = await waiting.until(  # its size comes after the build, measured meanwhile
            caches,
            lambda listed: bool(listed["caches"]) and listed["caches"][0]["size_bytes"] is not None,
            interval_s=0.1,
            what="the cache's size",
        )
        [entry] = listed["caches"]
        assert (entry["key"], entry["builds"], entry["hits"]) == ("hello-c:cpu", 1, 0)
        assert entry["size_bytes"] > 0 and entry["in_use"] is False
        assert listed["max_bytes"] == settings.cache_max_bytes

        # Busy while a build of that package runs: not removed under it.
        ticker = await submit(client, build_dir("ticker"))
        await wait_status(client, ticker["job_id"], {"running"})

        async def listed_status() -> int:
            return (await client.get("/v1/caches/ticker:cpu")).status

        await waiting.until(
            listed_status, lambda status: status == 200, interval_s=0.1, what="ticker's cache"
        )
        busy = await client.delete("/v1/caches/ticker:cpu")
        assert busy.status == 409, await busy.text()
        await client.post(f"/v1/jobs/{ticker['job_id']}/cancel")

        removed = await client.delete("/v1/caches/hello-c:cpu")
        assert removed.status == 204
        assert volume_name(settings.instance_id, "hello-c:cpu") not in cache_volumes(
            docker_client, settings
        )
        assert (await client.delete("/v1/caches/hello-c:cpu")).status == 404

        off = await submit(client, build_dir("hello-c"), cache="off")
        job = await wait_status(client, off["job_id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded"
        assert job["cache"] == {"used": False, "why": "cache=off was asked for"}
        assert "hello-c:cpu" not in [
            c["key"] for c in (await (await client.get("/v1/caches")).json())["caches"]
        ]
        bad = await client.post(
            "/v1/builds?cache=maybe", data=b"x", headers={"Content-Type": "application/gzip"}
        )
        assert bad.status == 400
