"""A long build shows its life: resource samples on its stream and in its record, a silence
explained, makepkg's phases timed, and an estimate from the package's earlier build.

The build (``tests/pkgbuilds/vitals``) is a C program whose life is known: it holds 300 MiB,
then two processes each burn 5 s of their own CPU time (so the figure holds on a busy
machine), then it is quiet for longer than the silence setting.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from orchestrator import Settings

from .. import waiting
from .conftest import serve
from .service import read_sse, submit, wait_status

pytestmark = pytest.mark.docker

MiB = 1 << 20
HELD_MIB = 300
CPU_S = 5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"sample_interval_s": 1.0, "silence_s": 6.0})


def vitals_build(build_dir: Callable[..., Path], quiet_s: int = 9) -> Path:
    return build_dir("vitals", mib=HELD_MIB, hold_s=4, cpu_s=CPU_S, quiet_s=quiet_s)


async def test_a_builds_samples_silence_and_totals_say_what_it_did(
    settings: Settings, docker_client: docker.DockerClient, build_dir: Callable[..., Path]
) -> None:
    async with serve(settings) as client:
        job = await submit(client, vitals_build(build_dir))
        stream = await read_sse(client, job["job_id"], samples=True, timeout_s=300)
        record = await wait_status(client, job["job_id"], {"succeeded"})

    samples = [e for e in stream.events if e["action"] == "sample"]
    # Throughout: about one a second from its start to its end, with every figure.
    assert len(samples) >= 10, [e["action"] for e in stream.events]
    gaps = [b["elapsed_s"] - a["elapsed_s"] for a, b in itertools.pairwise(samples)]
    assert max(gaps) < 5, gaps
    assert all(s["memory_limit_bytes"] == settings.build_memory_bytes for s in samples)
    assert {"cpu_seconds", "cpu_percent", "memory_bytes", "pids"} <= set(samples[-1])

    # What it held and burnt, as the record keeps it.
    peak = record["peak_memory_bytes"]
    assert abs(peak - HELD_MIB * MiB) <= 0.1 * HELD_MIB * MiB, peak / MiB
    # Two cores busy for 5 s each: 10 CPU seconds between the samples around the burn (the
    # record's total also holds makepkg's own work: compiling, packaging).
    before, after = _around(stream.events, "burning", "quiet now")
    burnt = after["cpu_seconds"] - before["cpu_seconds"]
    assert 2 * CPU_S * 0.95 <= burnt <= 2 * CPU_S * 1.1, burnt
    assert record["cpu_seconds"] >= burnt
    assert record["peak_pids"] >= 3  # makepkg's shell, and the two burners at once
    assert max(s["cpu_percent"] for s in samples) > 50  # (how far over 100 depends on the load)
    assert set(record["phases_s"]) >= {"prepare", "build", "package"}
    assert record["phases_s"]["build"] >= 9 + 4  # held 4 s, burnt ~5, then quiet 9

    # The quiet spell is explained, with what the build was doing.
    # (the burn prints nothing either: on a busy machine it may be explained too)
    quiet = next(i for i, e in enumerate(stream.events) if e["message"].endswith("quiet now"))
    silences = [e for e in stream.events[quiet:] if e["action"] == "silence"]
    assert len(silences) == 1, silences
    assert silences[0]["message"].startswith("no output for "), silences
    assert "running: " in silences[0]["message"] and "sleep" in silences[0]["message"], silences
    # A client reading only narration never sees a sample (their own SSE type).
    narration = await read_sse_without_samples(settings, job["job_id"])
    assert "sample" not in narration


async def read_sse_without_samples(settings: Settings, job_id: str) -> list[str]:
    async with serve(settings) as client:
        return (await read_sse(client, job_id)).actions()


async def test_the_second_build_of_a_package_is_estimated_from_the_first(
    client: TestClient, build_dir: Callable[..., Path]
) -> None:
    first = await submit(client, vitals_build(build_dir, quiet_s=2))
    done = await wait_status(client, first["job_id"], {"succeeded"}, timeout_s=300)
    assert done["estimate_s"] is None  # nothing to go by yet
    took = _seconds(done["finished_at"]) - _seconds(done["started_at"])

    second = await submit(client, vitals_build(build_dir, quiet_s=2))

    async def job() -> dict[str, Any]:
        return dict(await (await client.get(f"/v1/jobs/{second['job_id']}")).json())

    running = await waiting.until(
        job,
        lambda j: bool(j["progress"]) or j["status"] not in ("queued", "running"),
        timeout_s=120,
        interval_s=0.2,
        what="the second build's progress",
    )
    assert running["status"] == "running" and 0 < running["progress"] < 1, running
    stream = await read_sse(client, second["job_id"], timeout_s=300)
    [said] = [e for e in stream.events if e["action"] == "estimate"]
    again = await wait_status(client, second["job_id"], {"succeeded"})
    real = _seconds(again["finished_at"]) - _seconds(again["started_at"])
    assert said["estimate_s"] == pytest.approx(took, abs=0.01)
    assert abs(again["estimate_s"] - real) <= 0.5 * real, (again["estimate_s"], real)
    assert "Expected to take about" in said["message"]
    assert again["progress"] is None  # only while it runs


def _around(events: list[dict[str, Any]], first: str, last: str) -> tuple[dict[str, Any], ...]:
    """The last sample before the line ``first`` and the first one after the line ``last``."""
    lines = [i for i, e in enumerate(events) if e["action"] == "output"]
    start = next(i for i in lines if first in events[i]["message"].split("\n"))
    end = next(i for i in lines if last in events[i]["message"].split("\n"))
    samples = [i for i, e in enumerate(events) if e["action"] == "sample"]
    return events[max(i for i in samples if i < start)], events[min(i for i in samples if i > end)]


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
