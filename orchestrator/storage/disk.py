"""The data disk: how much room is left under the data directory, and a reserve for bad days.

Everything the service must not lose lives there (the job store, uploads waiting in the queue,
packages). When it fills, the service must still be able to say how each job ended, so it keeps
a reserve file of a few MiB that it deletes the moment the disk is full: the final writes go into
that room. While the disk is full no new work is taken (507) and running jobs are stopped with a
reason that names the disk; once there is room again for the minimum and the reserve, the reserve
is made again and work resumes, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..settings import MiB

log = logging.getLogger(__name__)

RESERVE_NAME = ".reserve"
_OUT_OF_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk had no room."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _OUT_OF_SPACE_ERRNOS:
            return True
        if isinstance(cause, sqlite3.Error):
            code = (getattr(cause, "sqlite_errorcode", 0) or 0) & 0xFF
            if code == _SQLITE_FULL:
                return True
        cause = cause.__cause__ or cause.__context__
    return False


class DataDisk:
    def __init__(
        self, path: Path, *, min_free_bytes: int, reserve_bytes: int, poll_s: float
    ) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.reserve_bytes = reserve_bytes
        self._poll_s = poll_s
        self._reserve = path / RESERVE_NAME
        self._full: str | None = None
        self._ok = asyncio.Event()
        self._ok.set()
        self._listeners: list[Callable[[str | None], None]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.path.mkdir, parents=True, exist_ok=True)
        await self.check()
        self._task = asyncio.create_task(self._watch(), name="data-disk")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def full(self) -> str | None:
        """How full the disk is ("12 MiB free at /data, at least 256 MiB needed") while it
        counts as full; None when there is room."""
        return self._full

    def on_change(self, listener: Callable[[str | None], None]) -> None:
        """Call ``listener`` on the loop with ``full`` whenever it changes."""
        self._listeners.append(listener)

    async def wait_for_room(self) -> None:
        await self._ok.wait()

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def room_bytes(self) -> int:
        """What may still be written before the disk counts as full (negative when it is)."""
        return self.free_bytes() - self.min_free_bytes

    def make_room(self, exc: BaseException | None = None) -> bool:
        """Give up the reserve (any thread may call this, e.g. the store's on a failed write);
        True when that freed something, so the write is worth one more try."""
        if exc is not None and not out_of_space(exc):
            return False
        try:
            self._reserve.unlink()
        except FileNotFoundError:
            return False
        log.warning(
            "the data disk at %s is full: released the %d-byte reserve",
            self.path,
            self.reserve_bytes,
        )
        return True

    async def check(self) -> str | None:
        free = await asyncio.to_thread(self.free_bytes)
        has_reserve = self._reserve.exists()
        # Room means the minimum, plus the reserve when it has to be made again: not less, or
        # a disk that just filled would count as having room as soon as the reserve is spent.
        needed = self.min_free_bytes + (0 if has_reserve else self.reserve_bytes)
        if free >= needed and (has_reserve or await asyncio.to_thread(self._refill)):
            self._set_full(None)
        else:
            self._set_full(f"{free // MiB} MiB free at {self.path}, {needed // MiB} MiB needed")
            if has_reserve and free < self.min_free_bytes:
                await asyncio.to_thread(self.make_room)
        return self._full

    def _refill(self) -> bool:
        if self._reserve.exists() or self.reserve_bytes == 0:
            return True
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return True
        try:
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                # Filesystems without fallocate: real zeros, so the room is really taken.
                block = bytes(MiB)
                for _ in range(0, self.reserve_bytes, len(block)):
                    os.write(fd, block)
        except OSError as exc:
            os.close(fd)
            self._reserve.unlink(missing_ok=True)
            log.warning("could not make the data disk's reserve: %s", exc)
            return False
        os.close(fd)
        return True

    def _set_full(self, reason: str | None) -> None:
        changed = (reason is None) != (self._full is None)
        self._full = reason
        if not changed:
            return
        if reason is None:
            log.info("the data disk at %s has room again", self.path)
            self._ok.set()
        else:
            log.error("the data disk is full: %s", reason)
            self._ok.clear()
        for listener in self._listeners:
            try:
                listener(reason)
            except Exception:
                log.exception("a data-disk listener failed")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.check()
            except OSError as exc:
                log.warning("could not check the data disk: %s", exc)
