"""The registry stops once: a second shutdown (the app calls it from ``on_shutdown`` and again
from its cleanup context) waits for the first and does nothing more."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.api.keys import REGISTRY, STORE
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.narration.bus import Bus

from .. import waiting
from ..conftest import PKGBUILDS
from ..integration.service import tar_dir

SLOW = Script([("stdout", "started", 0), ("stdout", "never printed", 60)])
GZ = {"Content-Type": "application/gzip"}


@pytest.fixture
def bus_shutdowns(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When ``Bus.shutdown`` ran: the last step of a registry's shutdown, once per shutdown."""
    calls: list[float] = []
    original = Bus.shutdown

    def counted(self: Bus) -> None:
        calls.append(time.monotonic())
        original(self)

    monkeypatch.setattr(Bus, "shutdown", counted)
    return calls


async def wait_status(client: TestClient, job_id: str, status: str) -> None:
    async def job() -> dict[str, object]:
        return dict(await (await client.get(f"/v1/jobs/{job_id}")).json())

    await waiting.until(job, lambda j: j["status"] == status, what=f"job {job_id}")


async def wait_output(app: web.Application, job_id: str) -> None:
    """Until the build has printed: its step has started (a stop then leaves it running)."""
    await waiting.until(
        lambda: app[STORE].events(job_id),
        lambda events: any(e.action == "output" for e in events),
        what=f"job {job_id}'s output",
    )


async def test_concurrent_and_later_shutdowns_do_the_work_once(
    settings: Settings, bus_shutdowns: list[float]
) -> None:
    settings = settings.model_copy(update={"on_stop": "leave"})
    app = create_app(settings, backend=FakeBackend(SLOW))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        created = await client.post("/v1/builds", data=tar_dir(PKGBUILDS / "hello-c"), headers=GZ)
        assert created.status == 201
        job_id = (await created.json())["job_id"]
        await wait_output(app, job_id)

        registry = app[REGISTRY]
        await asyncio.wait_for(asyncio.gather(registry.shutdown(), registry.shutdown()), 10)
        assert len(bus_shutdowns) == 1
        job = await (await client.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "running"  # left running, for the next start to adopt

        # A call after it has finished returns at once.
        await asyncio.wait_for(registry.shutdown(), 1)
        assert len(bus_shutdowns) == 1
    # Closing the app calls it twice more (on_shutdown, then the cleanup context).
    assert len(bus_shutdowns) == 1


async def test_closing_the_app_stops_the_registry_once(
    settings: Settings, bus_shutdowns: list[float]
) -> None:
    async with TestClient(TestServer(create_app(settings, backend=FakeBackend()))) as client:
        assert (await client.get("/health")).status == 200
    assert len(bus_shutdowns) == 1


async def test_a_cancelled_caller_does_not_cut_the_shutdown_short(
    settings: Settings, bus_shutdowns: list[float]
) -> None:
    settings = settings.model_copy(update={"on_stop": "leave"})
    app = create_app(settings, backend=FakeBackend(SLOW))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        created = await client.post("/v1/builds", data=tar_dir(PKGBUILDS / "hello-c"), headers=GZ)
        job_id = (await created.json())["job_id"]
        await wait_output(app, job_id)

        first = asyncio.ensure_future(app[REGISTRY].shutdown())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(app[REGISTRY].shutdown(), 10)  # waits for the same work
        assert len(bus_shutdowns) == 1
        job = await (await client.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "running"  # left running, for the next start to adopt
    assert len(bus_shutdowns) == 1
