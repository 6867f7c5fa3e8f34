"""The busy guard: one unfinished job per subject ("worker:ID", "model:NAME")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import JobStateConflict


class Subjects:
    def __init__(self) -> None:
        # Claimed by a request still being queued (before its job exists): claimed without an
        # await in between, so two requests cannot both pass.
        self._claimed: set[str] = set()
        self._held: dict[str, str] = {}  # subject → the unfinished job acting on it

    def busy_with(self, subject: str) -> str | None:
        """The id of an unfinished job acting on ``subject``, if there is one."""
        return self._held.get(subject)

    def ensure_idle(self, subject: str) -> None:
        """409 while a job works on ``subject``: one job at a time, and no removal under it."""
        if subject in self._claimed:
            raise JobStateConflict(f"{subject} is busy: a job for it is being queued", "queued")
        if (running := self._held.get(subject)) is not None:
            raise JobStateConflict(f"{subject} is busy: job {running} is working on it", "running")

    @contextlib.contextmanager
    def claim(self, subject: str | None) -> Iterator[None]:
        """Hold ``subject`` while a job for it is being queued (``hold`` keeps it after)."""
        if subject is None:
            yield
            return
        self.ensure_idle(subject)
        self._claimed.add(subject)
        try:
            yield
        finally:
            self._claimed.discard(subject)

    def hold(self, subject: str | None, job_id: str) -> None:
        if subject is not None:
            self._held[subject] = job_id

    def release(self, subject: str | None, job_id: str) -> None:
        if subject is not None and self._held.get(subject) == job_id:
            del self._held[subject]
