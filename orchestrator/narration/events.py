"""Narration: what happened during a job, as data. Text for people is rendered from it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter

from ..backend import OutputChunk, Stream


class Level(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Action(StrEnum):
    QUEUED = "queued"
    VALIDATED = "validated"
    CONTAINER_CREATED = "container_created"
    SOURCES_COPIED = "sources_copied"
    CACHE = "cache"  # which build cache a build got, and afterwards what hit in it
    BUILD_STARTED = "build_started"
    ADOPTED = "adopted"  # a restarted service picked a running (or ended) build up again
    OUTPUT = "output"  # a run of lines of one stream, joined by "\n"
    PHASE = "phase"  # one of makepkg's own "==> ..." lines, still carrying its stream
    BUILD_EXITED = "build_exited"
    ARTIFACT_STORED = "artifact_stored"
    INSTALLED = "installed"
    PUBLISHED = "published"  # a job's packages were added to its variant's repository
    REPRODUCED = "reproduced"  # a rebuild's package compared with the original's, and the end
    PROGRESS = "progress"
    SAMPLE = "sample"  # a running build's resource figures (its own SSE event type: `sample`)
    ESTIMATE = "estimate"  # how long a job is expected to take, once it starts
    SILENCE = "silence"  # a build printed nothing for a while: what it is doing meanwhile
    CANCELLING = "cancelling"
    CONTAINER_REMOVED = "container_removed"
    WARNING = "warning"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"


def about(meaning: str) -> dict[str, str]:
    """A field's metadata: what it means, with its unit (the API documents it)."""
    return {"meaning": meaning}


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened during a job.

    These fields, with the two the store adds (``schema.StoredEvent``), are the event's schema:
    the stored row, the stream's JSON and the API's model are made from them (``schema.py``).
    A new field is one line here, with its meaning, plus whatever sets it.
    """

    action: Action = field(metadata=about("what happened"))
    message: str = field(
        metadata=about(
            "for `output` events: a run of consecutive lines of one stream, joined by "
            "\\n (no trailing newline)"
        )
    )
    level: Level = field(default=Level.INFO, metadata=about("how much it matters"))
    stream: Stream | None = field(
        default=None, metadata=about("the build's output stream it came from")
    )
    ts: float = field(default_factory=time.time, metadata=about("Unix time, seconds"))
    estimate_s: float | None = field(
        default=None,
        metadata=about("`estimate`: seconds the job is expected to take from its start"),
    )
    # A `sample`'s figures (None on every other event), as the engine reported them.
    elapsed_s: float | None = field(
        default=None, metadata=about("`sample`: seconds since the build's command started")
    )
    cpu_seconds: float | None = field(
        default=None, metadata=about("`sample`: CPU time the build has used, all its processes")
    )
    cpu_percent: float | None = field(
        default=None,
        metadata=about("`sample`: CPU use since the sample before, 100 per busy core"),
    )
    memory_bytes: int | None = field(
        default=None,
        metadata=about(
            "`sample`: memory its processes hold now: their own pages and the files they map"
        ),
    )
    peak_memory_bytes: int | None = field(
        default=None, metadata=about("`sample`: the most memory held at any sample so far")
    )
    memory_limit_bytes: int | None = field(
        default=None, metadata=about("`sample`: the build's memory limit, when it has one")
    )
    pids: int | None = field(default=None, metadata=about("`sample`: processes and threads now"))
    disk_bytes: int | None = field(
        default=None,
        metadata=about("`sample`: bytes the build has written to its disk and cache, last look"),
    )
    net_rx_bytes: int | None = field(
        default=None, metadata=about("`sample`: network bytes received since it started")
    )
    net_tx_bytes: int | None = field(
        default=None, metadata=about("`sample`: network bytes sent since it started")
    )


def line_count(message: str) -> int:
    """How many lines an OUTPUT event's message holds (the ``lines`` field clients see)."""
    return message.count("\n") + 1


MAX_OUTPUT_EVENT_CHARS = 64 * 1024  # a bigger run of lines is sent as several events
_PHASE = "==> "  # makepkg's own progress lines: each one its own PHASE event


def output_events(chunks: Iterable[OutputChunk]) -> list[Event]:
    """Build output as events: each OUTPUT event holds a run of lines of one stream.

    A build can print close to a million lines a second, so lines are not events of their own:
    consecutive lines of one stream share an event, joined by ``\n``, up to
    ``MAX_OUTPUT_EVENT_CHARS``. makepkg's ``==> `` lines break a run and become PHASE events.
    """
    events: list[Event] = []
    for stream, run in itertools.groupby(chunks, key=attrgetter("stream")):
        group = list(run)
        text = group[0].text if len(group) == 1 else "\n".join(c.text for c in group)
        ts = group[0].ts
        if not text.startswith(_PHASE) and "\n" + _PHASE not in text:
            _add_output(events, stream, text, ts)  # the usual case: no per-line work at all
            continue
        plain: list[str] = []
        for line in text.split("\n"):
            if line.startswith(_PHASE):
                if plain:
                    _add_output(events, stream, "\n".join(plain), ts)
                    plain = []
                events.append(Event(Action.PHASE, line, _phase_level(line), stream, ts))
            else:
                plain.append(line)
        if plain:
            _add_output(events, stream, "\n".join(plain), ts)
    return events


def _add_output(events: list[Event], stream: Stream, text: str, ts: float) -> None:
    start = 0
    while len(text) - start > MAX_OUTPUT_EVENT_CHARS:
        cut = text.rfind("\n", start, start + MAX_OUTPUT_EVENT_CHARS)
        if cut <= start:  # one line longer than the limit: it stays whole
            cut = text.find("\n", start + MAX_OUTPUT_EVENT_CHARS)
            if cut < 0:
                break
        events.append(Event(Action.OUTPUT, text[start:cut], Level.INFO, stream, ts))
        start = cut + 1
    events.append(Event(Action.OUTPUT, text[start:], Level.INFO, stream, ts))


def _phase_level(line: str) -> Level:
    if line.startswith("==> ERROR:"):
        return Level.ERROR
    if line.startswith("==> WARNING:"):
        return Level.WARNING
    return Level.INFO
