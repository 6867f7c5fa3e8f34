"""The janitor: removals that failed where they were made are retried in the background, and what
no live job or reading claims is swept up by label; nothing live is touched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import BuildRequest, CancelToken, JobStatus, Settings
from orchestrator.api import create_app
from orchestrator.api.keys import ENGINE, METRICS
from orchestrator.backend import Step
from orchestrator.backend.fake import FakeBackend
from orchestrator.build.readers import READER_LABEL
from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL, Runner
from orchestrator.errors import BackendError, BackendUnavailable
from orchestrator.jobs.janitor import Janitor, any_live, owned_by_readers
from orchestrator.metrics import Metrics

from .. import waiting
from ..conftest import PKGBUILDS, Recorder
from ..integration.service import tar_dir

LABELS = {INSTANCE_LABEL: "unit"}


class FailingRemovals(FakeBackend):
    """Every removal fails (as a daemon under load answers 500) while ``failing`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self.listing_fails = False
        self.listings = 0

    async def destroy(self, handle: str) -> None:
        if self.failing:
            self.calls.append(("destroy-failed", handle))
            raise BackendError("docker: 500 Server Error: the daemon is busy")
        await super().destroy(handle)

    async def close(self) -> None:
        """A daemon's containers outlive the client: closing removes nothing."""

    async def list_steps(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        self.listings += 1
        if self.listing_fails:
            raise BackendUnavailable("cannot reach the Docker daemon")
        return await super().list_steps(labels)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def step(backend: FakeBackend, **labels: str) -> str:
    return await backend.setup(Step("img", ("true",), {**LABELS, **labels}))


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Poll ``condition`` (state of the fake, no event to wait on), for at most ``timeout_s``."""
    await waiting.until(condition, timeout_s=timeout_s)


async def test_an_adopted_removal_is_retried_in_the_background_until_it_succeeds() -> None:
    backend = FailingRemovals()
    handle = await step(backend, **{JOB_LABEL: "j"})
    metrics = Metrics()
    janitor = Janitor(backend, LABELS, lambda *_: False, retry_s=0.01, metrics=metrics)
    janitor.start()
    try:
        janitor.adopt(handle)
        await until(lambda: backend.calls.count(("destroy-failed", handle)) >= 2)
        assert janitor.held == {handle}
        backend.failing = False
        await until(lambda: not janitor.held)
        assert handle not in backend.containers
    finally:
        await janitor.close()
    assert metrics.removals_failed._value.get() == 1
    assert metrics.janitor_removed.labels(how="retry")._value.get() == 1
    assert metrics.janitor_errors._value.get() >= 2


async def test_a_sweep_removes_only_what_no_one_has_claimed_for_the_grace() -> None:
    backend = FailingRemovals()
    backend.failing = False
    live_job = await step(backend, **{JOB_LABEL: "live"})
    ended_job = await step(backend, **{JOB_LABEL: "ended"})
    reader = await step(backend, **{READER_LABEL: "1"})
    theirs = await backend.setup(Step("img", ("true",), {INSTANCE_LABEL: "other"}))
    clock = Clock()

    def is_live(handle: str, labels: Mapping[str, str]) -> bool:
        return labels.get(JOB_LABEL) == "live"

    readers = {reader}  # the pool's set of the readers it holds
    janitor = Janitor(
        backend,
        LABELS,
        any_live(is_live, owned_by_readers(readers)),
        grace_s=30,
        clock=clock,
    )
    assert await janitor.sweep() == []  # first seen unclaimed now: within the grace
    clock.now += 29
    assert await janitor.sweep() == []
    clock.now += 1
    assert await janitor.sweep() == [ended_job]
    assert set(backend.containers) == {live_job, reader, theirs}

    readers.clear()  # the pool let its reader go; the grace starts from now
    assert await janitor.sweep() == []
    clock.now += 30
    assert await janitor.sweep() == [reader]
    assert set(backend.containers) == {live_job, theirs}


async def test_closing_removes_what_it_holds_and_all_unclaimed_but_nothing_live() -> None:
    backend = FailingRemovals()
    adopted = await step(backend, **{JOB_LABEL: "a"})
    unclaimed = await step(backend)
    live = await step(backend, **{JOB_LABEL: "live"})
    janitor = Janitor(backend, LABELS, lambda _, labels: labels.get(JOB_LABEL) == "live")
    janitor.start()
    janitor.adopt(adopted)
    backend.failing = False
    await janitor.close()
    assert set(backend.containers) == {live}
    assert unclaimed not in backend.containers


async def test_the_background_rounds_survive_a_daemon_that_cannot_be_reached() -> None:
    backend = FailingRemovals()
    backend.listing_fails = True
    left = await step(backend)
    janitor = Janitor(backend, LABELS, lambda *_: False, interval_s=0.01, grace_s=0)
    janitor.start()
    try:
        await until(lambda: backend.listings >= 2)  # rounds have failed, and go on
        backend.listing_fails = False
        backend.failing = False
        await until(lambda: left not in backend.containers)
    finally:
        await janitor.close()


async def test_the_runner_hands_a_container_it_could_not_remove_to_the_janitor(
    tmp_path: Path, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", instance_id="unit")
    backend = FailingRemovals()
    handed: list[str] = []
    runner = Runner(backend, settings)
    runner.unremoved = handed.append
    backend.failing = False  # makepkg's reading removes its container; the build's fails
    original = backend.setup

    async def setup(step: Step) -> str:
        handle = await original(step)
        backend.failing = JOB_LABEL in step.labels
        return handle

    backend.setup = setup  # type: ignore[method-assign]
    result = await runner.run(BuildRequest("j", build_dir("hello-c")), recorder, CancelToken())
    assert result.status is JobStatus.SUCCEEDED  # the build's own outcome stands
    [build] = [h for h, s in backend.steps.items() if JOB_LABEL in s.labels]
    assert handed == [build]
    assert build in backend.containers


async def test_the_service_stopping_removes_what_its_builds_could_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", instance_id="unit", janitor_interval_s=3600)
    backend = FailingRemovals()
    backend.failing = False
    original = backend.setup

    async def setup(step: Step) -> str:
        handle = await original(step)
        backend.failing = JOB_LABEL in step.labels
        return handle

    backend.setup = setup  # type: ignore[method-assign]
    app = create_app(settings, backend=backend)
    gz = {"Content-Type": "application/gzip"}
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        created = await client.post("/v1/builds", data=tar_dir(PKGBUILDS / "hello-c"), headers=gz)
        job_id = (await created.json())["job_id"]

        async def job() -> dict[str, object]:
            return dict(await (await client.get(f"/v1/jobs/{job_id}")).json())

        await waiting.until(job, lambda j: j["status"] == "succeeded", what=f"job {job_id}")
        assert [h for h, s in backend.steps.items() if h in backend.containers] != []
        assert app[METRICS].removals_failed._value.get() == 1
        backend.failing = False  # the daemon recovers; the service stops
    assert backend.containers == {}


async def test_a_daemon_that_never_answers_does_not_hold_the_stop() -> None:
    class Hanging(FailingRemovals):
        async def destroy(self, handle: str) -> None:
            await asyncio.Event().wait()  # no answer, ever

    backend = Hanging()
    held = await step(backend)
    janitor = Janitor(backend, LABELS, lambda *_: False, close_timeout_s=0.1)
    janitor.adopt(held)
    await asyncio.wait_for(janitor.close(), 5)
    assert janitor.held == {held}


async def test_the_service_removes_a_reader_its_pool_does_not_hold(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", instance_id="unit", janitor_grace_s=0)
    backend = FailingRemovals()
    backend.failing = False
    app = create_app(settings, backend=backend)
    async with TestClient(TestServer(app, host="127.0.0.1")):
        pool = app[ENGINE].runner.inspector.pool
        assert pool is not None
        lost = await step(backend, **{READER_LABEL: "1"})  # a reader whose removal failed
        assert lost not in pool.held
    assert lost not in backend.containers
