"""The CLI's progress: one line updated in place on a terminal, a plain line per tenth of the
estimate otherwise, and the build's own lines printed above it."""

from __future__ import annotations

import io

from orchestrator.cli.progress import Progress

MiB = 1 << 20


def sample(elapsed_s: float, cpu: float = 190.0, memory: int = 300 * MiB) -> dict[str, object]:
    return {
        "action": "sample",
        "elapsed_s": elapsed_s,
        "cpu_percent": cpu,
        "memory_bytes": memory,
        "message": "CPU",
    }


ESTIMATE = {"action": "estimate", "estimate_s": 100.0, "message": "Expected to take about 2 min"}


def test_on_a_terminal_one_line_is_redrawn_in_place_and_stays_last() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=True, prefix="[o]")
    assert progress.saw(ESTIMATE) is False  # its words are narration: printed by the caller
    assert progress.saw(sample(25.0)) is True
    assert (
        out.getvalue()
        == "\r\x1b[K[o] ⏳ 0:25 of ~1:40 [#####---------------] 25%  CPU 190%, 300 MiB"
    )
    progress.clear()
    out.write("a build line\n")
    progress.draw()
    progress.saw(sample(150.0))  # past the estimate: late, never done
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 4
    assert text.endswith("[o] ⏳ 2:30 of ~1:40 [###################-] 99%  CPU 190%, 300 MiB")
    assert "\r\x1b[Ka build line\n\r\x1b[K[o] ⏳ 0:25" in text


def test_off_a_terminal_a_plain_line_marks_each_tenth_and_nothing_without_an_estimate() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=False, prefix="[o]")
    progress.saw(sample(30.0))
    assert out.getvalue() == ""  # no estimate yet: nothing to measure against
    progress.saw(ESTIMATE)
    for elapsed in (5.0, 12.0, 19.0, 35.0, 36.0, 500.0):
        progress.saw(sample(elapsed))
    assert out.getvalue().splitlines() == [
        "[o] 10% of the estimate (0:12 of ~1:40)",
        "[o] 30% of the estimate (0:35 of ~1:40)",
        "[o] 90% of the estimate (8:20 of ~1:40)",
    ]
    assert "\r" not in out.getvalue()


def test_other_events_pass_through_and_nothing_is_drawn_before_a_sample() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=True, prefix="[o]")
    assert progress.saw({"action": "output", "message": "x"}) is False
    progress.draw()
    progress.clear()
    assert out.getvalue() == ""
    assert progress.line() is None
