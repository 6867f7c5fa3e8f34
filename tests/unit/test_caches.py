"""Build caches' rules on the fake backend: keys, one build at a time, LRU pruning to the cap,
removal, the index surviving a restart; and the wrapper's reading of sources and reports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from orchestrator import BuildRequest, CancelToken, Engine, JobStatus, Settings
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.build.caches import CACHE_LABEL, Caches, cache_key, volume_name
from orchestrator.build.cachescript import CACHE_DIR, Hits, env, parse_report, source_lines
from orchestrator.build.srcinfo import makepkg_name, parse
from orchestrator.errors import CacheBusy, NotFound
from orchestrator.narration.events import Action

from .. import waiting
from ..conftest import Recorder

MiB = 1024 * 1024


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", instance_id="unit", cache_max_bytes=100 * MiB)


async def use(caches: Caches, pkgbase: str, size_bytes: int, job: str = "j") -> None:
    """A build of ``pkgbase`` that leaves its cache ``size_bytes`` big."""
    backend = caches._backend
    assert isinstance(backend, FakeBackend)
    async with caches.lease(pkgbase, "cpu", job, "image") as lease:
        lease.started = True
        backend.volume_bytes[lease.volume] = size_bytes
    await caches.settled()


def test_keys_split_back_and_volume_names_suit_docker() -> None:
    key = cache_key("lib32-foo+bar@2", "cpu")
    assert key.rpartition(":") == ("lib32-foo+bar@2", ":", "cpu")
    name = volume_name("default", key)
    assert name.startswith("orchestrator-cache-") and name.replace("-", "").isalnum()
    # Another instance on the same daemon gets another volume for the same package.
    assert volume_name("other", key) != name


async def test_second_use_is_warm_and_counted(settings: Settings) -> None:
    backend = FakeBackend()
    caches = Caches(backend, settings)
    await caches.open()
    async with caches.lease("hexyl", "cpu", "j1", "image") as first:
        assert not first.warm
        first.started = True
    async with caches.lease("hexyl", "cpu", "j2", "image") as second:
        second.started = True
        assert second.warm
        assert backend.volumes[second.volume][CACHE_LABEL] == "hexyl:cpu"
    [info] = caches.listing()
    assert (info["key"], info["builds"], info["hits"], info["last_job"]) == (
        "hexyl:cpu",
        2,
        1,
        "j2",
    )


async def test_one_build_at_a_time_and_a_busy_cache_is_not_removed(settings: Settings) -> None:
    caches = Caches(FakeBackend(), settings)
    async with caches.lease("hexyl", "cpu", "j1", "image"):
        with pytest.raises(CacheBusy):
            async with caches.lease("hexyl", "cpu", "j2", "image"):
                pass
        with pytest.raises(CacheBusy):
            await caches.remove("hexyl:cpu")
        assert caches.get("hexyl:cpu")["in_use"] is True
        async with caches.lease("hexyl", "cuda", "j3", "image"):  # another variant is another cache
            pass
    await caches.remove("hexyl:cpu")
    with pytest.raises(NotFound):
        caches.get("hexyl:cpu")


async def test_pruning_removes_the_least_recently_used_idle_caches(settings: Settings) -> None:
    backend = FakeBackend()
    caches = Caches(backend, settings)
    await use(caches, "a", 40 * MiB)
    await use(caches, "b", 40 * MiB)
    await use(caches, "a", 40 * MiB)  # a is now the more recent
    assert {c["key"] for c in caches.listing()} == {"a:cpu", "b:cpu"}
    await use(caches, "c", 40 * MiB)  # 120 MiB > 100: b goes
    assert {c["key"] for c in caches.listing()} == {"a:cpu", "c:cpu"}
    assert sorted(backend.volumes) == sorted(volume_name("unit", k) for k in ("a:cpu", "c:cpu"))
    # One cache over the cap on its own goes first: it could never fit, the others can.
    await use(caches, "huge", 150 * MiB)
    assert {c["key"] for c in caches.listing()} == {"a:cpu", "c:cpu"}
    assert sum(c["size_bytes"] for c in caches.listing()) <= settings.cache_max_bytes


async def test_a_cancelled_build_still_records_its_use(settings: Settings) -> None:
    caches = Caches(FakeBackend(), settings)
    entered = asyncio.Event()

    async def build() -> None:
        async with caches.lease("slow", "cpu", "j1", "image") as lease:
            lease.started = True
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(build())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [info] = caches.listing()
    assert info["builds"] == 1 and info["in_use"] is False


async def test_the_index_survives_a_restart_and_follows_the_volumes(settings: Settings) -> None:
    backend = FakeBackend()
    caches = Caches(backend, settings)
    await use(caches, "kept", 10 * MiB)
    await use(caches, "lost", 10 * MiB)
    del backend.volumes[volume_name("unit", "lost:cpu")]  # removed behind our back
    await backend.create_volume(  # made, but the index was not saved (a crash)
        volume_name("unit", "adopted:cpu"),
        {CACHE_LABEL: "adopted:cpu", "orchestrator.instance": "unit"},
    )
    again = Caches(backend, settings)
    await again.open()
    listed = {c["key"]: c for c in again.listing()}
    assert set(listed) == {"kept:cpu", "adopted:cpu"}
    assert listed["kept:cpu"]["size_bytes"] == 10 * MiB
    # A garbled index is not fatal: the volumes are the truth.
    (settings.data_dir / "caches.json").write_text("{not json")
    third = Caches(backend, settings)
    await third.open()
    assert {c["key"] for c in third.listing()} == {"kept:cpu", "adopted:cpu"}


SRCINFO = """pkgbase = demo
\tpkgver = 1.0
\tpkgrel = 1
\tsource = demo-1.0.tar.gz::https://example.org/v1.0.tar.gz
\tsource = https://example.org/files/data.bin?raw=1
\tsource = git+https://example.org/repo.git#tag=v1
\tsource = local.patch
\tsource = https://example.org/unsigned.tar.gz
\tsource = x::https://example.org/../..
\tsha256sums = aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11
\tsha256sums = SKIP
\tsha256sums = SKIP
\tsha256sums = bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22
\tsha256sums = SKIP
\tsha256sums = SKIP
\tb2sums = SKIP
\tb2sums = SKIP
\tb2sums = SKIP
\tb2sums = SKIP
\tb2sums = SKIP
\tb2sums = SKIP
\tsource_x86_64 = https://example.org/arch.tar.gz
\tsha256sums_x86_64 = cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33

