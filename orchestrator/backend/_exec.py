"""A command in a running container (``docker exec``), its output kept to the last bytes.

Blocking: the Docker engine runs it in its thread pool. Used for the warm PKGBUILD readers,
where a reading costs one exec instead of a container (~1 s less on this engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import docker.errors
import requests

from ..timeouts import EXEC_ENDING_S
from . import PathUsage, Ran

# What a watch's command (du, find) may print: a filesystem's writable places, one per line.
_WATCH_KEEP_BYTES = 16 * 1024 * 1024


class _Tail:
    """The last ``keep`` bytes written, without keeping more than twice that at any time."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > 2 * self._keep:
            del self._data[: len(self._data) - self._keep]

    def value(self) -> bytes:
        return bytes(self._data[-self._keep :]) if self._keep else b""


def run_exec(
    api: Any, container_id: str, command: tuple[str, ...], user: str, workdir: str, keep: int
) -> Ran:
    """``command`` in the container until its output ends; its exit code and output tails.
    The output ends when every process holding it has ended: the container being removed
    ends it too (then docker-py's ``NotFound`` leaves here, for the caller to translate)."""
    created = api.exec_create(
        container_id, list(command), user=user, workdir=workdir, stdout=True, stderr=True
    )
    out, err = _Tail(keep), _Tail(keep)
    for stdout, stderr in api.exec_start(created["Id"], stream=True, demux=True):
        if stdout:
            out.add(stdout)
        if stderr:
            err.add(stderr)
    state = api.exec_inspect(created["Id"])
    code = state.get("ExitCode")
    # A command that failed, or whose output ended while it still runs (no exit code): did the
    # container end under it (killed, OOM-killed, the daemon restarted)? Then that is no answer
    # of the command's: a PKGBUILD's reading would be taken for makepkg's refusal.
    # Killed (by a signal, 128 + n) as a container's processes are when it is killed: it may
    # still say it runs for a moment, so it is given a moment to say it does not.
    if code is None or state.get("Running") or code >= 128:
        try:
            api.wait(container_id, timeout=EXEC_ENDING_S)  # NotFound: gone already
        except requests.exceptions.RequestException:
            pass  # still running: the command's own end
        else:
            raise docker.errors.NotFound(f"container {container_id[:12]} ended during {command[0]}")
    elif code != 0 and not api.inspect_container(container_id)["State"].get("Running"):
        raise docker.errors.NotFound(f"container {container_id[:12]} ended during {command[0]}")
    return Ran(-1 if code is None or state.get("Running") else int(code), out.value(), err.value())


# The container's own cgroup, as Docker mounts it inside: cgroup v1's cpuacct (nanoseconds), or
# v2's cpu.stat (microseconds). Read by an exec (~50 ms here) rather than the stats API, which
# takes a second to answer on Docker 20.10 even for one sample.
CPU_COMMAND = (
    "sh",
    "-c",
    "if [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then"
    " echo ns $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage);"
    " else echo us $(sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat); fi",
)


def cpu_seconds(printed: bytes) -> float | None:
    """What ``CPU_COMMAND`` printed, in seconds; None if it printed no number."""
    unit, _, value = printed.decode(errors="replace").strip().partition(" ")
    if not value.isdigit():
        return None
    return int(value) / (1e9 if unit == "ns" else 1e6)


def _watch(api: Any, container_id: str, argv: list[str]) -> tuple[bytes, int] | None:
    """``argv``'s output and exit code, run in the step's container as its user (~5 ms plus its
    own work; no host access); None when the container has stopped."""
    try:
        ran = run_exec(api, container_id, tuple(argv), "builder", "/", _WATCH_KEEP_BYTES)
    except docker.errors.APIError:
        return None  # stopped meanwhile
    return None if ran.code < 0 else (ran.stdout, ran.code)


def path_usage(api: Any, container_id: str, paths: Sequence[str]) -> PathUsage | None:
    """Bytes under each of ``paths`` in the running container, as its user counts them."""
    ran = _watch(api, container_id, ["du", "-sxb", "--", *paths])
    if ran is None:
        return None
    out, code = ran
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        size, _, path = line.partition(b"\t")
        if size.strip().isdigit():
            sizes[path.decode(errors="replace")] = int(size)
    # du names each path as given, once: a path missing from its answer was not measured.
    if not all(path in sizes for path in paths):
        return None
    return PathUsage(sizes, complete=code == 0)


def writable_places(api: Any, container_id: str) -> tuple[str, ...] | None:
    """Where in the running container its user can write: the topmost such places."""
    # What the user owns it could make writable at any time, so that counts as writable.
    find = ["find", "/", "-xdev", "(", "-writable", "-o", "-user", "builder", ")"]
    ran = _watch(api, container_id, [*find, "-prune", "-print0"])
    # find fails for every folder it may not enter, and still lists all the others.
    if ran is None:
        return None
    return tuple(p.decode(errors="replace") for p in ran[0].split(b"\0") if p)
