"""A followed build's progress: one line that updates in place on a terminal, a plain line at
each tenth of the estimate otherwise, and nothing at all with ``--json``.

It is fed the stream's events: the ``estimate`` (how long the build should take), the
``sample``s (how long it has run, what it uses). The build's own lines are printed around it:
``clear`` before one, ``draw`` after, so the updating line always stays last.
"""

from __future__ import annotations

from typing import Any, TextIO

_CLEAR = "\r\x1b[K"  # to the line's start, erase it
_BAR_CELLS = 20


class Progress:
    def __init__(self, out: TextIO, *, tty: bool, prefix: str) -> None:
        self._out = out
        self._tty = tty
        self._prefix = prefix
        self._estimate_s: float | None = None
        self._sample: dict[str, Any] | None = None
        self._tenths_said = 0
        self._shown = False

    def saw(self, event: dict[str, Any]) -> bool:
        """Take in an event; True when it was one of progress's own (not to be printed)."""
        action = event.get("action")
        if action == "estimate" and isinstance(event.get("estimate_s"), int | float):
            self._estimate_s = float(event["estimate_s"])
            return False  # its words are narration, printed as such
        if action != "sample":
            return False
        self._sample = event
        if self._tty:
            self.draw()
        else:
            self._plain()
        return True

    def clear(self) -> None:
        if self._shown:
            self._out.write(_CLEAR)
            self._out.flush()
            self._shown = False

    def draw(self) -> None:
        line = self.line()
        if not self._tty or line is None:
            return
        self._out.write(_CLEAR + line)
        self._out.flush()
        self._shown = True

    def line(self) -> str | None:
        """The status line: time run (of the estimate), a bar, what the build uses now."""
        sample = self._sample
        if sample is None:
            return None
        elapsed = float(sample.get("elapsed_s") or 0.0)
        parts = [f"{self._prefix} ⏳ {_clock(elapsed)}"]
        if self._estimate_s:
            share = min(elapsed / self._estimate_s, 0.99)
            filled = int(share * _BAR_CELLS)
            bar = "#" * filled + "-" * (_BAR_CELLS - filled)
            parts[0] += f" of ~{_clock(self._estimate_s)} [{bar}] {share:.0%}"
        cpu = sample.get("cpu_percent")
        memory = sample.get("memory_bytes")
        if cpu is not None and memory is not None:
            parts.append(f"CPU {cpu:.0f}%, {memory / (1 << 20):.0f} MiB")
        return "  ".join(parts)

    def _plain(self) -> None:
        """Off a terminal: a line at each tenth of the estimate, none without one."""
        if not self._estimate_s or self._sample is None:
            return
        elapsed = float(self._sample.get("elapsed_s") or 0.0)
        tenths = min(int(10 * elapsed / self._estimate_s), 9)
        if tenths > self._tenths_said:
            self._tenths_said = tenths
            self._out.write(
                f"{self._prefix} {tenths * 10}% of the estimate "
                f"({_clock(elapsed)} of ~{_clock(self._estimate_s)})\n"
            )
            self._out.flush()


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