pkgname = demo
"""


def test_only_verifiable_sources_are_kept() -> None:
    lines = [line.split("\t") for line in source_lines(parse(SRCINFO)).splitlines()]
    assert lines == [
        ["file", "demo-1.0.tar.gz", "sha256sum", "aa11" * 16],
        ["other", "data.bin?raw=1"],  # makepkg keeps the query in the name; no checksum
        ["git", "repo", "https://example.org/repo.git"],
        ["other", "unsigned.tar.gz"],
        ["other", "x"],
        ["file", "arch.tar.gz", "sha256sum", "cc33" * 16],
    ]


def test_makepkg_names() -> None:
    assert makepkg_name("a.tgz::https://h/x") == ("a.tgz", "https://h/x")
    assert makepkg_name("git+https://h/r.git#branch=x") == ("r", "git+https://h/r.git#branch=x")
    assert makepkg_name("patches/fix.patch") == ("fix.patch", None)
    assert makepkg_name("https://h/d/f.tar.gz") == ("f.tar.gz", "https://h/d/f.tar.gz")


def test_reports_tolerate_what_a_build_may_write() -> None:
    sccache = {
        "stats": {
            "cache_hits": {"counts": {"Rust": 40, "C/C++": 2}},
            "cache_misses": {"counts": {"Rust": 8}},
        }
    }
    files = {
        "sources": b"1 2\n",
        "sccache.json": json.dumps(sccache).encode(),
        "ccache.tsv": b"direct_cache_hit\t5\npreprocessed_cache_hit\t1\ncache_miss\t2\n",
    }
    report = parse_report("demo:cpu", True, files)
    assert report.sources == Hits(1, 1)
    assert report.sccache == Hits(42, 8)
    assert report.ccache == Hits(6, 2)
    assert "sccache 42 of 50 hit (84%)" in report.summary()
    garbled = {"sources": b"x", "sccache.json": b"{", "ccache.tsv": b"\xff"}
    assert parse_report("demo:cpu", False, garbled).to_dict() == {
        "key": "demo:cpu",
        "used": True,
        "warm": False,
        "sources": None,
        "sccache": None,
        "ccache": None,
    }


PKGBUILD = "pkgname=demo\npkgver=1.0\npkgrel=1\narch=(x86_64)\npackage() { :; }\n"


async def build(engine: Engine, tmp: Path, job: str, *, cache: bool = True) -> Recorder:
    source = tmp / job
    source.mkdir()
    (source / "PKGBUILD").write_text(PKGBUILD)
    recorder = Recorder()
    result = await engine.build(BuildRequest(job, source, cache=cache), recorder, CancelToken())
    assert result.status is JobStatus.SUCCEEDED, recorder.lines()
    recorder.result = result  # type: ignore[attr-defined]
    return recorder


async def test_the_runner_mounts_the_cache_and_reports_it(
    settings: Settings, tmp_path: Path
) -> None:
    backend = FakeBackend(Script())
    backend.cache_files = {"sccache.json": b"{}", "sources": b"0 0"}
    engine = await Engine.open(settings, backend)
    first = await build(engine, tmp_path, "j1")
    second = await build(engine, tmp_path, "j2")
    spec = list(backend.steps.values())[-1]
    assert list(spec.volumes.values()) == [CACHE_DIR]
    assert spec.command[:2] == ("bash", "-c") and spec.command[-4:][0] == "makepkg"
    assert "SCCACHE_CACHE_SIZE" in spec.env
    assert first.result.cache["warm"] is False  # type: ignore[attr-defined]
    assert second.result.cache == {  # type: ignore[attr-defined]
        "key": "demo:cpu",
        "used": True,
        "warm": True,
        "sources": {"hits": 0, "misses": 0},
        "sccache": None,
        "ccache": None,
    }
    cache_lines = [e.message for e in second.events if e.action is Action.CACHE]
    assert cache_lines[0] == "Cache demo:cpu (warm) mounted at /cache"

    off = await build(engine, tmp_path, "j3", cache=False)
    spec = list(backend.steps.values())[-1]
    assert spec.volumes == {} and spec.command[0] == "makepkg"
    assert off.result.cache == {"used": False, "why": "cache=off was asked for"}  # type: ignore[attr-defined]
    await engine.close()


async def test_caches_can_be_turned_off_for_the_service(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", instance_id="unit", caches=False)
    backend = FakeBackend(Script())
    engine = await Engine.open(settings, backend)
    recorder = await build(engine, tmp_path, "j1")
    assert recorder.result.cache is None  # type: ignore[attr-defined]
    assert backend.volumes == {}
    await engine.close()


async def clock_past(stamp: float) -> None:
    """Until the clock reads later than ``stamp``: a file changed now gets a newer mtime."""
    await waiting.until(time.time, lambda now: now > stamp, what=f"the clock past {stamp}")


async def test_local_files_keep_their_mtime_only_while_unchanged(settings: Settings) -> None:
    backend = FakeBackend()
    caches = Caches(backend, settings)
    async with caches.lease("demo", "cpu", "j1", "image") as lease:
        first = await caches.inputs(lease, {"a.rs": "1" * 64, "b.rs": "2" * 64})
    assert first is not None and first["a.rs"] == first["b.rs"]
    await clock_past(first["a.rs"])
    again = Caches(backend, settings)  # a restart: the record was saved before the build
    await again.open()
    async with again.lease("demo", "cpu", "j2", "image") as lease:
        second = await again.inputs(lease, {"a.rs": "1" * 64, "b.rs": "3" * 64, "c.rs": "4" * 64})
    assert second is not None
    assert second["a.rs"] == first["a.rs"]  # unchanged: cargo's output for it stays fresh
    assert second["b.rs"] > first["b.rs"] and second["c.rs"] == second["b.rs"]
    saved = json.loads((settings.data_dir / "caches.json").read_text())
    assert saved["demo:cpu"]["inputs"]["b.rs"] == ["3" * 64, second["b.rs"]]


async def test_no_mtimes_when_the_record_cannot_be_saved(settings: Settings) -> None:
    caches = Caches(FakeBackend(), settings)
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "caches.json").mkdir()  # os.replace onto a folder fails
    async with caches.lease("demo", "cpu", "j1", "image") as lease:
        assert await caches.inputs(lease, {"a.rs": "1" * 64}) is None


async def test_a_cache_being_removed_is_not_lent(settings: Settings) -> None:
    class SlowRemoval(FakeBackend):
        def __init__(self) -> None:
            super().__init__()
            self.removing = asyncio.Event()
            self.release = asyncio.Event()

        async def remove_volume(self, name: str) -> None:
            self.removing.set()
            await self.release.wait()
            await super().remove_volume(name)

    backend = SlowRemoval()
    caches = Caches(backend, settings)
    await use(caches, "demo", MiB)
    removal = asyncio.create_task(caches.remove("demo:cpu"))
    await backend.removing.wait()
    with pytest.raises(CacheBusy):
        async with caches.lease("demo", "cpu", "j2", "image"):
            pass
    backend.release.set()
    await removal
    assert caches.listing() == [] and backend.volumes == {}


async def test_a_volume_made_anew_forgets_the_files_of_the_old_one(settings: Settings) -> None:
    backend = FakeBackend()
    caches = Caches(backend, settings)
    async with caches.lease("demo", "cpu", "j1", "image") as lease:
        lease.started = True
        first = await caches.inputs(lease, {"a.rs": "1" * 64})
    backend.volumes.clear()  # removed behind our back: its cargo output went with it
    assert first is not None
    await clock_past(first["a.rs"])
    async with caches.lease("demo", "cpu", "j2", "image") as lease:
        assert not lease.warm
        second = await caches.inputs(lease, {"a.rs": "1" * 64})
    assert first is not None and second is not None and second["a.rs"] > first["a.rs"]


def test_cargo_output_is_kept_only_under_pinned_sources() -> None:
    pinned = parse(
        "pkgbase = p\n\tpkgver = 1\n\tpkgrel = 1\n"
        "\tsource = p-1.tar.gz::https://static.crates.io/crates/p/p-1.crate\n"
        "\tsource = git+https://example.org/r.git#commit=abc\n"
        "\tsha256sums = " + "ab" * 32 + "\n\tsha256sums = SKIP\n\npkgname = p\n"
    )
    key = env(pinned, 1 << 30)["ORCHESTRATOR_BUILD_DIR_KEY"]
    assert len(key) == 16
    other = parse(SRCINFO)  # has SKIP-checksum downloads
    assert env(other, 1 << 30)["ORCHESTRATOR_BUILD_DIR_KEY"] == ""
    local = parse("pkgbase = l\n\tpkgver = 1\n\tpkgrel = 1\n\tsource = main.rs\n\npkgname = l\n")
    assert env(local, 1 << 30)["ORCHESTRATOR_BUILD_DIR_KEY"] != ""  # nothing remote to pin
