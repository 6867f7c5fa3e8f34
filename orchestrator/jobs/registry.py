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

Over ~400 lines on purpose: the queue, cancel, the busy guard, the stop, adoption and the final
write share one invariant (a job's handle exists exactly while it is unfinished here); split
up, it would be spread over modules that must each know it. Restart recovery is already its own
(``recovery.py``), and so is following an adopted build (``adopting.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import (
    Detached,
    InsufficientStorage,
    JobNotFound,
    JobStateConflict,
    OrchestratorError,
    ShuttingDown,
    StepGone,
    StepNotStarted,
    UnknownOperation,
)
from ..metrics import Metrics
from ..narration.bus import Bus
from ..narration.events import Action, Event, Level
from ..settings import Settings
from ..storage.disk import DataDisk, out_of_space
from ..storage.store import JobRecord, Store
from ..storage.uploads import UploadBudget
from . import (
    Adoptable,
    Concludable,
    Job,
    JobResult,
    Kind,
    Plan,
    Subjects,
    Submission,
    cancel_result,
    ending_event,
    interrupted_result,
    parse_timeout,
    perform,
    recovery,
    stopped_by,
    unstarted_result,
)
from .cancel import CancelReason, CancelToken
from .status import JobStatus

_SHUTDOWN_GRACE_S = 60.0
# Leaving builds running is quick (their output streams close); a job still setting up past
# this is stopped instead, so the service exits within its 10 s.
_DETACH_GRACE_S = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Submitted:
    record: JobRecord
    plan: Plan


@dataclass
class _Handle:
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
        self._adopts = adopts
        self._recovered = False
        self._left: set[str] = set()  # builds left running at the stop, for the next start
        self._adopted: list[_Handle] = []  # found running at the start, watched once started
        self._slots_taken = 0  # tasks watching a build or taking work from the queue
        self._store = store
        self._bus = bus
        self._metrics = metrics
        self._disk = disk
        self._queue: asyncio.Queue[_Handle] = asyncio.Queue()
        self._handles: dict[str, _Handle] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._accepting = False
        self._kinds: dict[str, Kind] = {}
        self._subjects = Subjects()
        # Final statuses the store could not take (a full disk), written once it has room.
        self._unwritten: dict[str, tuple[_Handle, JobResult, float | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Future[None] | None = None  # the one shutdown, once begun
        self.uploads = UploadBudget(settings.max_queued_upload_bytes)
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
            for handle in self._handles.values():
                if handle.started and not handle.finishing:
                    handle.token.cancel(CancelReason.DISK_FULL, full)
        elif self._unwritten:
            task = asyncio.create_task(self._write_unwritten())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _write_unwritten(self) -> None:
        for job_id, (handle, result, started) in list(self._unwritten.items()):
            try:
                await self._write_final(handle, result, started)
            except Exception:
                log.exception("still cannot record the end of job %s", job_id)
                return
            del self._unwritten[job_id]

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
        interrupted = await self._recover()
        self._recovered = True
        self._accepting = True
        # An adopted build is running already: it is watched at once, in a slot of its own,
        # which becomes a worker once it ends (so no more than the limit run at once).
        adopted, self._adopted = self._adopted, []
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

    async def _watch_adopted(self, handle: _Handle) -> None:
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

    async def _recover(self) -> list[str]:
        async def enqueue(record: JobRecord, kind: Kind, job: Job) -> None:
            message = "🔁 Queued again after a restart"
            await self._enqueue(record, kind, job, message, recovering=True)

        interrupted = await recovery.recover(self._store, self._kinds, enqueue, self._adopt)
        await asyncio.to_thread(
            recovery.remove_all_but, self._settings.work_dir, set(self._handles)
        )
        return interrupted

    async def _adopt(self, record: JobRecord, kind: Kind) -> str | None:
        """Go on with a build an earlier process left running; None, or why it cannot."""
        if not self._adopts or not isinstance(kind, Adoptable):
            return "the service stopped while this job was running"
        try:
            job = await kind.adopt(record, await self._store.output_lines(record.id))
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
        handle = _Handle(
            record.id, job, kind, kind.subject(record), record.timeout_s, adopted_at=started
        )
        if record.cancel_reason is not None:  # asked before the stop, not carried out
            handle.token.cancel(CancelReason(record.cancel_reason))
        self._handles[record.id] = handle
        self._subjects.hold(handle.subject, record.id)
        self._bus.open(record.id)
        self._adopted.append(handle)

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
        await self._enqueue(record, kind, job, message, recovering=True)
        return None

    def holds(self, job_id: str) -> bool:
        """Whether the job's build step is this service's to keep: its job is queued or
        running here, was left running at the stop, or may be adopted (not recovered yet)."""
        return not self._recovered or job_id in self._handles or job_id in self._left

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
        waiting = [h for h in self._handles.values() if not h.started]
        for handle in waiting:
            # First, without an await, so that no worker takes one of them meanwhile.
            handle.token.cancel(CancelReason.SHUTDOWN)
        for handle in self._handles.values():
            if handle.started and self._on_stop == "cancel":
                handle.token.cancel(CancelReason.SHUTDOWN)
            elif handle.started and self._on_stop == "leave":
                handle.token.detach()
        for handle in waiting:
            await self._park(handle)
        try:
            pending = [h.done for h in self._handles.values()]
            grace = {"cancel": _SHUTDOWN_GRACE_S, "leave": _DETACH_GRACE_S}.get(self._on_stop)
            if pending:
                await asyncio.wait(pending, timeout=grace)
            for worker in self._workers:
                worker.cancel()
            for worker in self._workers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker
        finally:
            self._bus.shutdown()

    async def _leave(self, handle: _Handle, left: bool) -> None:
        """The service stops and leaves the job's build running (``left``: the job stays
        running, for the next start to adopt), or drops it before it started (the job goes
        back to the queue, with its sources)."""
        job_id = handle.job_id
        try:
            if left:
                self._left.add(job_id)
                message = (
                    "⏸️ The service is stopping: the build goes on in its "
                    "container and is picked up again when the service is back"
                )
                await self._emit(job_id, [Event(Action.WARNING, message, Level.WARNING)])
            else:
                message = "⏸️ The service is stopping; this job goes back to the queue"
                await self._emit(job_id, [Event(Action.WARNING, message, Level.WARNING)])
                await self._store.update_job(job_id, status=JobStatus.QUEUED, started_at=None)
            record = await self._store.get_job(job_id)
        except Exception as exc:
            log.exception("could not leave job %s", job_id)
            if not handle.done.done():
                handle.done.set_exception(exc)
        else:
            if not handle.done.done() and record is not None:
                handle.done.set_result(record)
        finally:
            self._bus.close(job_id)
            self._handles.pop(job_id, None)
            self._subjects.release(handle.subject, job_id)

    async def _park(self, handle: _Handle) -> None:
        """Leave a waiting job queued in the store for the next start; end its streams."""
        message = "⏸️ The service is stopping; this job stays queued and runs when it is back"
        try:
            await self._emit(handle.job_id, [Event(Action.WARNING, message, Level.WARNING)])
            record = await self._store.get_job(handle.job_id)
        except Exception as exc:
            log.exception("could not park job %s", handle.job_id)
            if not handle.done.done():
                handle.done.set_exception(exc)
        else:
            if not handle.done.done() and record is not None:
                handle.done.set_result(record)
        finally:
            self._bus.close(handle.job_id)
            self._handles.pop(handle.job_id, None)
            self._subjects.release(handle.subject, handle.job_id)

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
        handle = _Handle(job_id, job, kind, kind.subject(record), record.timeout_s)
        self._handles[job_id] = handle
        self._subjects.hold(handle.subject, job_id)
        self._bus.open(job_id)
        try:
            ahead = self._queue.qsize() + sum(h.started for h in self._handles.values())
            if ahead >= self._settings.max_concurrent_builds:
                message += f"; {self._queue.qsize()} job(s) ahead"
            await self._emit(job_id, [Event(Action.QUEUED, message)])
            if not recovering:  # shutdown may have begun while we were writing
                self._check_accepting()
        except BaseException as exc:
            result = JobResult(JobStatus.FAILED, f"not queued: {exc}")
            await asyncio.shield(self._finish(handle, result, None))
            raise
        self._queue.put_nowait(handle)
        self._metrics.queue_length.set(self._queue.qsize())

    def is_active(self, job_id: str) -> bool:
        """Whether the job is queued or running here (its containers are in use)."""
        return job_id in self._handles

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

    async def _run(self, handle: _Handle) -> None:
        job_id, noun = handle.job_id, handle.kind.noun
        started = time.time() if handle.adopted_at is None else handle.adopted_at

        async def sink(batch: Sequence[Event]) -> None:
            await self._emit(job_id, batch)

        try:
            if handle.adopted_at is None:
                await self._store.update_job(job_id, status=JobStatus.RUNNING, started_at=started)
            result = await perform(
                handle.job.work,
                sink,
                handle.token,
                noun=noun,
                timeout_s=handle.timeout_s,
                elapsed_s=time.time() - started,
            )
        except Detached as exc:
            await asyncio.shield(self._leave(handle, exc.left))
            return
        except asyncio.CancelledError:
            if handle.token.detaching:  # stopped past the grace: left as the runner left it
                await asyncio.shield(self._leave(handle, handle.token.step_started))
                raise
            result = interrupted_result(noun)
            await asyncio.shield(self._finish(handle, result, started))
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
        await asyncio.shield(self._finish(handle, result, started))

    async def _cancel_unstarted(self, handle: _Handle) -> None:
        if handle.done.done() or not handle.token.cancel(CancelReason.USER):
            return
        result = unstarted_result(handle.kind.noun)
        await self._emit(handle.job_id, [ending_event(result, handle.kind.noun)])
        await asyncio.shield(self._finish(handle, result, None))

    async def _finish(self, handle: _Handle, result: JobResult, started: float | None) -> None:
        """Write the final status; whatever fails, the stream ends and waiters are released."""
        handle.finishing = True
        try:
            record = await self._write_final(handle, result, started)
        except Exception as exc:
            log.exception("could not record the end of job %s", handle.job_id)
            self._unwritten[handle.job_id] = (handle, result, started)
            if not handle.done.done():
                handle.done.set_exception(exc)
        else:
            if not handle.done.done():
                handle.done.set_result(record)
        finally:
            self._bus.close(handle.job_id)
            self._handles.pop(handle.job_id, None)
            self._subjects.release(handle.subject, handle.job_id)
            if handle.job.cleanup_dir is not None:
                await asyncio.to_thread(shutil.rmtree, handle.job.cleanup_dir, True)
            self.uploads.release(handle.job_id)

    async def _write_final(
        self, handle: _Handle, result: JobResult, started: float | None
    ) -> JobRecord:
        finished = time.time()
        reason = handle.token.reason
        if started is not None:
            self._metrics.build_duration.labels(status=result.status.value).observe(
                finished - started
            )
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
        )
        await self._store.flush()
        return record

    async def _emit(self, job_id: str, batch: Sequence[Event]) -> None:
        # Subscribers see the events once they are committed: the bus hears from the store.
        stored = await self._store.append(job_id, batch)
        self._metrics.events.inc(len(stored))

    @property
    def queue_length(self) -> int:
        return self._queue.qsize()
