"""The real CLI, as a subprocess, against a real service: output, exit codes, Ctrl-C, resume."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pty
import select
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from .. import waiting
from ..integration.conftest import job_containers
from ..integration.test_engine import marked_processes
from .proxy import CuttingProxy

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

CLI = [sys.executable, "-m", "orchestrator"]


def cli(url: str, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRATOR_URL": url}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def test_build_follow_prints_live_and_saves_the_package(
    cli_service: str, build_dir: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    done = cli(cli_service, "build", str(build_dir("hello-c")), "--follow", "--output", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # Lifecycle lines are marked; build output is passed through as makepkg printed it.
    assert "[orchestrator] 🔨 makepkg started" in lines
    assert any(line.startswith("==> Making package: hello-c") for line in lines)
    assert "cc -O2 -o hello hello.c" in lines
    assert lines[-1].endswith("succeeded")
    [package] = out.iterdir()
    with tarfile.open(package) as tar:
        assert "usr/bin/hello" in tar.getnames()


def test_check_prints_what_makepkg_reads_and_says_what_stops_a_build(
    cli_service: str, build_dir: Callable[..., Path]
) -> None:
    split = cli(cli_service, "check", str(build_dir("rbee-style-split")))
    assert split.returncode == 0, split.stderr
    assert split.stdout.startswith("pkgbase = sd-worker-demo\n")
    assert "pkgname = sd-worker-demo-common" in split.stdout.splitlines()
    missing = build_dir("rbee-style-bin")
    (missing / "llm-worker.service").unlink()
    refused = cli(cli_service, "check", str(missing))
    assert refused.returncode == 2
    assert "problem: local source 'llm-worker.service' is not in the upload" in refused.stderr
    assert "warning: not in the build image" in refused.stdout
    as_json = json.loads(cli(cli_service, "check", str(missing), "--json").stdout)
    assert as_json["problems"] and as_json["srcinfo"].startswith("pkgbase = llm-worker-demo-bin")


def test_exit_codes(cli_service: str, build_dir: Callable[..., Path], tmp_path: Path) -> None:
    failed = cli(cli_service, "build", str(build_dir("bad-checksum")))
    assert failed.returncode == 1
    timed_out = cli(
        cli_service, "build", str(build_dir("forker", marker=uuid.uuid4().hex)), "--timeout-s", "2"
    )
    assert timed_out.returncode == 4
    assert cli(cli_service, "build", str(tmp_path / "nowhere")).returncode == 2
    assert cli(cli_service, "logs", "no-such-job").returncode == 2
    assert (
        cli(cli_service, "build", str(build_dir("hello-c")), "--variant", "metal").returncode == 2
    )
    assert cli("http://127.0.0.1:9", "jobs").returncode == 6
    assert cli(cli_service, "frobnicate").returncode == 2


def test_json_output_for_scripts(cli_service: str, build_dir: Callable[..., Path]) -> None:
    detached = cli(cli_service, "build", str(build_dir("hello-c")), "--detach", "--json")
    assert detached.returncode == 0
    job_id = json.loads(detached.stdout)["job_id"]
    follow = cli(cli_service, "logs", job_id, "--follow", "--json")
    assert follow.returncode == 0
    events = [json.loads(line) for line in follow.stdout.splitlines()]
    assert events[-1] == {"end": events[-1]["end"]}
    assert events[-1]["end"]["status"] == "succeeded"
    assert [e["seq"] for e in events[:-1]] == list(range(1, len(events)))
    listed = json.loads(cli(cli_service, "jobs", "--json").stdout)
    assert job_id in [job["job_id"] for job in listed["jobs"]]
    artifacts = json.loads(cli(cli_service, "artifacts", job_id, "--json").stdout)
    assert artifacts[0]["name"].startswith("hello-c-1.0.0-1")


def test_ctrl_c_cancels_the_remote_build(
    cli_service: str, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    marker = f"orch-cli-{uuid.uuid4().hex}"
    env = {**os.environ, "ORCHESTRATOR_URL": cli_service}
    proc = subprocess.Popen(
        [*CLI, "build", str(build_dir("forker", marker=marker)), "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    job_id = ""
    for line in proc.stdout:
        if line.startswith("[orchestrator] job ") and not job_id:
            job_id = line.split()[2].rstrip(":")
        if line.strip() == "children started":
            break
    assert job_containers(docker_client, job_id) != []
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "❌ Build cancelled by user" in rest
    assert job_containers(docker_client, job_id) == []
    assert marked_processes(marker) == []
    job = json.loads(cli(cli_service, "jobs", "--json", "--status", "cancelled").stdout)
    assert job_id in [j["job_id"] for j in job["jobs"]]


def test_a_dropped_stream_resumes_without_losing_or_repeating_lines(
    cli_service: str, build_dir: Callable[..., Path]
) -> None:
    port = int(cli_service.rsplit(":", 1)[1])
    with CuttingProxy(port, cut_after_bytes=1500, cuts=2) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        done = cli(url, "build", str(build_dir("slow-printer")), "--follow")
        assert proxy.cuts_made == 2  # the stream really was cut, twice
    assert done.returncode == 0, done.stderr
    ticks = [line for line in done.stdout.splitlines() if line.startswith("tick")]
    tocks = [line for line in done.stderr.splitlines() if line.startswith("tock")]
    assert ticks == [f"tick {i}" for i in range(1, 7)]
    assert tocks == [f"tock {i}" for i in range(1, 7)]
    assert done.stdout.count("🔨 makepkg started") == 1


def test_cancel_and_artifacts_commands(
    cli_service: str, build_dir: Callable[..., Path], tmp_path: Path
) -> None:
    job_id = cli(
        cli_service, "build", str(build_dir("forker", marker=uuid.uuid4().hex)), "--detach"
    ).stdout.strip()

    def status() -> str:
        with urllib.request.urlopen(f"{cli_service}/v1/jobs/{job_id}", timeout=5) as response:
            return str(json.load(response)["status"])

    waiting.until_sync(status, lambda now: now == "running", timeout_s=60, what="the build running")
    cancelled = cli(cli_service, "cancel", job_id)
    assert cancelled.returncode == 0
    assert cancelled.stdout.strip() == f"job {job_id} cancelled"
    assert cli(cli_service, "cancel", job_id).returncode == 2  # already ended

    built = cli(cli_service, "build", str(build_dir("hello-c")), "--detach").stdout.strip()
    assert cli(cli_service, "logs", built, "--follow").returncode == 0
    saved = cli(cli_service, "artifacts", built, "-o", str(tmp_path / "a"))
    assert saved.returncode == 0
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["hello-c-1.0.0-1-x86_64.pkg.tar.gz"]


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves 2 MiB of bytes; /slow trickles them out so a download can be interrupted."""

    payload = bytes(range(256)) * 8192

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        step = 64 * 1024
        for offset in range(0, len(self.payload), step):
            try:
                self.wfile.write(self.payload[offset : offset + step])
            except OSError:
                return
            if self.path == "/slow":
                time.sleep(0.5)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_worker_commands(cli_service: str) -> None:
    available = cli(cli_service, "worker", "available")
    assert available.returncode == 0
    assert available.stdout.splitlines()[0].split() == ["ID", "VERSION", "TYPE", "NAME"]
    assert "rust-hello-cuda" in available.stdout
    pkgbuild = cli(cli_service, "worker", "get", "hello-c", "--pkgbuild")
    assert pkgbuild.stdout.startswith("pkgname=hello-worker-c")
    installed = cli(cli_service, "worker", "install", "hello-c", "--follow")
    assert installed.returncode == 0, installed.stderr
    assert "[orchestrator] ✅ Worker hello-c 1.0.0 installed" in installed.stdout
    assert "==> Making package: hello-worker-c 1.0.0-1" in installed.stdout
    listed = json.loads(cli(cli_service, "worker", "list", "--json").stdout)
    [worker] = listed["workers"]
    assert subprocess.run([worker["path"]], capture_output=True, text=True).stdout.startswith(
        "hello-worker-c: ready"
    )
    assert cli(cli_service, "worker", "remove", "hello-c").returncode == 0
    assert cli(cli_service, "worker", "remove", "hello-c").returncode == 2
    assert cli(cli_service, "worker", "install", "metal-hello").returncode == 2


