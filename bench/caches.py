"""Build caches: cold against warm wall time, and what a cold build pays for the cache.

    .venv/bin/python bench/caches.py [--only echo-worker,hexyl,gnu-hello] [--rounds N]
                                     [--backend docker|swarm] [--no-off]

For each package, per round: a build with cache=off (what a build cost before caches), a build
with a new, empty cache (cold: the cache machinery's own cost is the gap to cache=off), and a
second build with that cache (warm). Each round uses a fresh service instance, so its caches
start empty; the three builds of a round run back to back. Wall time is the engine's whole
build: container, copy-in, makepkg, copy-out, removal. Prints a Markdown table and writes
bench/results/caches-<UTC time>.json. Needs the cpu build image and the Docker daemon; the
packages download their sources (Debian's archive, the crate registry) on every cold build.

With ``--backend swarm`` the builds are swarm services (the engine is made a one-node swarm on
loopback if it is in none, and leaves it again at the end: run it under the swarm lock where
the engine is shared). There a cache is an archive the manager keeps, and no node holds
anything of it between builds: each warm build is a build on a node that never built the
package, its cache fetched and unpacked in the task.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator import BuildRequest, CancelToken, Engine, JobStatus, Settings  # noqa: E402
from orchestrator.build.runner import INSTANCE_LABEL  # noqa: E402
from orchestrator.catalog.workers import load  # noqa: E402
from orchestrator.narration.events import Event  # noqa: E402

TEST_PKGBUILDS = REPO / "tests" / "pkgbuilds"
_NOT_RUN: dict[str, Any] = {"wall_s": float("nan"), "cache": {}}  # --no-off


async def _source(name: str, dest: Path) -> Path:
    if name == "echo-worker":
        catalog = await load(None)
        return catalog.get(name).write_build_dir(dest)
    shutil.copytree(TEST_PKGBUILDS / name, dest)
    return dest


async def _build(engine: Engine, name: str, work: Path, cache: bool) -> dict[str, Any]:
    src = await _source(name, work / uuid.uuid4().hex)
    began = time.perf_counter()
    lines: list[Event] = []

    async def sink(batch: Any) -> None:
        lines.extend(batch)

    result = await engine.build(
        BuildRequest(uuid.uuid4().hex, src, cache=cache), sink, CancelToken()
    )
    took_s = time.perf_counter() - began
    if result.status is not JobStatus.SUCCEEDED:
        tail = "\n".join(e.message for e in lines[-40:])
        raise SystemExit(f"{name} failed ({result.reason}):\n{tail}")
    return {"wall_s": took_s, "cache": dict(result.cache or {})}


def _drop_volumes(client: docker.DockerClient, instance: str) -> None:
    for volume in client.volumes.list(filters={"label": f"{INSTANCE_LABEL}={instance}"}):
        volume.remove(force=True)


@contextlib.contextmanager
def _swarm(client: docker.DockerClient, wanted: bool) -> Iterator[None]:
    made = wanted and client.info().get("Swarm", {}).get("LocalNodeState") == "inactive"
    if made:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    try:
        yield
    finally:
        if made:
            client.swarm.leave(force=True)


async def bench(
    names: list[str], rounds: int, backend: str, off: bool = True
) -> dict[str, list[dict[str, Any]]]:
    client = docker.from_env()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    work = Path(tempfile.mkdtemp(prefix="bench-caches-"))
    try:
        with _swarm(client, backend == "swarm"):
            for round_ in range(rounds):
                for name in names:
                    results[name].append(await _round(client, work, name, backend, round_, off))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        client.close()
    return results


async def _round(
    client: docker.DockerClient, work: Path, name: str, backend: str, round_: int, off: bool
) -> dict[str, Any]:
    instance = f"bench-caches-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=work / instance, instance_id=instance, backend=backend)
    try:
        async with await Engine.open(settings) as engine:
            without = await _build(engine, name, work, cache=False) if off else _NOT_RUN
            cold = await _build(engine, name, work, cache=True)
            warm = await _build(engine, name, work, cache=True)
    finally:
        _drop_volumes(client, instance)
    print(
        f"{name} round {round_} ({backend}): off {without['wall_s']:.1f} s, cold "
        f"{cold['wall_s']:.1f} s, warm {warm['wall_s']:.1f} s; warm cache "
        f"{json.dumps(warm['cache'])}",
        flush=True,
    )
    return {"round": round_, "backend": backend, "off": without, "cold": cold, "warm": warm}


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        "| package | cache=off (s) | cold (s) | warm (s) | warm/cold | cold/off | warm hits |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        off = statistics.median(r["off"]["wall_s"] for r in runs)
        cold = statistics.median(r["cold"]["wall_s"] for r in runs)
        warm = statistics.median(r["warm"]["wall_s"] for r in runs)
        last = runs[-1]["warm"]["cache"]
        hits = []
        for tool in ("sources", "sccache", "ccache"):
            found = last.get(tool) or {}
            if found.get("hits", 0) + found.get("misses", 0):
                hits.append(f"{tool} {found['hits']}/{found['hits'] + found['misses']}")
        rows.append(
            f"| {name} | {off:.1f} | {cold:.1f} | {warm:.1f} | {warm / cold:.2f} | "
            f"{cold / off:.2f} | {', '.join(hits) or '—'} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="echo-worker,hexyl,gnu-hello")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", choices=("docker", "swarm"), default="docker")
    parser.add_argument("--no-off", action="store_true", help="skip the cache=off builds")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    results = asyncio.run(bench(names, args.rounds, args.backend, off=not args.no_off))
    print(table(results))
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"caches-{args.backend}-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
