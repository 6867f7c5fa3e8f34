"""The two engines side by side: what a user pays for the swarm backend.

    .venv/bin/python bench/backends.py [--reps N] [--lines N] [--only build|cancel|narration ...]

Runs `orchestrator serve` twice as child processes, one with ORCHESTRATOR_BACKEND=docker and one
with swarm (the engine must be a swarm manager: `docker swarm init --advertise-addr 127.0.0.1`),
and measures each, interleaved so a noisy machine slows both alike: a trivial build from submit
to downloaded package, cancel (POST /cancel answers once the build's container or service is
gone; then nothing may be left; and how long after the request the last container is removed,
which on Swarm the node does by itself just after), and narration lines per second to an SSE
client (and that none is lost). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import docker

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Api, Service, build_tar, pct, submit_to_package

BACKENDS = ("docker", "swarm")


def left_behind(client: docker.DockerClient, job_id: str) -> tuple[int, float]:
    """What is left of the job (containers and services), once it is gone or after 10 s; and
    when it was last seen (``time.perf_counter()``)."""
    label = f"orchestrator.job={job_id}"
    deadline = time.monotonic() + 10  # a swarm node removes a task's container just after
    while True:
        seen = time.perf_counter()
        found = len(
            client.containers.list(all=True, ignore_removed=True, filters={"label": label})
        )
        found += len(client.services.list(filters={"label": label}))
        if not found or time.monotonic() > deadline:
            return found, seen
        time.sleep(0.01)


async def cancel_to_gone(api: Api, client: docker.DockerClient) -> tuple[float, float, int]:
    """POST /cancel → its answer, and → no container of the job left (ms); what was left."""
    job_id = await api.submit(build_tar("sleeper", marker=uuid.uuid4().hex))
    async for _, _event in api.events(job_id, until="sleeper started"):
        pass
    t0 = time.perf_counter()
    async with api.session.post(f"{api.url}/v1/jobs/{job_id}/cancel") as response:
        assert (await response.json())["status"] == "cancelled"
    took_ms = (time.perf_counter() - t0) * 1000
    left, seen = await asyncio.to_thread(left_behind, client, job_id)
    return took_ms, (seen - t0) * 1000, left


async def narration(api: Api, lines: int) -> tuple[float, int]:
    job_id = await api.submit(build_tar("narrate", lines=lines, pause_every=0))
    arrivals: list[float] = []
    numbers: list[int] = []
    async for arrived, event in api.events(job_id):
        if event.get("action") == "output" and event.get("stream") == "stdout":
            for line in event["message"].split("\n"):
                n, _, _ = line.partition(" ")
                if n.isdigit():
                    arrivals.append(arrived)
                    numbers.append(int(n))
    lost = len(set(range(1, lines + 1)) - set(numbers)) + len(numbers) - len(set(numbers))
    rate = len(arrivals) / max(arrivals[-1] - arrivals[0], 1e-6) if arrivals else 0.0
    return rate, lost


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} / {pct(values, 95):.3g}"


async def measure(
    api: Api, client: docker.DockerClient, into: dict[str, list[float]], args: argparse.Namespace
) -> None:
    if "build" in args.only:
        into["build"].append(await submit_to_package(api))
    if "cancel" in args.only:
        took, removed, left = await cancel_to_gone(api, client)
        into["cancel"].append(took)
        into["removed"].append(removed)
        into["left"].append(left)
    if "narration" in args.only:
        rate, lost = await narration(api, args.lines)
        into["rate"].append(rate)
        into["lost"].append(lost)


async def main(args: argparse.Namespace) -> str:
    client = docker.from_env()
    if not client.info().get("Swarm", {}).get("ControlAvailable"):
        raise SystemExit("not a swarm manager: docker swarm init --advertise-addr 127.0.0.1")
    results: dict[str, dict[str, list[float]]] = {
        b: {"build": [], "cancel": [], "removed": [], "left": [], "rate": [], "lost": []}
        for b in BACKENDS
    }
    with tempfile.TemporaryDirectory() as tmp:
        services = {
            b: Service(Path(tmp) / b, {"ORCHESTRATOR_BACKEND": b, "ORCHESTRATOR_CACHES": "false"})
            for b in BACKENDS
        }
        try:
            async with aiohttp.ClientSession() as session:
                apis = {b: Api(session, s.url) for b, s in services.items()}
                for s in services.values():
                    await s.ready(session)
                for _ in range(args.reps):
                    for b in BACKENDS:
                        await measure(apis[b], client, results[b], args)
        finally:
            for s in services.values():
                s.stop()
    d, s = results["docker"], results["swarm"]
    rows = [
        ("trivial build, submit → package downloaded", "s", "build"),
        ("cancel: POST /cancel → container/service gone", "ms", "cancel"),
        ("cancel: POST /cancel → no container left (seen every 10 ms)", "ms", "removed"),
        (f"narration, {args.lines} lines: lines/s at the client", "lines/s", "rate"),
    ]
    out = [
        f"reps={args.reps}, median / p95",
        "",
        "| measure | docker | swarm | swarm ÷ docker | unit |",
        "|---|---|---|---|---|",
    ]
    for name, unit, key in rows:
        if not d[key] or not s[key]:
            continue
        ratio = statistics.median(s[key]) / statistics.median(d[key])
        out.append(f"| {name} | {fmt(d[key])} | {fmt(s[key])} | {ratio:.2f}× | {unit} |")
    out.append(
        f"| left after cancel (containers + services), lines lost or doubled | "
        f"{sum(d['left']):.0f}, {sum(d['lost']):.0f} | {sum(s['left']):.0f}, "
        f"{sum(s['lost']):.0f} | | count |"
    )
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("build", "cancel", "narration"),
        default=("build", "cancel", "narration"),
        help="measure only these",
    )
    print(asyncio.run(main(parser.parse_args())))