def test_model_commands_and_ctrl_c(cli_service: str, file_server: str) -> None:
    digest = hashlib.sha256(_Files.payload).hexdigest()
    done = cli(
        cli_service, "model", "download", f"{file_server}/m", "--name", "m.bin", "--sha256", digest
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = json.loads(cli(cli_service, "model", "list", "--json").stdout)
    assert [(m["name"], m["sha256"]) for m in listed["models"]] == [("m.bin", digest)]
    assert cli(cli_service, "model", "remove", "m.bin").returncode == 0

    env = {**os.environ, "ORCHESTRATOR_URL": cli_service}
    proc = subprocess.Popen(
        [*CLI, "model", "download", f"{file_server}/slow", "--name", "slow.bin", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "MiB/s" in line:  # a progress line: the download is under way
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "Download cancelled by user" in rest
    listed = json.loads(cli(cli_service, "model", "list", "--json").stdout)
    assert listed["models"] == []


def test_cache_commands_and_no_cache(cli_service: str, build_dir: Callable[..., Path]) -> None:
    built = cli(cli_service, "build", str(build_dir("hello-c")), "--follow")
    assert built.returncode == 0, built.stderr
    assert "[orchestrator] Cache hello-c:cpu" in built.stdout
    listed = cli(cli_service, "cache", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == [
        "KEY",
        "SIZE",
        "LAST",
        "USED",
        "BUILDS",
        "HITS",
        "IN",
        "USE",
    ]
    assert any(line.startswith("hello-c:cpu ") for line in listed.stdout.splitlines())
    shown = json.loads(cli(cli_service, "cache", "show", "hello-c:cpu", "--json").stdout)
    assert shown["key"] == "hello-c:cpu" and shown["builds"] >= 1

    uncached = cli(cli_service, "build", str(build_dir("hello-c")), "--no-cache", "--follow")
    assert uncached.returncode == 0, uncached.stderr
    assert "[orchestrator] No cache: this build asked for cache=off" in uncached.stdout

    removed = cli(cli_service, "cache", "remove", "hello-c:cpu")
    assert removed.returncode == 0, removed.stderr
    again = cli(cli_service, "cache", "remove", "hello-c:cpu")
    assert again.returncode == 2 and "no cache 'hello-c:cpu'" in again.stderr
    assert "hello-c:cpu" not in cli(cli_service, "cache", "list").stdout


def in_a_terminal(url: str, *args: str, timeout_s: float = 180) -> tuple[int, str]:
    """The CLI with a pseudo-terminal as its stdout and stderr: its exit code and all it wrote."""
    env = {**os.environ, "ORCHESTRATOR_URL": url}
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args], env=env, stdin=subprocess.DEVNULL, stdout=side, stderr=side
    )
    os.close(side)
    written = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the CLI has exited and closed its side
                break
            if not chunk:
                break
            written += chunk
    finally:
        os.close(main)
    return proc.wait(30), written.decode("utf-8", errors="replace")


def test_the_progress_line_updates_on_a_terminal_is_plain_when_piped_and_absent_in_json(
    cli_service: str, build_dir: Callable[..., Path]
) -> None:
    def vitals() -> str:
        return str(build_dir("vitals", mib=20, hold_s=1, cpu_s=1, quiet_s=6))

    # The first: nothing to estimate from yet. --json prints the events as sent, samples too,
    # and nothing of the progress line.
    as_json = cli(cli_service, "build", vitals(), "--follow", "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert any(e.get("action") == "sample" for e in events)
    assert "⏳" not in as_json.stdout and "% of the estimate" not in as_json.stdout

    # The second, estimated from the first, followed at once on a terminal and through a pipe
    # (one build for both: what differs is only where the CLI writes).
    detached = cli(cli_service, "build", vitals(), "--detach")
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    piped: list[subprocess.CompletedProcess[str]] = []
    pipe = threading.Thread(target=lambda: piped.append(cli(cli_service, "logs", job_id, "-f")))
    pipe.start()
    code, shown = in_a_terminal(cli_service, "logs", job_id, "--follow")
    pipe.join(timeout=180)
    assert code == 0, shown
    assert "\r\x1b[K[orchestrator] ⏳ " in shown and " of ~" in shown, shown
    assert "[orchestrator] Expected to take about " in shown

    [plain] = piped
    assert plain.returncode == 0, plain.stderr
    assert "% of the estimate (" in plain.stdout, plain.stdout
    assert "\r" not in plain.stdout and "⏳" not in plain.stdout
    assert "pids" not in plain.stdout  # samples are not log lines
