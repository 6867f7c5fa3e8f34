"""Build output as events: runs of lines, makepkg's phase lines, bounded event size."""

from __future__ import annotations

from typing import Any

from orchestrator.backend import OutputChunk
from orchestrator.narration.events import (
    MAX_OUTPUT_EVENT_CHARS,
    Action,
    Event,
    Level,
    output_events,
)
from orchestrator.narration.schema import numbered
from orchestrator.narration.sse import Parser, event_frame


def summary(events: list[Event]) -> list[tuple[str, str | None, str]]:
    return [(e.action.value, e.stream, e.message) for e in events]


def sent(event: Event) -> Any:
    """The event as a client of the stream reads it."""
    [message] = Parser().feed(event_frame(numbered(event, "j", 1)))
    return message.json()


def test_consecutive_chunks_of_one_stream_become_one_event() -> None:
    chunks = [
        OutputChunk("stdout", "1\n2", 1.0),
        OutputChunk("stdout", "3", 2.0),
        OutputChunk("stderr", "e1", 3.0),
        OutputChunk("stdout", "4", 4.0),
    ]
    events = output_events(chunks)
    assert summary(events) == [
        ("output", "stdout", "1\n2\n3"),
        ("output", "stderr", "e1"),
        ("output", "stdout", "4"),
    ]
    assert [e.ts for e in events] == [1.0, 3.0, 4.0]  # when the run's first line was read
    assert sent(events[0])["lines"] == 3


def test_makepkg_phase_lines_break_a_run_and_carry_their_level() -> None:
    text = "==> Making package: x\nbuilding\nstill\n==> WARNING: odd\n==> ERROR: bad\nafter"
    events = output_events([OutputChunk("stdout", text, 0.0)])
    assert summary(events) == [
        ("phase", "stdout", "==> Making package: x"),
        ("output", "stdout", "building\nstill"),
        ("phase", "stdout", "==> WARNING: odd"),
        ("phase", "stdout", "==> ERROR: bad"),
        ("output", "stdout", "after"),
    ]
    assert [e.level for e in events if e.action is Action.PHASE] == [
        Level.INFO,
        Level.WARNING,
        Level.ERROR,
    ]
    assert "lines" not in sent(events[0])


def test_a_marker_inside_a_line_is_not_a_phase() -> None:
    events = output_events([OutputChunk("stdout", "echo ==> not a phase", 0.0)])
    assert summary(events) == [("output", "stdout", "echo ==> not a phase")]


def test_empty_lines_are_kept() -> None:
    events = output_events([OutputChunk("stdout", "", 0.0), OutputChunk("stdout", "", 0.0)])
    assert summary(events) == [("output", "stdout", "\n")]
    assert sent(events[0])["lines"] == 2


def test_a_long_run_is_split_at_line_ends_and_loses_nothing() -> None:
    lines = [f"line {i:06d}" for i in range(20_000)]
    events = output_events([OutputChunk("stdout", "\n".join(lines), 0.0)])
    assert len(events) > 1
    assert all(len(e.message) <= MAX_OUTPUT_EVENT_CHARS for e in events)
    assert [line for e in events for line in e.message.split("\n")] == lines


def test_a_line_longer_than_an_event_stays_whole() -> None:
    huge = "x" * (MAX_OUTPUT_EVENT_CHARS + 10)
    events = output_events([OutputChunk("stderr", f"a\n{huge}\nb", 0.0)])
    assert [line for e in events for line in e.message.split("\n")] == ["a", huge, "b"]
