"""A job's final status: written once, shielded by its callers from cancellation, and kept in
memory when the store cannot take it (a full disk) until it has room again."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

from ..metrics import Metrics
from ..storage.store import JobRecord, Store
from ..storage.uploads import UploadBudget
from .endings import stopped_by
from .handles import Handle, Handles
from .result import JobResult

log = logging.getLogger(__name__)


class FinalStatus:
    def __init__(
        self, store: Store, metrics: Metrics, handles: Handles, uploads: UploadBudget
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._handles = handles
        self._uploads = uploads
        # Final statuses the store could not take (a full disk), written once it has room.
        self._unwritten: dict[str, tuple[Handle, JobResult, float | None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def finish(self, handle: Handle, result: JobResult, started: float | None) -> None:
        """Write the final status; whatever fails, the stream ends and waiters are released."""
        handle.finishing = True
        outcome: JobRecord | BaseException | None = None
        try:
            outcome = await self._write(handle, result, started)
        except Exception as exc:
            log.exception("could not record the end of job %s", handle.job_id)
            self._unwritten[handle.job_id] = (handle, result, started)
            outcome = exc
        finally:
            self._handles.settle(handle, outcome)
            if handle.job.cleanup_dir is not None:
                await asyncio.to_thread(shutil.rmtree, handle.job.cleanup_dir, True)
            self._uploads.release(handle.job_id)

    def room_again(self) -> None:
        """The store has room again: write what it could not take, in the background."""
        if self._unwritten:
            task = asyncio.create_task(self._write_unwritten())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _write_unwritten(self) -> None:
        for job_id, (handle, result, started) in list(self._unwritten.items()):
            try:
                await self._write(handle, result, started)
            except Exception:
                log.exception("still cannot record the end of job %s", job_id)
                return
            del self._unwritten[job_id]

    async def _write(self, handle: Handle, result: JobResult, started: float | None) -> JobRecord:
        finished = time.time()
        reason = handle.token.reason
        # A cancel that came too late to stop anything leaves no trace: the job ended otherwise.
        stopped = stopped_by(reason, result.status)
        if stopped and reason is not None:
            self._metrics.cancels.labels(reason=reason.value).inc()
        record = await self._store.update_job(
            handle.job_id,
            status=result.status,
            finished_at=finished,
            exit_code=result.exit_code,
            reason=result.reason,
            cancel_reason=reason.value if stopped and reason else None,
            artifacts=tuple(p.name for p in result.artifacts),
            cache=result.cache,
            **(result.life or {}),
        )
        # Before the flush: by the time anyone can read the final status, it is counted.
        self._metrics.job_ended(record, result.cache)
        await self._store.flush()
        return record
