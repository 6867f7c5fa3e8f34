"""The running jobs an earlier process left, as the next start takes them up: the build goes on
(adopted, watched at once), the job is queued again (its build never started), or it cannot
go on (why, for the registry to interrupt it)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ..errors import OrchestratorError, StepGone, StepNotStarted
from ..narration.events import Action
from ..storage.store import JobRecord, Store
from .cancel import CancelReason
from .handles import Handle, Handles
from .kind import Adoptable, Concludable, Job, Kind
from .status import JobStatus

# Queues a job again, first in the queue, saying so with the message.
Requeue = Callable[[JobRecord, Kind, Job, str], Awaitable[None]]


class Leftovers:
    def __init__(self, store: Store, handles: Handles, requeue: Requeue, *, adopts: bool) -> None:
        """``adopts``: whether the engine can pick builds up again at all."""
        self._store = store
        self._handles = handles
        self._requeue = requeue
        self._adopts = adopts
        self.adopted: list[Handle] = []  # taken up, for the registry to watch once it starts

    async def adopt(self, record: JobRecord, kind: Kind) -> str | None:
        """Go on with a build an earlier process left running; None, or why it cannot."""
        if not self._adopts or not isinstance(kind, Adoptable):
            return "the service stopped while this job was running"
        try:
            stored = await self._store.output_lines(record.id)
            job = await kind.adopt(record, stored, await self._store.output_ends(record.id))
        except StepGone as exc:
            return await self._gone(record, kind, exc)
        except StepNotStarted:
            return await self._queue_again(record, kind)
        except (OrchestratorError, OSError) as exc:
            return f"it could not be picked up again after a restart: {exc}"
        self._take_up(record, kind, job)
        return None

    def _take_up(self, record: JobRecord, kind: Kind, job: Job) -> None:
        """Run ``job`` as the running job ``record`` goes on, watched at once (it runs)."""
        started = record.started_at if record.started_at is not None else time.time()
        handle = Handle(
            record.id, job, kind, kind.subject(record), record.timeout_s, adopted_at=started
        )
        if record.cancel_reason is not None:  # asked before the stop, not carried out
            handle.token.cancel(CancelReason(record.cancel_reason))
        self._handles.add(handle)
        self.adopted.append(handle)

    async def _gone(self, record: JobRecord, kind: Kind, gone: StepGone) -> str | None:
        """No step of the job is left: was there ever one, or was it done with? Its narration
        says: a kill before the engine made the step, or after the packages were stored and
        while the step was removed, is no lost build."""
        happened = await self._store.actions(record.id)
        if Action.CONTAINER_CREATED.value not in happened:
            return await self._queue_again(record, kind)
        if Action.ARTIFACT_STORED.value in happened and isinstance(kind, Concludable):
            try:
                job = await kind.conclude(record)
            except (OrchestratorError, OSError) as exc:
                return f"{gone}; its packages could not be taken up again: {exc}"
            self._take_up(record, kind, job)
            return None
        return str(gone)

    async def _queue_again(self, record: JobRecord, kind: Kind) -> str | None:
        """A job whose build never started runs again from its sources, first in the queue."""
        try:
            job = await kind.resume(record)
        except (OrchestratorError, OSError) as exc:
            return f"its build had not started and it could not be queued again: {exc}"
        await self._store.update_job(record.id, status=JobStatus.QUEUED, started_at=None)
        message = "🔁 Queued again after a restart: its build had been set up, not started"
        await self._requeue(record, kind, job, message)
        return None
