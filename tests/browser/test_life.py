"""A long build shows its life on the job page: CPU and memory drawn over time and makepkg's
phases as a timeline, live while it runs and again from the replay once it has ended; and a
build of a package built before shows a progress bar, on its page and in the list. In Chromium,
against the real service and real makepkg builds of a build with a known life (the vitals
fixture: it holds a known amount of memory, then burns two cores, then is quiet)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator, Page, expect

from ..waiting import until
from .conftest import Service, screenshot

pytestmark = [pytest.mark.docker, pytest.mark.browser]

BUILD_S = 120_000  # ms: a real build, its image start and makepkg included
MIB = 1 << 20
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": MIB, "GiB": 1 << 30}
# Sampled every second, so a build of a few seconds draws many points.
LIFE = {"sample_interval_s": 1.0, "build_cpus": 2.0}


def at_least(count: int) -> re.Pattern[str]:
    """A ``data-points`` value of ``count`` or more."""
    return re.compile("^(" + "|".join(str(n) for n in range(count, 10)) + r"|\d\d+)$")


def peak_bytes(text: str) -> float:
    """The bytes a "peak 200.3 MiB" in a chart's caption says."""
    found = re.search(r"peak ([\d.]+) (B|KiB|MiB|GiB)", text)
    assert found, text
    return float(found[1]) * UNITS[found[2]]


async def finished(service: Service, job_id: str) -> dict[str, Any]:
    return await until(
        lambda: service.job(job_id),
        lambda job: job["finished_at"] is not None,
        timeout_s=BUILD_S / 1000,
        interval_s=0.5,
        what=f"job {job_id} to end",
    )


async def test_a_builds_cpu_memory_and_phases_are_drawn_live_and_kept(
    page: Page, serve: Callable[..., Any], build_dir: Callable[..., Path]
) -> None:
    async with serve(**LIFE) as service:
        src = build_dir("vitals", mib=200, hold_s=4, cpu_s=3, quiet_s=3)
        job_id = await service.submit(src)
        await page.goto(f"{service.url}/jobs/{job_id}")
        cpu, memory = page.locator("#cpu-chart"), page.locator("#memory-chart")

        # Live: the pictures grow while the build runs (once build() has started it holds,
        # burns and is quiet for 10 s more).
        await expect(page.locator("#life")).to_be_visible(timeout=BUILD_S)
        await expect(page.locator("#phases")).to_contain_text("build", timeout=BUILD_S)
        await expect(memory).to_have_attribute("data-points", at_least(2), timeout=BUILD_S)
        await expect(cpu).to_have_attribute("data-points", at_least(2))
        assert (await service.job(job_id))["status"] == "running"
        assert await page.locator("#memory-chart polyline").get_attribute("points")
        await screenshot(page, "life-running")
        await expect(page.locator("#ending")).to_contain_text("succeeded", timeout=BUILD_S)
        job = await service.job(job_id)

        # Kept: opened afresh, the page draws it all again from the stream's replay.
        await page.reload()
        await expect(page.locator("#ending")).to_contain_text("succeeded", timeout=BUILD_S)
        await expect(cpu).to_have_attribute("data-points", at_least(8))
        drawn = int(await memory.get_attribute("data-points") or 0)
        assert drawn == int(await cpu.get_attribute("data-points") or 0)
        phases = page.locator("#phases")
        await expect(phases).to_contain_text("build")
        await expect(phases).to_contain_text("package")
        await expect(page.locator("#phase-timeline rect.phase-build")).to_have_count(1)
        # The build held 200 MiB: the memory chart's peak says so (its shell and tools aside).
        peak = peak_bytes(await page.locator("#memory-peak").inner_text())
        assert abs(peak - 200 * MIB) <= 20 * MIB, peak / MIB
        assert job["peak_memory_bytes"] and abs(job["peak_memory_bytes"] - peak) <= MIB
        # Two processes burned 3 CPU-seconds each: the CPU chart says so (its peak in % depends
        # on how busy the machine was; the CPU time it got does not), as the record does.
        cpu_text = await page.locator("#cpu-now").inner_text()
        used = re.search(r"([\d.]+) CPU-seconds in all, peak (\d+)%", cpu_text)
        assert used and float(used[1]) >= 6 * 0.95 and int(used[2]) > 0, cpu_text
        assert abs(float(used[1]) - job["cpu_seconds"]) < 0.1, (cpu_text, job["cpu_seconds"])
        await screenshot(page, "life")


