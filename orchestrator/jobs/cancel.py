"""Cancellation tokens: the reason is recorded before anything is killed.

Whoever stops a build (a user, the timeout, the service shutting down) says why first; the runner
reads the reason afterwards, so the three endings are never confused.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum


class CancelReason(StrEnum):
    USER = "user"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    DISK_FULL = "disk_full"


class CancelToken:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._reason: CancelReason | None = None
        self._detail: str | None = None
        self._after_s: float | None = None
        self._detach = asyncio.Event()
        # Set by the runner once the build's step has started: from then on a stopping
        # service leaves it running (whatever is interrupted), as a later one can adopt it.
        self.step_started = False

    @property
    def reason(self) -> CancelReason | None:
        return self._reason

    @property
    def detail(self) -> str | None:
        """What the canceller said beyond the reason (which disk is full)."""
        return self._detail

    @property
    def after_s(self) -> float | None:
        """The time limit that ran out, when the reason is the timeout."""
        return self._after_s

    @property
    def cancelled(self) -> bool:
        return self._reason is not None

    def cancel(
        self,
        reason: CancelReason = CancelReason.USER,
        detail: str | None = None,
        *,
        after_s: float | None = None,
    ) -> bool:
        """Record ``reason`` and wake the build; False if it was already cancelled (first wins).
        ``after_s`` is the limit that ran out (the timeout), for the job's last words."""
        if self._reason is not None:
            return False
        self._reason = reason
        self._detail = detail
        self._after_s = after_s
        self._event.set()
        return True

    @property
    def detaching(self) -> bool:
        """The service is stopping and leaves the build running: not a cancel, no ending."""
        return self._detach.is_set()

    def detach(self) -> None:
        self._detach.set()

    async def wait_detach(self) -> None:
        await self._detach.wait()

    async def wait(self) -> CancelReason:
        await self._event.wait()
        assert self._reason is not None
        return self._reason
