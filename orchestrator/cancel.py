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


class CancelToken:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._reason: CancelReason | None = None

    @property
    def reason(self) -> CancelReason | None:
        return self._reason

    @property
    def cancelled(self) -> bool:
        return self._reason is not None

    def cancel(self, reason: CancelReason = CancelReason.USER) -> bool:
        """Record ``reason`` and wake the build; False if it was already cancelled (first wins)."""
        if self._reason is not None:
            return False
        self._reason = reason
        self._event.set()
        return True

    async def wait(self) -> CancelReason:
        await self._event.wait()
        assert self._reason is not None
        return self._reason