async def progress_rises(page: Page, bar: Locator) -> None:
    """The bar shows a value, then a greater one (it moves while the job runs)."""
    await expect(bar).to_be_visible(timeout=BUILD_S)
    first = await bar.evaluate("e => e.value")
    assert 0 <= first < 100
    handle = await bar.element_handle()
    await page.wait_for_function("([e, first]) => e.value > first", arg=[handle, first])


async def test_a_package_built_before_shows_its_progress_on_its_page_and_in_the_list(
    page: Page, serve: Callable[..., Any], build_dir: Callable[..., Path]
) -> None:
    async with serve(**LIFE) as service:
        fixture = {"mib": 20, "hold_s": 3, "cpu_s": 1, "quiet_s": 8}
        first = await service.submit(build_dir("vitals", **fixture))
        # A first build has no history: elapsed time only, no bar.
        await page.goto(f"{service.url}/jobs/{first}")
        await expect(page.locator("#job-status")).to_contain_text("running", timeout=BUILD_S)
        await expect(page.locator("dl.meta")).to_contain_text("Duration")
        await expect(page.locator("#job-progress")).to_be_hidden()
        assert (await finished(service, first))["status"] == "succeeded"

        second = await service.submit(build_dir("vitals", **fixture))
        await page.goto(service.url)
        row = page.locator(f"tr[data-job='{second}']")
        await expect(row).to_contain_text("running", timeout=BUILD_S)
        await progress_rises(page, row.get_by_role("progressbar"))
        await expect(page.locator(f"tr[data-job='{first}'] progress")).to_be_hidden()
        await screenshot(page, "jobs-progress")

        await row.get_by_role("link", name="vitals 1.0-1").click()
        await page.wait_for_url(f"{service.url}/jobs/{second}")
        bar = page.get_by_role("progressbar", name="Progress of this job")
        await progress_rises(page, bar)
        await expect(page.locator("#job-progress")).to_contain_text(re.compile(r"\d+%"))
        await expect(page.locator("dl.meta")).to_contain_text("Expected")
        await screenshot(page, "job-progress")
        await expect(page.locator("#ending")).to_contain_text("succeeded", timeout=BUILD_S)
        await expect(page.locator("#job-progress")).to_be_hidden()


# -- the page's own drawing, from a stream and records the test writes ----------------------

T0 = 1_800_000_000.0  # the build's start, Unix s


def frame(seq: int, event: dict[str, Any], kind: str | None = None) -> str:
    head = f"event: {kind}\n" if kind else ""
    return f"{head}id: {seq}\ndata: {json.dumps({'seq': seq, 'level': 'info', **event})}\n\n"


def replay() -> str:
    """An ended build's stream: its start, makepkg's phases, 20 samples (memory rising to
    300 MiB, a limit of 1 GiB), its end."""
    phases = [
        (0.5, "==> Starting prepare()..."),
        (1.0, "==> Starting build()..."),
        (20.0, "==> Entering fakeroot environment..."),
        (20.5, "==> Starting package()..."),
        (21.0, "==> Leaving fakeroot environment."),
        (21.5, "==> Finished making: life 1.0-1"),
    ]
    events = [(0.0, {"action": "build_started", "message": "makepkg started"}, None)]
    events += [
        (at, {"action": "phase", "message": line, "stream": "stdout"}, None) for at, line in phases
    ]
    for s in range(1, 21):
        memory = 15 * s * MIB
        sample = {
            "action": "sample",
            "message": f"CPU 150%, {15 * s} MiB",
            "elapsed_s": float(s),
            "cpu_percent": 150.0,
            "cpu_seconds": 1.5 * s,
            "memory_bytes": memory,
            "peak_memory_bytes": memory,
            "memory_limit_bytes": 1 << 30,
            "pids": 3,
        }
        events.append((float(s), sample, "sample"))
    events.sort(key=lambda e: e[0])
    body = "".join(
        frame(n, {"ts": T0 + at, **e}, kind) for n, (at, e, kind) in enumerate(events, 1)
    )
    end = {"status": "succeeded", "reason": "built", "exit_code": 0}
    return body + f"event: end\ndata: {json.dumps(end)}\n\ndata: [DONE]\n\n"


