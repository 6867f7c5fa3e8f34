"""What every job hands back and writes into: its result, and the sink its narration goes to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..narration.events import Event
from .cancel import CancelToken
from .status import JobStatus

Sink = Callable[[Sequence[Event]], Awaitable[None]]
"""Where a job's narration goes (the store, then the bus; a recorder in tests)."""


@dataclass(frozen=True, slots=True)
class JobResult:
    status: JobStatus
    reason: str
    exit_code: int | None = None
    artifacts: tuple[Path, ...] = field(default=())
    cache: Mapping[str, Any] | None = None  # a build's: whether a cache was used, and what hit
    # The last narration line when the kind words its success itself ("✅ Worker X installed");
    # otherwise the table of endings words it.
    ending: str | None = None
    # A build's life as its record keeps it (``vitals.Totals.fields``): peak memory, CPU...
    life: Mapping[str, Any] | None = None


Work = Callable[[Sink, CancelToken], Awaitable[JobResult]]
"""What a job does once it runs: narrate into the sink, honour the token, and return how it
ended. It does not say the last line: whoever runs it does (``jobs.perform``)."""


def failed_after(result: JobResult, message: str) -> JobResult:
    """``result``, a success, turned into a failure by a step after the build (publishing,
    signing its provenance): its packages stay, its reason says both."""
    return replace(
        result, status=JobStatus.FAILED, reason=f"{result.reason}, but {message}", ending=None
    )
