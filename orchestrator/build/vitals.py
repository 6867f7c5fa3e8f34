"""A running build's vital signs: resource samples, makepkg's phases, and what a silence means.

A ten-minute CMake run inside cargo's build script prints nothing; without this, a busy build
and a hung one look the same. ``Vitals`` is fed what the build prints (``saw_output``,
``saw_phase``) and the engine's figures (``sample``), and says what a client should hear: a
sample, a silence explained ("no output for 2 min; CPU 190%, 1.3 GiB; running: cc1plus,
cmake"), or a warning near the memory limit. It keeps the totals the job record holds.
Time comes in as arguments, so the logic is tested without waiting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backend._usage import Usage
from ..narration.events import Action, Event

MEMORY_WARNING_FRACTION = 0.9
# makepkg's "==> Starting build()..." (and package_foo() of a split package) opens a phase;
# the next of these lines closes it. Lines inside package() (tidying, creating) do not.
_STARTING = re.compile(r"^==> Starting (prepare|build|check|package)(?:_\S*)?\(\)")
_CLOSING = re.compile(r"^==> (Starting |Entering fakeroot|Leaving fakeroot|Finished making|ERROR)")


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a running build, with what changed since the look before."""

    elapsed_s: float
    cpu_seconds: float
    cpu_percent: float  # 100 per busy core, over the time since the last sample
    memory_bytes: int
    peak_memory_bytes: int
    memory_limit_bytes: int | None
    pids: int
    disk_bytes: int | None
    net_rx_bytes: int
    net_tx_bytes: int


@dataclass(frozen=True, slots=True)
class Totals:
    """What the job record keeps of a build's life."""

    peak_memory_bytes: int | None
    cpu_seconds: float | None
    peak_pids: int | None
    disk_bytes: int | None
    phases_s: dict[str, float]  # makepkg phase → its wall time

    def fields(self) -> dict[str, Any]:
        """As the job record's columns (``JobRecord``): none that was never measured."""
        named = {
            "peak_memory_bytes": self.peak_memory_bytes,
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 3),
            "peak_pids": self.peak_pids,
            "disk_bytes": self.disk_bytes,
            "phases_s": {name: round(s, 3) for name, s in self.phases_s.items()} or None,
        }
        return {name: value for name, value in named.items() if value is not None}


@dataclass
class Vitals:
    """What one build has shown so far; ``started`` is the monotonic time its command began."""

    started: float
    silence_s: float
    disk_bytes: int | None = None  # the disk watchdog's last look, when it looks
    _last_output: float = 0.0
    _last_notice: float = 0.0
    _last: Sample | None = None
    _peak_memory: int = 0
    _peak_pids: int = 0
    _warned_memory: bool = False
    _phase: tuple[str, float] | None = None
    _phases: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._last_output = self._last_notice = self.started

    def saw(self, events: Sequence[Event], now: float) -> None:
        """A batch of the build's output, as narrated: makepkg's phase lines are timed."""
        for event in events:
            if event.action == Action.PHASE:
                self.saw_phase(event.message, now)
        self.saw_output(now)

    def saw_disk(self, used_bytes: int) -> None:
        self.disk_bytes = used_bytes

    def saw_output(self, now: float) -> None:
        self._last_output = self._last_notice = now

    def saw_phase(self, line: str, now: float) -> None:
        """A makepkg ``==>`` line: it may close the phase running and open the next."""
        self.saw_output(now)
        if self._phase is not None and _CLOSING.match(line):
            self._close_phase(now)
        opened = _STARTING.match(line)
        if opened:
            self._phase = (opened.group(1), now)

    def sample(self, usage: Usage, now: float, disk_bytes: int | None = None) -> Sample:
        last = self._last
        elapsed = now - self.started
        if disk_bytes is None and last is not None:
            disk_bytes = last.disk_bytes  # the disk is looked at less often than the rest
        if last is None or elapsed <= last.elapsed_s:
            busy = 0.0
        else:
            busy = 100 * (usage.cpu_seconds - last.cpu_seconds) / (elapsed - last.elapsed_s)
        self._peak_memory = max(self._peak_memory, usage.memory_bytes)
        self._peak_pids = max(self._peak_pids, usage.pids)
        self._last = Sample(
            elapsed_s=elapsed,
            cpu_seconds=usage.cpu_seconds,
            cpu_percent=max(0.0, busy),
            memory_bytes=usage.memory_bytes,
            peak_memory_bytes=self._peak_memory,
            memory_limit_bytes=usage.memory_limit_bytes,
            pids=usage.pids,
            disk_bytes=disk_bytes,
            net_rx_bytes=usage.net_rx_bytes,
            net_tx_bytes=usage.net_tx_bytes,
        )
        return self._last

    def memory_warning(self) -> str | None:
        """Said once, the first time the build's working set passes 90% of its limit."""
        last = self._last
        if self._warned_memory or last is None or not last.memory_limit_bytes:
            return None
        if last.memory_bytes < MEMORY_WARNING_FRACTION * last.memory_limit_bytes:
            return None
        self._warned_memory = True
        share = 100 * last.memory_bytes / last.memory_limit_bytes
        return (
            f"memory at {share:.0f}% of the build's limit ({size(last.memory_bytes)} of "
            f"{size(last.memory_limit_bytes)}): it is killed if it needs more"
        )

    def silent(self, now: float) -> bool:
        """Whether a silence is due to be explained (before asking the engine what runs)."""
        return now - self._last_notice >= self.silence_s

    def silence(self, now: float, running: tuple[str, ...] = ()) -> str | None:
        """Once per ``silence_s`` without output: that the build is alive, and doing what."""
        if not self.silent(now):
            return None
        self._last_notice = now
        parts = [f"no output for {duration(now - self._last_output)}"]
        if self._last is not None:
            parts.append(f"CPU {self._last.cpu_percent:.0f}%, {size(self._last.memory_bytes)}")
        if running:
            parts.append("running: " + ", ".join(running))
        return "; ".join(parts)

    def totals(self, now: float) -> Totals:
        if self._phase is not None:
            self._close_phase(now)
        last = self._last
        return Totals(
            peak_memory_bytes=self._peak_memory if last else None,
            cpu_seconds=last.cpu_seconds if last else None,
            peak_pids=self._peak_pids if last else None,
            disk_bytes=last.disk_bytes if last else None,
            phases_s=dict(self._phases),
        )

    def _close_phase(self, now: float) -> None:
        assert self._phase is not None
        name, began = self._phase
        self._phases[name] = self._phases.get(name, 0.0) + (now - began)
        self._phase = None


def size(count: int) -> str:
    """Bytes as people read them: 312 MiB, 1.3 GiB."""
    if count >= 1 << 30:
        return f"{count / (1 << 30):.1f} GiB"
    return f"{count / (1 << 20):.0f} MiB"


def duration(seconds: float) -> str:
    """A silence's length: 45 s, 2 min, 1 h 5 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