def record(job_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "job_id": job_id,
        "operation": "build",
        "pkgname": "life",
        "pkgver": "1.0-1",
        "variant": "cpu",
        "created_at": "2027-01-15T08:00:00Z",
        "started_at": "2027-01-15T08:00:00Z",
        "finished_at": None,
        "status": "running",
        "artifacts": [],
        "exit_code": None,
        "estimate_s": None,
        "progress": None,
        **fields,
    }


async def routed(page: Page, path: str, body: Any, content_type: str = "application/json") -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    await page.route(
        re.compile(re.escape(path) + r"(\?.*)?$"),
        lambda route: route.fulfill(status=200, body=text, content_type=content_type),
    )


async def test_the_pictures_draw_what_the_stream_replays(
    page: Page, serve: Callable[..., Any]
) -> None:
    async with serve() as service:
        ended = record(
            "feed0001",
            status="succeeded",
            finished_at="2027-01-15T08:00:22Z",
            phases_s={"prepare": 0.5, "build": 19.0, "package": 0.5},
        )
        await routed(page, "/v1/jobs/feed0001", ended)
        await routed(page, "/v1/jobs/feed0001/stream", replay(), "text/event-stream")
        await page.goto(f"{service.url}/jobs/feed0001")
        await expect(page.locator("#cpu-chart")).to_have_attribute("data-points", "20")
        await expect(page.locator("#memory-chart")).to_have_attribute("data-points", "20")
        await expect(page.locator("#memory-peak")).to_contain_text("peak 300.0 MiB of 1.0 GiB")
        # Ended: what it used in all, not what it used at its last sample.
        await expect(page.locator("#cpu-now")).to_have_text("30.0 CPU-seconds in all, peak 150%")
        legend = page.locator("#phases li")
        await expect(legend).to_have_text(["prepare 0.5s", "build 19s", "package 0.5s"])
        # On one time axis: the build bar starts at 1 s of the 21.5 shown.
        build = page.locator("#phase-timeline rect.phase-build")
        assert abs(float(await build.get_attribute("x") or 0) - 1000 / 21.5) < 1
        await expect(page.locator("#log")).not_to_contain_text("CPU 150%")  # samples are not lines
        await expect(page.locator("#job-progress")).to_be_hidden()
        await screenshot(page, "life-replayed")
        await page.set_viewport_size({"width": 400, "height": 800})
        assert await page.evaluate("document.documentElement.scrollWidth") <= 400
        await screenshot(page, "life-replayed-400px")


async def test_a_running_jobs_bar_moves_on_between_reads(
    page: Page, serve: Callable[..., Any]
) -> None:
    async with serve() as service:
        job = record("feed0002", estimate_s=200.0, progress=0.5)
        await routed(page, "/v1/jobs/feed0002", job)
        await routed(page, "/v1/jobs/feed0002/stream", ": keep-alive\n\n", "text/event-stream")
        await routed(page, "/v1/jobs", {"jobs": [job], "total": 1, "limit": 100, "offset": 0})
        await page.goto(service.url)
        bar = page.get_by_role("progressbar", name="Progress of job feed0002")
        await expect(bar).to_have_js_property("value", 50)
        await page.set_viewport_size({"width": 400, "height": 800})
        assert await page.evaluate("document.documentElement.scrollWidth") <= 400
        # The bar leaves room for the row's Cancel: the table needs no sideways scroll.
        assert await page.locator(".scroll-x").evaluate("e => e.scrollWidth <= e.clientWidth")
        await screenshot(page, "jobs-progress-400px")
        await page.goto(f"{service.url}/jobs/feed0002")
        bar = page.get_by_role("progressbar", name="Progress of this job")
        await expect(bar).to_have_js_property("value", 50)
        await expect(page.locator("#job-progress")).to_contain_text("50%, about 1m 40s left")
        # Read again every 5 s, the same 50% each time: the bar moves on from it meanwhile.
        await expect(bar).to_have_js_property("value", 51, timeout=5000)
        await expect(page.locator("dl.meta")).to_contain_text("3m 20s")
