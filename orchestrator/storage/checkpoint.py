"""Copies the store's write-ahead log back into the database on a thread of its own.

SQLite's automatic checkpoint runs inside the commit that crosses its threshold, and it syncs
the database file: measured here, a commit stuck for 50 to 90 ms every 4 MB of narration. Live
output is shown only once committed, so that stall is a stall of every stream. A PASSIVE
checkpoint from a second connection runs beside the writer instead of in front of it. The writer
keeps a far higher automatic threshold as a backstop, in case this one cannot keep up (a long
read holding the log).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..timeouts import CHECKPOINT_INTERVAL_S

log = logging.getLogger(__name__)

BACKSTOP_PAGES = 16_384  # the writer's own wal_autocheckpoint: 64 MiB of log at 4 KiB pages


class Checkpointer:
    def __init__(self, path: Path, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self._path = path
        self._interval_s = interval_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orchestrator-wal")
        self._conn: sqlite3.Connection | None = None
        self._dirty = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="store-checkpoint")

    def committed(self) -> None:
        """Something was written: the next round has work to do."""
        self._dirty.set()

    async def close(self) -> None:
        """Never raises: the store's own close must go on whatever happened here."""
        self._task.cancel()
        await asyncio.wait({self._task})  # returns, rather than raises, whatever the task did
        if not self._task.cancelled() and (exc := self._task.exception()) is not None:
            log.warning("the checkpoint task had failed: %r", exc)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_conn)
        except sqlite3.Error as exc:
            log.warning("closing the checkpoint connection: %s", exc)
        finally:
            self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await loop.run_in_executor(self._executor, self._checkpoint)
            except (sqlite3.Error, OSError) as exc:
                # Not fatal: the log grows until the next round or the writer's backstop.
                log.warning("checkpoint of %s failed: %s", self._path, exc)
            await asyncio.sleep(self._interval_s)

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
