"""Jobs of every kind: submit, queue (FIFO, a fixed number at once), cancel, and shutdown.

Kinds are registered by name (``register``) and looked up by it; what differs between them is
theirs (``jobs.Kind``), and everything else is here, once: the time limit (``jobs.perform``), the
busy guard (one unfinished job per subject), the endings and the final status.

A job's state lives in the store; what this module holds in memory for a job is only its handle:
the cancel token, and a future that completes when the job has reached its final status. A cancel
is recorded (in the store, and in the token) before anything is killed, so cancel, timeout and
shutdown always end up as their own statuses. Final status writes are shielded from cancellation.

A stop leaves running builds running by default (``on_stop``): their jobs stay ``running`` in
the store with no handle here, and the next start adopts them (``recovery.py`` decides, the
kind finds the build's step again, ``adopting.py`` watches it); an adopted build is watched at
once, in a slot of its own.

The invariant all of it keeps (a job's handle exists exactly while it is unfinished here) is
``Handles``'s. Restart recovery is ``recovery.py``, taking up what an earlier process left
running ``leftovers.py``, following an adopted build ``adopting.py``, the stop ``stopping.py``,
and the final status write ``final_status.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import (
    Detached,
    InsufficientStorage,
    JobNotFound,
    JobStateConflict,
    ShuttingDown,
    UnknownOperation,
)
from ..metrics import Metrics
from ..narration.bus import Bus
from ..narration.events import Action, Event
from ..settings import Settings
from ..storage.disk import DataDisk, out_of_space
from ..storage.store import JobRecord, Store
from ..storage.uploads import UploadBudget
from . import (
    Job,
    JobResult,
    Kind,
    Plan,
    Submission,
    cancel_result,
    ending_event,
    interrupted_result,
    parse_timeout,
    perform,
    recovery,
    stopping,
    unstarted_result,
)
from .cancel import CancelReason
from .estimate import announce
from .final_status import FinalStatus
from .handles import Handle, Handles
from .leftovers import Leftovers
from .status import JobStatus

log = logging.getLogger(__name__)
_REQUEUED = "🔁 Queued again after a restart"


@dataclass(frozen=True, slots=True)
class Submitted:
    record: JobRecord
    plan: Plan


class Registry:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: Bus,
        metrics: Metrics,
        disk: DataDisk | None = None,
        *,
        adopts: bool = True,
    ) -> None:
        """``adopts``: whether the engine can pick builds up again (otherwise a stop ends
        them, whatever ``on_stop`` says)."""
        self._settings = settings
        self._on_stop = settings.on_stop if adopts or settings.on_stop == "drain" else "cancel"
        self._recovered = False
        self._left: set[str] = set()  # builds left running at the stop, for the next start
        self._slots_taken = 0  # tasks watching a build or taking work from the queue
        self._store = store
        self._bus = bus
        self._metrics = metrics
        self._disk = disk
        self._queue: asyncio.Queue[Handle] = asyncio.Queue()
        self._handles = Handles(bus)
        self._subjects = self._handles.subjects
        self._workers: list[asyncio.Task[None]] = []
        self._accepting = False
        self._kinds: dict[str, Kind] = {}
        self._stopping: asyncio.Future[None] | None = None  # the one shutdown, once begun
        self.uploads = UploadBudget(settings.max_queued_upload_bytes)
        self._final = FinalStatus(store, metrics, self._handles, self.uploads)
        self._leftovers = Leftovers(store, self._handles, self._requeue, adopts=adopts)
        if disk is not None:
            disk.on_change(self._disk_changed)

    def check_room(self) -> None:
        """Raise ``InsufficientStorage`` while the data disk is full."""
        if self._disk is not None and (full := self._disk.full) is not None:
            raise InsufficientStorage(
                f"the data disk is full ({full}): no new jobs until there is room again"
            )

    def _disk_changed(self, full: str | None) -> None:
        if full is not None:
            # Their output and packages could not be kept: stop them, saying why. Queued jobs
            # wait (the workers wait for room before starting one).
            for handle in self._handles:
                if handle.started and not handle.finishing:
                    handle.token.cancel(CancelReason.DISK_FULL, full)
        else:
            self._final.room_again()

    def register(self, kind: Kind) -> None:
        """Run jobs of ``kind``, under its name."""
        self._kinds[kind.name] = kind

    def kind(self, name: object, *, upload: bool = False) -> Kind:
        """The kind called ``name`` among those whose request is (or is not) an upload."""
        kind = self._kinds.get(name) if isinstance(name, str) else None
        if kind is None or kind.upload is not upload:
            known = tuple(k.name for k in self._kinds.values() if k.upload is upload)
            raise UnknownOperation(name, known)
        return kind

    def parse_timeout(self, raw: object) -> float:
        return parse_timeout(raw, self._settings.default_timeout_s, self._settings.max_timeout_s)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Adopt what an earlier process left running (interrupt it where its build is gone),
        queue again what it left queued (in its order, before any new job), and start the
        workers. Returns the interrupted ids."""
        interrupted = await recovery.recover(
            self._store, self._kinds, self._requeue, self._leftovers.adopt
        )
        keep = self._handles.ids()
        await asyncio.to_thread(recovery.remove_all_but, self._settings.work_dir, keep)
        await recovery.remove_unowned_inputs(self._store, self._settings.artifacts_dir)
        self._recovered = True
        self._accepting = True
        # An adopted build is running already: it is watched at once, in a slot of its own,
        # which becomes a worker once it ends (so no more than the limit run at once).
        adopted, self._leftovers.adopted = self._leftovers.adopted, []
        slots = self._settings.max_concurrent_builds
        self._workers = [
            asyncio.create_task(self._watch_adopted(handle), name=f"adopted-{handle.job_id}")
            for handle in adopted
        ]
        self._workers += [
            asyncio.create_task(self._work(), name=f"build-worker-{i}")
            for i in range(max(0, slots - len(adopted)))
        ]
        self._slots_taken = len(self._workers)
        return interrupted

    async def _watch_adopted(self, handle: Handle) -> None:
        handle.started = True
        self._metrics.running.inc()
        try:
            await self._run(handle)
        finally:
            self._metrics.running.dec()
        # More were adopted than may run at once (the limit was lowered): a slot is freed.
        if self._slots_taken > self._settings.max_concurrent_builds:
            self._slots_taken -= 1
            return
        await self._work()

    async def _requeue(
        self, record: JobRecord, kind: Kind, job: Job, message: str = _REQUEUED
    ) -> None:
        await self._enqueue(record, kind, job, message, recovering=True)

    def is_active(self, job_id: str) -> bool:
        """Whether the job is queued or running here (its containers are in use)."""
        return job_id in self._handles

    def holds(self, job_id: str) -> bool:
        """Whether the job's build step is this service's to keep: its job is active here, was
        left running at the stop, or may be adopted (not recovered yet)."""
        return not self._recovered or self.is_active(job_id) or job_id in self._left

    async def shutdown(self) -> None:
        """Take no more work; end every stream. Running builds are left running for the next
        start (``on_stop=leave``), stopped (``cancel``: containers removed), or waited for
        (``drain``).

        Jobs still waiting stay queued, with their sources, for the next start. Idempotent: a
        later call waits for the first one's work, which a cancelled caller does not cut short.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        self._accepting = False
        try:
            await stopping.stop(self._handles, self._on_stop, self._workers, self._set_aside)
        finally:
            self._bus.shutdown()

    async def _set_aside(self, handle: Handle, how: stopping.Aside) -> None:
        if how == "left":
            self._left.add(handle.job_id)
        await stopping.set_aside(
            handle, how, handles=self._handles, store=self._store, emit=self._emit
        )

    # -- requests -----------------------------------------------------------------------------

    def new_job_id(self) -> str:
        return uuid.uuid4().hex

    async def submit(self, kind_name: object, submission: Submission) -> Submitted:
        """Queue a job of the kind called ``kind_name``, or refuse it (nothing is left behind)."""
        timeout_s = self.parse_timeout(submission.body.get("timeout_s"))
        kind = self.kind(kind_name, upload=submission.upload is not None)
        plan = await kind.parse(submission)
        record = plan.record(submission.job_id, kind.name, timeout_s)
        with self._subjects.claim(kind.subject(record)):
            self._check_accepting()
            self.check_room()
            job = await kind.job(record)
            try:
                await self._store.create_job(record)
            except BaseException:
                if job.cleanup_dir is not None:
                    await asyncio.to_thread(shutil.rmtree, job.cleanup_dir, True)
                self.uploads.release(record.id)  # what its sources were counted as
                raise
            await self._enqueue(record, kind, job, plan.message)
        return Submitted(record, plan)

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ShuttingDown("the service is shutting down and takes no new work")

    async def _enqueue(
        self, record: JobRecord, kind: Kind, job: Job, message: str, *, recovering: bool = False
    ) -> None:
        job_id = record.id
        handle = Handle(job_id, job, kind, kind.subject(record), record.timeout_s)
        self._handles.add(handle)
        try:
            ahead = self._queue.qsize() + self._handles.started()
            if ahead >= self._settings.max_concurrent_builds:
                message += f"; {self._queue.qsize()} job(s) ahead"
            await self._emit(job_id, [Event(Action.QUEUED, message)])
            if not recovering:  # shutdown may have begun while we were writing
                self._check_accepting()
        except BaseException as exc:
            result = JobResult(JobStatus.FAILED, f"not queued: {exc}")
            await asyncio.shield(self._final.finish(handle, result, None))
            raise
        self._queue.put_nowait(handle)
        self._metrics.queue_length.set(self._queue.qsize())

    def busy_with(self, subject: str) -> str | None:
        """The id of an unfinished job acting on ``subject``, if there is one."""
        return self._subjects.busy_with(subject)

    def ensure_idle(self, subject: str) -> None:
        """409 while a job works on ``subject`` ("worker:ID", "model:NAME"), or is being queued
        for it: one job at a time, and no removal under it."""
        self._subjects.ensure_idle(subject)

    async def get(self, job_id: str) -> JobRecord:
        record = await self._store.get_job(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job and return its record once it has ended (its container is gone)."""
        record = await self.get(job_id)
        handle = self._handles.get(job_id)
        if handle is not None and handle.finishing:
            record = await asyncio.shield(handle.done)
        if record.status.terminal or handle is None or handle.finishing:
            raise JobStateConflict(
                f"job {job_id} has already ended ({record.status.value})", record.status.value
            )
        if not handle.token.cancelled:
            # Recorded before it happens: whatever ends the job next, the store knows why.
            await self._store.update_job(job_id, cancel_reason=CancelReason.USER.value)
        if not handle.started:
            await self._cancel_unstarted(handle)
        else:
            handle.token.cancel(CancelReason.USER)
        record = await asyncio.shield(handle.done)
        if record.status is not JobStatus.CANCELLED:
            # The cancel came after the point of no return (the build had already exited), or
            # something else stopped the job first: an answer of 200 must mean "cancelled".
            raise JobStateConflict(
                f"job {job_id} ended ({record.status.value}) before the cancel could stop it",
                record.status.value,
            )
        return record

    # -- work ---------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            handle = await self._queue.get()
            self._metrics.queue_length.set(self._queue.qsize())
            if self._disk is not None:
                await self._disk.wait_for_room()
            if handle.token.cancelled:  # cancelled while queued; already finished
                continue
            handle.started = True
            self._metrics.running.inc()
            try:
                await self._run(handle)
            finally:
                self._metrics.running.dec()

    async def _run(self, handle: Handle) -> None:
        job_id, noun = handle.job_id, handle.kind.noun
        started = time.time() if handle.adopted_at is None else handle.adopted_at

        async def sink(batch: Sequence[Event]) -> None:
            await self._emit(job_id, batch)

        try:
            if handle.adopted_at is None:
                record = await self._store.update_job(
                    job_id, status=JobStatus.RUNNING, started_at=started
                )
                self._metrics.queue_wait.labels(variant=record.variant or "").observe(
                    max(0.0, started - record.created_at)
                )
                await announce(self._store, record, sink)
            result = await perform(
                handle.job.work,
                sink,
                handle.token,
                noun=noun,
                timeout_s=handle.timeout_s,
                elapsed_s=time.time() - started,
            )
        except Detached as exc:
            await asyncio.shield(self._set_aside(handle, "left" if exc.left else "requeued"))
            return
        except asyncio.CancelledError:
            if handle.token.detaching:  # stopped past the grace: left as the runner left it
                left = handle.token.step_started
                await asyncio.shield(self._set_aside(handle, "left" if left else "requeued"))
                raise
            result = interrupted_result(noun)
            await asyncio.shield(self._final.finish(handle, result, started))
            raise
        except Exception as exc:  # a bug or a store failure: the job must still end
            if out_of_space(exc):
                full = self._disk.full if self._disk is not None else None
                result = cancel_result(CancelReason.DISK_FULL, noun, detail=full or str(exc))
            else:
                log.exception("job %s failed inside the service", job_id)
                result = JobResult(JobStatus.FAILED, f"internal error: {exc}")
            with contextlib.suppress(Exception):
                await self._emit(job_id, [ending_event(result, noun)])
        await asyncio.shield(self._final.finish(handle, result, started))

    async def _cancel_unstarted(self, handle: Handle) -> None:
        if handle.done.done() or not handle.token.cancel(CancelReason.USER):
            return
        result = unstarted_result(handle.kind.noun)
        await self._emit(handle.job_id, [ending_event(result, handle.kind.noun)])
        await asyncio.shield(self._final.finish(handle, result, None))

    async def _emit(self, job_id: str, batch: Sequence[Event]) -> None:
        # Subscribers see the events once they are committed: the bus hears from the store.
        stored = await self._store.append(job_id, batch)
        self._metrics.events.inc(len(stored))

    @property
    def queue_length(self) -> int:
        return self._queue.qsize()
