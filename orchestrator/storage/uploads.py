"""The queue's share of the data disk: what the unpacked uploads of unfinished jobs may take.

A gzip of a few hundred KiB can unpack to half a GiB, and uploads wait in the queue unpacked, so
the bytes they take are counted here (claimed before unpacking, so that uploads arriving together
cannot all take the last of it) and given back when each job ends. A claim is the most an upload
may unpack to, far more than most take, so one that finds no room while others are still
unpacking waits for them to settle to their real size before it is refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..errors import InsufficientStorage
from ..settings import MiB


class UploadBudget:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held: dict[str, int] = {}  # job id → what its upload takes (or may take)
        self._unpacking: set[str] = set()  # claimed, not yet settled: not on disk yet
        self._changed = asyncio.Event()  # set, and replaced, whenever a claim settles or ends

    @property
    def unpacking_bytes(self) -> int:
        """What uploads being unpacked now may still write."""
        return sum(self._held[job] for job in self._unpacking)

    @property
    def held_bytes(self) -> int:
        return sum(self._held.values())

    async def claim(self, job_id: str, at_most_bytes: int) -> int:
        """Claim room for an upload about to be unpacked; return how much it may unpack to.
        Raises ``InsufficientStorage`` when no room is left once nothing else is unpacking."""
        while (room := self.max_bytes - self.held_bytes) < at_most_bytes and self._unpacking:
            # Unpacking is bounded (a local file, at most max_build_dir_bytes), so this is too.
            await self._changed.wait()
        if room <= 0:
            raise InsufficientStorage(self.exceeded())
        self._held[job_id] = cap = min(at_most_bytes, room)
        self._unpacking.add(job_id)
        return cap

    async def settle(self, job_id: str, source_dir: Path) -> None:
        """Count what the unpacked upload really takes."""
        self._held[job_id] = await asyncio.to_thread(_tree_bytes, source_dir)
        self._unpacking.discard(job_id)
        self._wake()

    def release(self, job_id: str) -> None:
        self._held.pop(job_id, None)
        self._unpacking.discard(job_id)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def exceeded(self) -> str:
        return (
            f"the queue already holds {self.held_bytes // MiB} MiB of unpacked uploads, and at "
            f"most {self.max_bytes // MiB} MiB (ORCHESTRATOR_MAX_QUEUED_UPLOAD_BYTES): try "
            "again when jobs ahead have ended"
        )


def _tree_bytes(folder: Path) -> int:
    # Each entry also takes an inode and at least a block: 100 000 empty files are not free.
    return sum(p.lstat().st_size + _ENTRY_BYTES for p in folder.rglob("*"))


_ENTRY_BYTES = 4096
