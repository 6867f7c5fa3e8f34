"""The warm readers' bookkeeping on the fake backend: how many, when one is replaced, what a
deadline does, and the counts /metrics shows. (What a reading isolates: tests/integration.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.build.readers import READER_LABEL, ReaderPool
from orchestrator.build.skeleton import Skeleton
from orchestrator.errors import BackendError, InspectTimeout, ShuttingDown
from orchestrator.metrics import Metrics

PKGBUILD = "pkgname=a\npkgver=1\npkgrel=1\npackage() { :; }\n"


def skeleton(text: str = PKGBUILD) -> Skeleton:
    return Skeleton(text.encode(), (), ())


def readers(backend: FakeBackend) -> list[str]:
    return [cid for cid, c in backend.containers.items() if READER_LABEL in c.step.labels]


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[tuple[ReaderPool, FakeBackend]]:
    backend = FakeBackend()
    pool = ReaderPool(backend, settings.model_copy(update={"readers": 2}), {}, Metrics())
    yield pool, backend
    await pool.close()
    assert readers(backend) == []


async def test_readings_at_once_share_at_most_the_readers_allowed(
    pool: tuple[ReaderPool, FakeBackend],
) -> None:
    readers_pool, backend = pool
    backend.reading = Script([("stdout", "pkgbase = a", 0.05)])
    answers = await asyncio.gather(*(readers_pool.read("img", skeleton(), 4096) for _ in range(8)))
    assert {a.stdout for a in answers} == {b"pkgbase = a\n"}
    assert len(readers(backend)) == 2
    # In each reader, each reading ran as a uid no reading used before there.
    users = [(cid, user) for cid, command, user in backend.execs if "makepkg" in " ".join(command)]
    assert len(set(users)) == 8 and all(int(u.split(":")[0]) >= 20000 for _, u in users)


async def test_a_reader_that_is_not_clean_after_a_reading_is_replaced(
    pool: tuple[ReaderPool, FakeBackend],
) -> None:
    readers_pool, backend = pool
    backend.tidy_code = 3  # a process of the reading's uid survived
    destroyed = asyncio.Event()
    destroy = backend.destroy

    async def destroying(handle: str) -> None:
        await destroy(handle)
        destroyed.set()

    backend.destroy = destroying  # type: ignore[method-assign]
    await readers_pool.read("img", skeleton(), 4096)
    [first] = readers(backend)
    async with asyncio.timeout(5):
        await destroyed.wait()  # the tidying, after the answer, finds it unclean
    assert readers(backend) == []
    backend.tidy_code = 0
    await readers_pool.read("img", skeleton(), 4096)
    assert readers(backend) and first not in readers(backend)


@pytest.mark.parametrize("limit", ["cpu", "wall"])
async def test_a_reading_past_its_deadline_is_stopped_and_its_reader_destroyed(
    settings: Settings, limit: str
) -> None:
    backend = FakeBackend()
    backend.reading = Script([("stdout", "pkgbase = a", 30.0)])
    quick = settings.model_copy(update={"inspect_timeout_s": 1.0, "inspect_wall_timeout_s": 0.2})
    if limit == "cpu":  # the reader has used 5 s of CPU time at once
        quick = quick.model_copy(update={"inspect_wall_timeout_s": 60.0})
        original = backend.setup

        async def hot_setup(step):  # type: ignore[no-untyped-def]
            handle = await original(step)
            backend.cpu[handle] = 5.0
            return handle

        backend.setup = hot_setup  # type: ignore[method-assign]
    pool = ReaderPool(backend, quick, {}, Metrics())
    with pytest.raises(InspectTimeout, match="CPU time" if limit == "cpu" else "more than 0.2 s"):
        await pool.read("img", skeleton(), 4096)
    await pool.close()
    assert readers(backend) == []


async def test_refused_submits_and_readings_are_counted(settings: Settings, tmp_path: Path) -> None:
    app = create_app(settings, backend=FakeBackend())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.post(
            "/v1/builds", data=b"not a tar", headers={"Content-Type": "application/x-tar"}
        )
        assert response.status == 400
        metrics = await (await client.get("/metrics")).text()
        assert 'orchestrator_submits_refused_total{reason="bad_archive"} 1.0' in metrics
        assert "orchestrator_pkgbuild_readers_busy 0.0" in metrics
        assert "orchestrator_pkgbuild_reading_seconds_count" in metrics


async def test_a_reader_whose_removal_fails_is_handed_on_and_no_longer_held(
    pool: tuple[ReaderPool, FakeBackend],
) -> None:
    readers_pool, backend = pool
    handed: list[str] = []
    handed_on = asyncio.Event()

    def unremoved(handle: str) -> None:
        handed.append(handle)
        handed_on.set()

    readers_pool.unremoved = unremoved
    destroy = backend.destroy

    async def failing(handle: str) -> None:
        backend.destroy = destroy  # type: ignore[method-assign]
        raise BackendError("the daemon did not answer in time")

    backend.destroy = failing  # type: ignore[method-assign]
    backend.tidy_code = 3
    await readers_pool.read("img", skeleton(), 4096)
    [reader] = readers(backend)
    assert readers_pool.held == {reader}
    async with asyncio.timeout(5):
        await handed_on.wait()
    assert handed == [reader] and readers_pool.held == set()
    await backend.destroy(reader)  # what the janitor would do


async def test_a_reading_asked_of_a_closed_pool_makes_no_reader(settings: Settings) -> None:
    backend = FakeBackend()
    pool = ReaderPool(backend, settings, {}, Metrics())
    await pool.close()
    with pytest.raises(ShuttingDown):
        await pool.read("img", skeleton(), 4096)
    assert readers(backend) == []


async def test_a_reader_made_while_the_pool_closes_is_removed(settings: Settings) -> None:
    backend = FakeBackend()
    pool = ReaderPool(backend, settings, {}, Metrics())
    made, go_on = asyncio.Event(), asyncio.Event()
    setup = backend.setup

    async def slow_setup(step):  # type: ignore[no-untyped-def]
        handle = await setup(step)
        made.set()
        await go_on.wait()  # the daemon answers late: the pool closes meanwhile
        return handle

    backend.setup = slow_setup  # type: ignore[method-assign]
    reading = asyncio.ensure_future(pool.read("img", skeleton(), 4096))
    await made.wait()
    closing = asyncio.ensure_future(pool.close())
    go_on.set()
    with pytest.raises(ShuttingDown):
        await reading
    await closing
    assert readers(backend) == []
