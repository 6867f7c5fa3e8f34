"""A step's resource figures as the Docker daemon reports them, read into one small record.

The daemon's ``/containers/{id}/stats`` answer differs by cgroup version; only what both give
is read. ``one-shot`` (API 1.41) answers at once instead of waiting a second for a second look,
so a sample costs the daemon milliseconds and CPU use is worked out from two of our own samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """What a running step uses at one moment."""

    cpu_seconds: float  # since it started, all its processes, user and system
    memory_bytes: int  # what its processes hold: their own pages and the files they map
    memory_limit_bytes: int | None
    pids: int
    net_rx_bytes: int
    net_tx_bytes: int


def usage_from_stats(stats: Mapping[str, Any]) -> Usage | None:
    """The daemon's stats answer as a ``Usage``; None for a step that is not running (the
    daemon then answers zeros and no ``read`` time)."""
    memory = stats.get("memory_stats") or {}
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    if "usage" not in memory or "total_usage" not in cpu:
        return None
    networks: Mapping[str, Mapping[str, int]] = stats.get("networks") or {}
    limit = memory.get("limit")
    return Usage(
        cpu_seconds=int(cpu["total_usage"]) / 1e9,
        memory_bytes=_held(memory),
        # An unlimited container reports the host's memory (or more) as its limit.
        memory_limit_bytes=int(limit) if limit and int(limit) < 1 << 62 else None,
        pids=int((stats.get("pids_stats") or {}).get("current") or 0),
        net_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in networks.values()),
        net_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in networks.values()),
    )


def _held(memory: Mapping[str, Any]) -> int:
    """Its processes' own (anonymous) pages and the files they have mapped: what a build needs
    to run. The cgroup's usage also counts the page cache of every file the build read or wrote
    (compilers, sources, objects: tens of MiB to gigabytes), which the kernel gives back under
    pressure; measured that way a build holding 300 MiB showed 362. Where the daemon gives no
    breakdown, usage less the inactive file cache (as ``docker stats`` counts it)."""
    details: Mapping[str, int] = memory.get("stats") or {}
    if "total_rss" in details:  # cgroup v1, the hierarchy's totals
        return int(details["total_rss"]) + int(details.get("total_mapped_file", 0))
    if "anon" in details:  # cgroup v2
        return int(details["anon"]) + int(details.get("file_mapped", 0))
    inactive = details.get("total_inactive_file", details.get("inactive_file", 0))
    return max(0, int(memory["usage"]) - int(inactive))


_FRAME = frozenset({"docker-init", "tini", "makepkg", "bash", "sh", "fakeroot", "faked", "env"})


def busiest(top: Mapping[str, Any], most: int = 3) -> tuple[str, ...]:
    """The commands using the most CPU in a ``docker top`` answer taken with
    ``-eo pid,pcpu,comm`` (the daemon needs the pid), busiest first, each named once."""
    titles: Sequence[str] = top.get("Titles") or []
    rows: Sequence[Sequence[str]] = top.get("Processes") or []
    try:
        cpu_at, command_at = titles.index("%CPU"), titles.index("COMMAND")
    except ValueError:
        return ()
    ranked: list[tuple[float, str]] = []
    for row in rows:
        try:
            ranked.append((float(row[cpu_at]), row[command_at]))
        except (IndexError, ValueError):
            continue
    names: list[str] = []
    for _, name in sorted(ranked, key=lambda r: -r[0]):
        if name not in names:
            names.append(name)
    # The frame every build runs in says nothing of what it is doing: named only when
    # nothing else runs.
    work = [name for name in names if name not in _FRAME]
    return tuple((work or names)[:most])
