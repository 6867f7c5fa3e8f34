"""Narration: what happened during a job, as data. Text for people is rendered from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
    BUILD_STARTED = "build_started"
    OUTPUT = "output"
    PHASE = "phase"  # makepkg's own "==> ..." lines, still carrying their stream
    BUILD_EXITED = "build_exited"
    ARTIFACT_STORED = "artifact_stored"
    INSTALLED = "installed"
    PROGRESS = "progress"
    CANCELLING = "cancelling"
    CONTAINER_REMOVED = "container_removed"
    WARNING = "warning"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class Event:
    action: Action
    message: str
    level: Level = Level.INFO
    stream: str | None = None
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ts": self.ts,
            "action": self.action.value,
            "level": self.level.value,
            "message": self.message,
        }
        if self.stream is not None:
            data["stream"] = self.stream
        return data


def output_event(stream: str, text: str, ts: float) -> Event:
    """One line of build output; makepkg's phase markers become PHASE events."""
    if text.startswith("==> "):
        if text.startswith("==> ERROR:"):
            level = Level.ERROR
        elif text.startswith("==> WARNING:"):
            level = Level.WARNING
        else:
            level = Level.INFO
        return Event(Action.PHASE, text, level, stream, ts)
    return Event(Action.OUTPUT, text, Level.INFO, stream, ts)
