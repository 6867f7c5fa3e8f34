"""A second Docker engine on this machine that joins the swarm as a worker, for the multi-node
tests (``test_swarm_nodes.py``).

Docker-in-Docker is refused here (no ``--privileged``), so the second engine is a second
``dockerd`` process with its own data root, exec root, pidfile and socket, in a network namespace
of its own joined to this host by a veth pair: ``HOST_ADDR`` on the host's end, ``PEER_ADDR``
inside, and no other route, so the only address it reaches is this host's end. ``ip netns exec``
mounts a fresh ``/sys`` for the namespace, which hides the cgroup hierarchies: the engine's start
mounts them again (the same hierarchies, in that private mount namespace). A UTS namespace of its
own gives it its own hostname, so a reason that names a node by hostname names this one.

Every step is idempotent and ``clean`` first removes what a killed run left (the namespace, an
engine still running, its containers, its folders).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

from .. import waiting

NETNS = "orch-node2"
HOSTNAME = "orch-node2"
HOST_IF, PEER_IF = "orch-n2-host", "orch-n2-peer"
HOST_ADDR, PEER_ADDR = "10.250.2.1", "10.250.2.2"  # a /30 of their own
BRIDGE_CIDR = "10.250.3.1/24"  # the second engine's docker0, inside the namespace
ADDRESS_POOL = "10.250.64.0/18"  # its other networks (docker_gwbridge), inside it too
ROOT = Path("/var/lib/orch-node2")
RUN = Path("/run/orch-node2")
SOCKET = Path("/run/orch-node2.sock")
PIDFILE = RUN / "dockerd.pid"
START_TIMEOUT_S = 60.0  # a restart after a kill waits for the old containers to be stopped
STOP_TIMEOUT_S = 30.0

# Run in the namespace: hostname, the cgroup v1 hierarchies /sys hid, then the engine.
_START = """set -e
hostname {hostname}
mount -t tmpfs -o mode=755 cgroup-root /sys/fs/cgroup
{cgroups}
exec dockerd --config-file {root}/daemon.json --data-root {root}/data --exec-root {run}/exec \
  --pidfile {pidfile} -H unix://{socket} --storage-driver fuse-overlayfs \
  --bip {bridge} --default-address-pool base={pool},size=24 --mtu 1400
"""


def _cgroup_mounts() -> str:
    """This host's cgroup hierarchies, mounted again at the same places (same options: the
    same hierarchy)."""
    lines = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, where, kind, options, *_ = line.split()
        if kind in ("cgroup", "cgroup2") and where.startswith("/sys/fs/cgroup/"):
            wanted = [o for o in options.split(",") if o not in ("rw", "relatime")]
            opts = f"-o {','.join(wanted)} " if kind == "cgroup" and wanted else ""
            lines.append(f"mkdir -p {where} && mount -t {kind} {opts}{kind} {where}")
    return "\n".join(lines)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _terminate(pid: int) -> None:
    """SIGTERM a process that is not our child, SIGKILL if it outlives ``STOP_TIMEOUT_S``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    gone = waiting.until_sync(
        lambda: not _cmdline(pid), timeout_s=STOP_TIMEOUT_S, interval_s=0.1, on_timeout="return"
    )
    if not gone:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ours() -> list[int]:
    """Processes of an engine of ours a killed run left (its dockerd, containerd, shims):
    their command lines name our exec root."""
    found = []
    for proc in Path("/proc").iterdir():
        pid = int(proc.name) if proc.name.isdigit() else os.getpid()
        if pid != os.getpid() and str(RUN).encode() in _cmdline(pid):
            found.append(pid)
    return found


