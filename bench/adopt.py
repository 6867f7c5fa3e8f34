"""Adoption: from a service's start to the adopted build's next line on a resumed stream.

    .venv/bin/python bench/adopt.py [--reps N]

Per run: a service starts a build that prints a line every 10 ms, is killed (kill -9) once a
client has seen line 20, and a new service is started on the same data directory while the
build goes on. Measured from the new process's spawn: healthy (``/health`` answers 200), the
narration line "Service restarted: build adopted" on a stream resumed with ``Last-Event-ID``,
and the first line the build printed after that (the stream is live again). Every run also
checks that the client saw every line exactly once. Needs the cpu build image and the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.narration import sse  # noqa: E402

PKGBUILD = REPO / "bench" / "pkgbuilds" / "ticking" / "PKGBUILD"
LINE = re.compile(r"^line (\d+)$", re.MULTILINE)


def spawn(data: Path, instance: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "ORCHESTRATOR_DATA_DIR": str(data),
        "ORCHESTRATOR_INSTANCE_ID": instance,
        "ORCHESTRATOR_PORT": str(port),
        "ORCHESTRATOR_CACHES": "off",  # a cache volume per run would outlive the bench
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


async def healthy(session: aiohttp.ClientSession, url: str) -> None:
    while True:
        try:
            async with session.get(f"{url}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.01)


class Reader:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    async def read(self, session: aiohttp.ClientSession, url: str, until: Any = None) -> None:
        headers = {"Last-Event-ID": str(self.last_id)} if self.last_id else {}
        try:
            async with session.get(f"{url}/v1/jobs/{self.job_id}/stream", headers=headers) as r:
                async for message in sse.messages(r.content.iter_any()):
                    if message.is_end or message.is_done:
                        continue
                    event = message.json()
                    self.events.append(event)
                    self.last_id = int(message.id)
                    if until is not None and until(event):
                        return
        except aiohttp.ClientError:
            pass

    def lines(self) -> list[str]:
        return [
            line
            for e in self.events
            if e["action"] == "output"
            for line in e["message"].split("\n")
            if line.startswith(("line ", "last "))
        ]


def tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        data = PKGBUILD.read_bytes()
        info = tarfile.TarInfo("PKGBUILD")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def past(n: int) -> Any:
    """An ``until``: an output event holding line ``n`` or a later one."""

    def seen(event: dict[str, Any]) -> bool:
        numbers = LINE.findall(event["message"])
        return event["action"] == "output" and any(int(x) >= n for x in numbers)

    return seen


async def one_run(session: aiohttp.ClientSession, client: docker.DockerClient) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data, instance = Path(tmp), f"bench-adopt-{uuid.uuid4().hex[:8]}"
        first, url = spawn(data, instance)
        second: subprocess.Popen[bytes] | None = None
        try:
            await healthy(session, url)
            headers = {"Content-Type": "application/x-tar"}
            async with session.post(f"{url}/v1/builds", data=tar(), headers=headers) as r:
                job_id = (await r.json())["job_id"]
            reader = Reader(job_id)
            await reader.read(session, url, until=past(20))
            first.send_signal(signal.SIGKILL)
            first.wait()

            began = time.perf_counter()
            second, url = spawn(data, instance)
            await healthy(session, url)
            up = time.perf_counter() - began
            await reader.read(session, url, until=lambda e: e["action"] == "adopted")
            adopted = time.perf_counter() - began
            read_back = int(re.sub(r"\D", "", reader.events[-1]["message"].split(",")[1]))
            await reader.read(session, url, until=past(1))
            live = time.perf_counter() - began
            [container] = client.containers.list(filters={"label": f"orchestrator.job={job_id}"})
            container.exec_run(["touch", "/tmp/release"], user="builder")
            await reader.read(session, url)
            out = reader.lines()
            last = int(out[-1].split()[1])
            assert out == [f"line {i}" for i in range(1, last + 1)] + [f"last {last}"], "lines"
            return {"healthy": up, "adopted": adopted, "next line": live, "read back": read_back}
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)


async def main(reps: int) -> None:
    client = docker.from_env()
    runs = []
    async with aiohttp.ClientSession() as session:
        for _ in range(reps):
            runs.append(await one_run(session, client))
    print(f"| from the new service's spawn ({reps} runs) | median | max |")
    print("|---|---|---|")
    for key in ("healthy", "adopted", "next line"):
        values = [run[key] for run in runs]
        print(f"| {key} | {statistics.median(values):.2f} s | {max(values):.2f} s |")
    lines = [run["read back"] for run in runs]
    print(f"| lines read back | {statistics.median(lines):.0f} | {max(lines):.0f} |")
    print("every line exactly once in every run")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    asyncio.run(main(parser.parse_args().reps))
