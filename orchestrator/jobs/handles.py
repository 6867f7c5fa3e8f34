"""What the registry holds in memory for each job unfinished here (queued, running, or being
set aside at a stop): its handle. A job's handle exists exactly while the job is unfinished
here; ``Handles`` keeps that true, with the job's stream and its subject's busy guard, which
live exactly as long."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..narration.bus import Bus
from ..storage.store import JobRecord
from .cancel import CancelToken
from .kind import Job, Kind
from .subjects import Subjects


@dataclass
class Handle:
    job_id: str
    job: Job
    kind: Kind
    subject: str | None
    timeout_s: float | None
    token: CancelToken = field(default_factory=CancelToken)
    started: bool = False
    finishing: bool = False  # the final status is being written; too late to cancel
    adopted_at: float | None = None  # an adopted build's real start (an earlier process's)
    done: asyncio.Future[JobRecord] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Handles:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._by_id: dict[str, Handle] = {}
        self.subjects = Subjects()

    def add(self, handle: Handle) -> None:
        """The job is unfinished here from now on: its stream is open, its subject busy."""
        self._by_id[handle.job_id] = handle
        self.subjects.hold(handle.subject, handle.job_id)
        self._bus.open(handle.job_id)

    def settle(self, handle: Handle, outcome: JobRecord | BaseException | None) -> None:
        """The job is no longer unfinished here: its waiters hear ``outcome`` (the record it
        ended with, or why that is unknown; nothing when None), its stream ends and its subject
        is free."""
        if not handle.done.done():
            if isinstance(outcome, BaseException):
                handle.done.set_exception(outcome)
            elif outcome is not None:
                handle.done.set_result(outcome)
        self._bus.close(handle.job_id)
        self._by_id.pop(handle.job_id, None)
        self.subjects.release(handle.subject, handle.job_id)

    def get(self, job_id: str) -> Handle | None:
        return self._by_id.get(job_id)

    def __getitem__(self, job_id: str) -> Handle:
        return self._by_id[job_id]

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._by_id

    def __iter__(self) -> Iterator[Handle]:
        """The handles (a copy: a job may settle while they are gone through)."""
        return iter(list(self._by_id.values()))

    def ids(self) -> set[str]:
        return set(self._by_id)

    def started(self) -> int:
        return sum(handle.started for handle in self._by_id.values())
