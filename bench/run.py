"""Benchmarks: the orchestrator against plain docker-py, side by side in one run.

    .venv/bin/python bench/run.py [--reps N] [--only overhead,cancel,narration,scale,stalled,
                                              submit,diskfull]

Writes bench/results/<UTC time>.md and .json and prints the table. Each comparison interleaves
its two sides, so a noisy machine slows both alike and the ratios hold. Needs the build images
(images/bootstrap) and the Docker daemon; runs `orchestrator serve` as a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.narration import sse  # noqa: E402

PKGBUILDS = Path(__file__).resolve().parent / "pkgbuilds"
IMAGE = "orchestrator/build:cpu"
LABEL = "orchestrator.bench"


# -- helpers --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def build_tar(name: str, **fill: object) -> bytes:
    text = (PKGBUILDS / name / "PKGBUILD").read_text()
    for key, value in fill.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("PKGBUILD")
        info.size, info.uid, info.gid, info.mode = len(data), 1000, 1000, 0o644
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class Row:
    name: str
    ours: list[float]
    raw: list[float] | None
    unit: str
    target: str = ""
    passed: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        def fmt(values: list[float] | None) -> str:
            if not values:
                return "—"
            return f"{statistics.median(values):.3g} / {pct(values, 95):.3g}"

        ratio = "—"
        if self.raw:
            ratio = f"{statistics.median(self.ours) / statistics.median(self.raw):.2f}×"
        verdict = {True: "✅", False: "❌", None: ""}[self.passed]
        return [
            self.name,
            fmt(self.ours),
            fmt(self.raw),
            ratio,
            self.unit,
            f"{self.target} {verdict}".strip(),
            self.note,
        ]


class Service:
    """`orchestrator serve` as a child process, with its RSS sampled."""

    def __init__(self, data: Path, env: dict[str, str] | None = None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.instance_id = f"bench-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "ORCHESTRATOR_DATA_DIR": str(data),
            "ORCHESTRATOR_PORT": str(self.port),
            "ORCHESTRATOR_INSTANCE_ID": self.instance_id,
            "ORCHESTRATOR_MAX_CONCURRENT_BUILDS": "16",
            "ORCHESTRATOR_ON_STOP": "cancel",  # the bench's builds end with its service
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.peak_rss = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        while not self._stop.is_set():
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.02)

    def cpu_s(self) -> float:
        """CPU time the service has used so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset_peak(self) -> None:
        self.peak_rss = 0

    def rss(self) -> int:
        """The service's resident memory now, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    async def ready(self, session: aiohttp.ClientSession) -> None:
        for _ in range(200):
            try:
                async with session.get(f"{self.url}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("the service did not start")

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        self.proc.wait(60)
        # Its build caches are its own: a bench leaves nothing behind on the daemon.
        subprocess.run(
            "docker volume ls -q --filter label=orchestrator.instance="
            f"{self.instance_id} | xargs -r docker volume rm",
            shell=True,
            check=False,
            capture_output=True,
        )


@dataclass
class Api:
    session: aiohttp.ClientSession
    url: str

    async def submit(self, tar: bytes) -> str:
        async with self.session.post(
            f"{self.url}/v1/builds", data=tar, headers={"Content-Type": "application/x-tar"}
        ) as response:
            assert response.status == 201, await response.text()
            return str((await response.json())["job_id"])

    async def events(self, job_id: str, until: str | None = None):  # type: ignore[no-untyped-def]
        """Yield (arrival time, event) to the end marker (or to an event with line ``until``)."""
        async with self.session.get(f"{self.url}/v1/jobs/{job_id}/stream") as response:
            async for message in sse.messages(response.content.iter_any()):
                if message.is_done:
                    return
                if message.is_end:
                    yield time.time(), {"end": message.json()}
                    continue
                event = message.json()
                yield time.time(), event
                if until is not None and until in event.get("message", "").split("\n"):
                    return


# -- raw docker-py, the baseline ----------------------------------------------------------------


def raw_create(client: docker.DockerClient, command: list[str] | None = None) -> Any:
    client.images.get(IMAGE)
    return client.containers.create(
        IMAGE,
        command,
        user="builder",
        working_dir="/build",
        environment={"PKGDEST": "/out"},
        labels={LABEL: "raw"},
        init=True,
        security_opt=["no-new-privileges"],
        cap_drop=["ALL"],
        detach=True,
    )


def raw_build(client: docker.DockerClient, tar: bytes) -> int:
    """create, copy in, attach, start, read every line, wait, copy out, remove."""
    container = raw_create(client, ["makepkg", "--nodeps", "--noconfirm", "--noprogressbar"])
    try:
        container.put_archive("/build", tar)
        stream = client.api.attach(container.id, stdout=True, stderr=True, stream=True, logs=True)
        container.start()
        lines = sum(chunk.count(b"\n") for chunk in stream)
        container.wait()
        bits, _ = container.get_archive("/out/.")
        with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as out:
            assert any(n.endswith(".pkg.tar.gz") for n in out.getnames())
        return lines
    finally:
        container.remove(force=True, v=True)


def leftovers(client: docker.DockerClient, marker: str) -> tuple[int, int]:
    containers = client.containers.list(all=True, filters={"label": LABEL})
    processes = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return len(containers), len(processes.stdout.split())


# -- scenarios ----------------------------------------------------------------------------------


async def submit_to_package(api: Api, tar: bytes | None = None) -> float:
    """Seconds from submitting a trivial build to its package downloaded whole."""
    t0 = time.perf_counter()
    job_id = await api.submit(tar if tar is not None else build_tar("trivial"))
    async for _, event in api.events(job_id):
        if "end" in event:
            assert event["end"]["status"] == "succeeded", event
    async with api.session.get(f"{api.url}/v1/jobs/{job_id}/artifacts") as response:
        [artifact] = (await response.json())["artifacts"]
    async with api.session.get(api.url + artifact["url"]) as response:
        assert len(await response.read()) == artifact["size_bytes"]
    return time.perf_counter() - t0


async def overhead(api: Api, client: docker.DockerClient, reps: int) -> list[Row]:
    tar = build_tar("trivial")
    ours, raw = [], []
    for _ in range(reps):
        ours.append(await submit_to_package(api, tar))

        t0 = time.perf_counter()
        await asyncio.to_thread(raw_build, client, tar)
        raw.append(time.perf_counter() - t0)
    ratio = statistics.median(ours) / statistics.median(raw)
    return [
        Row("trivial build, submit → package downloaded", ours, raw, "s", "≤ 1.15×", ratio <= 1.15)
    ]


async def cancel(api: Api, client: docker.DockerClient, reps: int) -> list[Row]:
    ours, raw, left = [], [], 0
    for _ in range(reps):
        marker = uuid.uuid4().hex
        job_id = await api.submit(build_tar("sleeper", marker=marker))
        async for _, _event in api.events(job_id, until="sleeper started"):
            pass
        await asyncio.sleep(0.3)  # the main loop is up too
        t0 = time.perf_counter()
        async with api.session.post(f"{api.url}/v1/jobs/{job_id}/cancel") as response:
            assert (await response.json())["status"] == "cancelled"
        ours.append((time.perf_counter() - t0) * 1000)
        gone = client.containers.list(all=True, filters={"label": f"orchestrator.job={job_id}"})
        left += len(gone) + leftovers(client, marker)[1]

        container = raw_create(
            client, ["bash", "-c", f"sleep 1000 & sleep 1000 & exec sleep 1001 # {marker}"]
        )
        container.start()
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        container.kill()
        container.wait()
        raw.append((time.perf_counter() - t0) * 1000)
        container.remove(force=True)
    ratio = statistics.median(ours) / statistics.median(raw)
    return [
        Row(
            "cancel: POST /cancel → container gone (raw: kill + wait)",
            ours,
            raw,
            "ms",
            "≤ 1.3×",
            ratio <= 1.3,
            "ours includes removing the container",
        ),
        Row("cancel p99", [pct(ours, 99)], None, "ms", "< 300", pct(ours, 99) < 300),
        Row(
            "cancel leftovers (containers + processes)",
            [float(left)],
            None,
            "count",
            "0",
            left == 0,
        ),
    ]


def _stamped_lines(received: list[tuple[float, str]]) -> tuple[list[float], list[float]]:
    """Arrival times and latencies (ms) of the ``<n> <unix time>`` lines of the narrate build.

    Parsed after the stream has ended, so that the reader does as little as possible while it
    receives (both sides alike): per-line work in the receive loop would be the client's cost,
    not the service's, and on two cores it would show up as latency.
    """
    arrivals, latencies = [], []
    for arrived, text in received:
        for line in text.split("\n"):
            n, _, stamp = line.partition(" ")
            if n.isdigit():
                arrivals.append(arrived)
                latencies.append((arrived - float(stamp)) * 1000)
    return arrivals, latencies


def _rate(arrivals: list[float]) -> float:
    return len(arrivals) / max(arrivals[-1] - arrivals[0], 1e-6) if arrivals else 0.0


async def narration(
    api: Api, client: docker.DockerClient, service: Service, reps: int, lines: int
) -> list[Row]:
    tar = build_tar("narrate", lines=lines, pause_every=0)
    ours_rate, raw_rate, latencies, raw_latencies, lost = [], [], [], [], 0
    cpu_us_per_line = []
    peak = 0
    for _ in range(reps):
        service.reset_peak()
        cpu_before = service.cpu_s()
        job_id = await api.submit(tar)
        stalled = await api.session.get(f"{api.url}/v1/jobs/{job_id}/stream")  # never read
        received = [
            (arrived, event["message"])
            async for arrived, event in api.events(job_id)
            if event.get("action") == "output" and event.get("stream") == "stdout"
        ]
        stalled.close()
        arrivals, delays = _stamped_lines(received)
        latencies += delays
        lost += lines - len(arrivals)
        ours_rate.append(_rate(arrivals))
        peak = max(peak, service.peak_rss)
        cpu_us_per_line.append((service.cpu_s() - cpu_before) / lines * 1e6)

        def raw_follow() -> tuple[float, list[float]]:
            container = raw_create(
                client, ["makepkg", "--nodeps", "--noconfirm", "--noprogressbar"]
            )
            try:
                container.put_archive("/build", tar)
                stream = client.api.attach(
                    container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
                )
                container.start()
                received = [(time.time(), out) for out, _err in stream if out]
            finally:
                container.remove(force=True, v=True)
            # Frames cut lines anywhere: join them up again, keeping each line's arrival.
            joined, partial = [], ""
            for arrived, out in received:
                text = partial + out.decode()
                complete, _, partial = text.rpartition("\n")
                if complete:
                    joined.append((arrived, complete))
            arrivals, delays = _stamped_lines(joined)
            return _rate(arrivals), delays

        rate, delays = await asyncio.to_thread(raw_follow)
        raw_rate.append(rate)
        raw_latencies += delays
    ratio = statistics.median(ours_rate) / statistics.median(raw_rate)
    return [
        Row(
            f"narration: {lines} lines/s to an SSE client (raw: attach)",
            ours_rate,
            raw_rate,
            "lines/s",
            "≥ 80%",
            ratio >= 0.8,
        ),
        Row(
            "line latency, container timestamp → SSE client (raw: → attach reader)",
            latencies,
            raw_latencies,
            "ms",
            "p50 < 20",
            statistics.median(latencies) < 20,
        ),
        Row("lines lost", [float(lost)], None, "count", "0", lost == 0),
        Row(
            "service CPU per line (whole job: build, store, 2 subscribers)",
            cpu_us_per_line,
            None,
            "µs",
            "reported",
            note="steadier than the rates, which swing with the daemon",
        ),
        Row(
            "service peak RSS, one fast + one stalled subscriber",
            [peak / 2**20],
            None,
            "MiB",
            "bounded",
        ),
    ]


async def scale(api: Api, service: Service, builds: int, subscribers: int, lines: int) -> list[Row]:
    service.reset_peak()
    tar = build_tar("trivial")
    t0 = time.perf_counter()

    async def one() -> str:
        job_id = await api.submit(tar)
        status = ""
        async for _, event in api.events(job_id):
            status = event.get("end", {}).get("status", status)
        return status

    statuses = await asyncio.gather(*(one() for _ in range(builds)), return_exceptions=True)
    wall = time.perf_counter() - t0
    failed = sum(1 for s in statuses if s != "succeeded")

    job_id = await api.submit(build_tar("narrate", lines=lines, pause_every=200))

    async def subscriber() -> int:
        seen = set()
        async for _, event in api.events(job_id):
            if event.get("action") != "output" or event.get("stream") != "stdout":
                continue
            for line in event["message"].split("\n"):
                n = line.split(" ")[0]
                if n.isdigit():
                    seen.add(int(n))
        return len(seen)

    counts = await asyncio.gather(
        *(subscriber() for _ in range(subscribers)), return_exceptions=True
    )
    errors = sum(1 for c in counts if isinstance(c, BaseException))
    lost = sum(lines - c for c in counts if isinstance(c, int))
    return [
        Row(
            f"{builds} concurrent trivial builds (wall time)",
            [wall],
            None,
            "s",
            "no failures",
            failed == 0,
            f"{failed} failed",
        ),
        Row(
            f"{subscribers} SSE subscribers on one job of {lines} lines: lines lost",
            [float(lost)],
            None,
            "count",
            "0, no errors",
            lost == 0 and errors == 0,
            f"{errors} errors",
        ),
        Row(
            "service peak RSS during the scale runs",
            [service.peak_rss / 2**20],
            None,
            "MiB",
            "reported",
        ),
    ]


STALL_RSS_CAP = 4 * 2**30  # the old code grew without bound: stop the run before the machine does


def _open_stalled(port: int, path: str) -> socket.socket:
    """A client that asks for the stream and never reads a byte of it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _dropped(socks: list[socket.socket]) -> int:
    """How many of them the service has closed (FIN or RST), unread data or not."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return len(poller.poll(0))


async def stalled(
    api: Api, service: Service, clients: int, hold_s: float, warm_s: float = 15.0
) -> list[Row]:
    """Clients that open a busy job's stream and never read: what they cost the service.

    The job prints about 1.2 MB/s; after ``warm_s`` the bus's 16 MiB ring is full, so the
    "before" figure already includes it and a newcomer's replay starts in the store.
    """
    job_id = await api.submit(build_tar("busy", burst=150))
    seen: list[int] = []

    async def reader() -> None:
        async for _, event in api.events(job_id):
            if event.get("action") == "output" and event.get("stream") == "stdout":
                # A cancel can cut the last line short: count whole ones only.
                seen.extend(
                    int(line[:9]) for line in event["message"].split("\n") if len(line) == 98
                )

    reading = asyncio.create_task(reader())
    await asyncio.sleep(warm_s)
    before = service.rss()
    service.reset_peak()
    path = f"/v1/jobs/{job_id}/stream"
    socks: list[socket.socket] = []
    capped = False
    t0 = time.monotonic()
    try:
        for _ in range(clients):
            socks.append(await asyncio.to_thread(_open_stalled, service.port, path))
            await asyncio.sleep(0.005)
        all_open = time.monotonic()
        while time.monotonic() - all_open < hold_s:
            if service.peak_rss > STALL_RSS_CAP:
                capped = True
                break
            await asyncio.sleep(0.5)
        held_s = time.monotonic() - t0
        peak = service.peak_rss
        dropped = _dropped(socks)
    finally:
        for sock in socks:
            sock.close()
    await asyncio.sleep(10)  # the service notices and lets go
    after = service.rss()
    async with api.session.post(f"{api.url}/v1/jobs/{job_id}/cancel") as response:
        assert (await response.json())["status"] == "cancelled"
    await asyncio.wait_for(reading, 120)
    # Lines are numbered from 1 with no gaps: any missing (or repeated) below the last is lost.
    lost = (max(seen) - len(set(seen)) + len(seen) - len(set(seen))) if seen else -1
    mib = 2**20
    per_client_kib = (peak - before) / clients / 1024
    return [
        Row(
            "service RSS: a busy job and one reader, before the stalled clients",
            [before / mib],
            None,
            "MiB",
            "reported",
        ),
        Row(
            f"service peak RSS with {clients} stalled clients on that job's stream",
            [peak / mib],
            None,
            "MiB",
            "< 200",
            peak < 200 * mib and not capped,
            f"{per_client_kib:.0f} KiB a client; held {held_s:.0f} s"
            + (f"; stopped at the {STALL_RSS_CAP // mib} MiB cap" if capped else ""),
        ),
        Row(
            "service RSS 10 s after they closed (job and reader still running)",
            [after / mib],
            None,
            "MiB",
            "≤ before + 32",
            after <= before + 32 * mib,
        ),
        Row(
            f"stalled clients the service had dropped when they closed ({held_s:.0f} s)",
            [float(dropped)],
            None,
            "count",
            f"{clients} (stall timeout < hold)",
            dropped == clients,
        ),
        Row(
            "lines lost by the reading subscriber meanwhile",
            [float(lost)],
            None,
            "count",
            "0",
            lost == 0,
            f"{len(seen)} lines read",
        ),
    ]


# -- main ---------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> list[Row]:
    client = docker.from_env()
    only = (
        set(args.only.split(","))
        if args.only
        else {"overhead", "cancel", "narration", "scale", "stalled", "submit", "diskfull"}
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as data:
        service = Service(Path(data))
        timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
        connector = aiohttp.TCPConnector(limit=0)
        try:
            async with aiohttp.ClientSession(
                timeout=timeout, connector=connector, read_bufsize=1 << 20
            ) as session:
                await service.ready(session)
                api = Api(session, service.url)
                await overhead(api, client, 1)  # warm-up: page cache, image layers
                if "overhead" in only:
                    rows += await overhead(api, client, args.reps)
                if "cancel" in only:
                    rows += await cancel(api, client, args.reps * 2)
                if "narration" in only:
                    rows += await narration(
                        api, client, service, max(3, args.reps // 2), args.lines
                    )
                if "scale" in only:
                    rows += await scale(api, service, 16, args.subscribers, 2000)
                if "stalled" in only:
                    rows += await stalled(api, service, args.stalled, args.stall_hold_s)
                if "submit" in only:
                    import limits  # type: ignore[import-not-found]

                    rows += await limits.submit(api, args.reps)
                if "diskfull" in only:
                    import limits

                    rows += await limits.diskfull(session)
        finally:
            service.stop()
            for container in client.containers.list(all=True, filters={"label": LABEL}):
                container.remove(force=True)
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> str:
    header = [
        "measure",
        "orchestrator (median / p95)",
        "raw docker-py (median / p95)",
        "ratio",
        "unit",
        "target",
        "note",
    ]
    lines = [
        f"# Benchmarks — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"{os.cpu_count()} cores; reps={args.reps}; `python bench/run.py"
        f"{' --only ' + args.only if args.only else ''}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--stalled", type=int, default=600, help="clients that never read")
    parser.add_argument(
        "--stall-hold-s",
        type=float,
        default=45.0,
        help="how long they stay connected (longer than the service's stall timeout)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated: overhead,cancel,narration,scale,stalled,submit,diskfull",
    )
    args = parser.parse_args()
    rows = asyncio.run(main(args))
    text = report(rows, args)
    print(text)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"{stamp}.md").write_text(text)
    (out / f"{stamp}.json").write_text(json.dumps([row.__dict__ for row in rows], indent=1))