@dataclass
class SecondEngine:
    """The second ``dockerd``, in its own network namespace; ``client`` talks to it."""

    proc: subprocess.Popen[bytes] | None = None
    client: docker.DockerClient = field(
        default_factory=lambda: docker.DockerClient(
            base_url=f"unix://{SOCKET}", version="1.41", timeout=60
        )
    )

    def up(self) -> None:
        self.clean()
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF)
        _run("ip", "link", "set", PEER_IF, "netns", NETNS)
        _run("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", HOST_IF)
        _run("ip", "link", "set", HOST_IF, "up")
        inside = ("ip", "netns", "exec", NETNS, "ip")
        _run(*inside, "addr", "add", f"{PEER_ADDR}/30", "dev", PEER_IF)
        _run(*inside, "link", "set", PEER_IF, "up")
        _run(*inside, "link", "set", "lo", "up")
        ROOT.mkdir(parents=True, exist_ok=True)
        RUN.mkdir(parents=True, exist_ok=True)
        # Its own (empty) configuration: the host's daemon.json would be read otherwise.
        (ROOT / "daemon.json").write_text(json.dumps({}))
        self.start()

    def start(self) -> None:
        script = _START.format(
            hostname=HOSTNAME,
            cgroups=_cgroup_mounts(),
            root=ROOT,
            run=RUN,
            pidfile=PIDFILE,
            socket=SOCKET,
            bridge=BRIDGE_CIDR,
            pool=ADDRESS_POOL,
        )
        with (ROOT / "dockerd.log").open("ab") as log:
            # ip netns exec, unshare and sh all exec: the process is dockerd itself.
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", NETNS, "unshare", "--uts", "sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        waiting.until_sync(
            self._answers, timeout_s=START_TIMEOUT_S, interval_s=0.2, what="the second engine"
        )

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (ROOT / "dockerd.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"the second dockerd exited ({self.proc.returncode}): {log}")
        try:
            return bool(self.client.ping())
        except (docker.errors.DockerException, requests.RequestException):  # not listening yet
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a node's engine dies: its containers' shims go on running them."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def load(self, image: str) -> None:
        """``docker save | docker load``: the image, with its id, on this engine."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", f"unix://{SOCKET}", "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            text=True,
        )
        assert save.stdout is not None
        save.stdout.close()
        assert save.wait() == 0 and load.returncode == 0, load.stderr

    def clean(self) -> None:
        """Whatever a run left: its engine stopped (which stops its containers: no
        live-restore), or, for an engine that was killed, started on its data and stopped
        again so that it stops them; its namespace and folders gone."""
        self.stop()
        for pid in _ours():  # the engine of a run that was itself killed
            if b"dockerd" in _cmdline(pid):
                _terminate(pid)
        if _ours() and Path(f"/run/netns/{NETNS}").exists() and (ROOT / "data").exists():
            self.start()  # its containers' shims outlived it: this engine stops them
            with contextlib.suppress(docker.errors.APIError):
                self.client.swarm.leave(force=True)
            self.stop()
        for pid in _ours():  # anything still there (its namespace was gone already)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if Path(f"/run/netns/{NETNS}").exists():
            _run("ip", "netns", "del", NETNS)
        _run("ip", "link", "del", HOST_IF, check=False)  # gone with the namespace, or not
        shutil.rmtree(ROOT, ignore_errors=True)
        shutil.rmtree(RUN, ignore_errors=True)
        SOCKET.unlink(missing_ok=True)
        assert not ROOT.exists(), f"{ROOT} could not be removed"

    def close(self) -> None:
        self.client.close()


def swarm_on(client: docker.DockerClient, addr: str, heartbeat_s: float | None = None) -> None:
    """This engine the manager of a new one-node swarm at ``addr`` (leaving the one it is in)."""
    if client.info()["Swarm"]["LocalNodeState"] != "inactive":
        client.swarm.leave(force=True)
    kwargs = {"dispatcher_heartbeat_period": int(heartbeat_s * 1e9)} if heartbeat_s else {}
    client.swarm.init(advertise_addr=addr, listen_addr=f"{addr}:2377", **kwargs)


def join(manager: docker.DockerClient, worker: SecondEngine) -> str:
    """The second engine joins ``manager``'s swarm as a worker; its node id, once ready."""
    token = manager.swarm.attrs["JoinTokens"]["Worker"]
    worker.client.swarm.join(
        remote_addrs=[f"{HOST_ADDR}:2377"],
        join_token=token,
        advertise_addr=PEER_ADDR,
        listen_addr=f"{PEER_ADDR}:2377",
    )
    node_id = str(worker.client.info()["Swarm"]["NodeID"])
    wait_node(manager, node_id, "ready")
    return node_id


def node_state(manager: docker.DockerClient, node_id: str) -> str:
    return str(manager.api.inspect_node(node_id)["Status"]["State"])


def wait_node(
    manager: docker.DockerClient, node_id: str, state: str, timeout_s: float = 60
) -> float:
    """Until the manager says the node is ``state``; how long that took."""
    start = time.monotonic()
    waiting.until_sync(
        lambda: node_state(manager, node_id),
        lambda seen: seen == state,
        timeout_s=timeout_s,
        interval_s=0.1,
        what=f"node {node_id[:12]} {state}",
    )
    return time.monotonic() - start


def set_availability(manager: docker.DockerClient, node_id: str, availability: str) -> None:
    node = manager.nodes.get(node_id)
    node.update({**node.attrs["Spec"], "Availability": availability})


def manager_id(manager: docker.DockerClient) -> str:
    return str(manager.info()["Swarm"]["NodeID"])
