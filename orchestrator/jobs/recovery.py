"""After a restart: what an earlier process left running goes on where its build still exists
(``adopt``) and is interrupted otherwise; what it left queued runs again (through its kind's
``resume``), in its order and before any new job (adopted builds first)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from ..build.reproduce import INPUTS_NAME
from ..errors import OrchestratorError
from ..narration.events import Action, Event, Level
from ..storage.store import JobRecord, Store
from . import Job, Kind
from .cancel import CancelReason
from .status import JobStatus

Enqueue = Callable[[JobRecord, Kind, Job], Awaitable[None]]
# Goes on with a running job's build: None once it does, otherwise why it cannot.
Adopt = Callable[[JobRecord, Kind], Awaitable[str | None]]


async def recover(
    store: Store, kinds: Mapping[str, Kind], enqueue: Enqueue, adopt: Adopt
) -> list[str]:
    """Adopt or queue again what can go on; interrupt the rest. Returns the interrupted ids."""
    leftovers = await store.jobs_with_status([JobStatus.QUEUED, JobStatus.RUNNING])
    # Running first: adopted builds take the first slots, as they had them before.
    leftovers.sort(key=lambda record: record.status is not JobStatus.RUNNING)
    interrupted: list[str] = []
    for record in leftovers:
        kind = kinds.get(record.operation)
        if record.status is JobStatus.RUNNING:
            if kind is None:
                reason = "the service stopped while this job was running"
            elif (why := await adopt(record, kind)) is None:
                continue
            else:
                reason = why
        elif kind is None:
            reason = f"jobs of kind {record.operation!r} cannot be queued again"
        else:
            try:
                job = await kind.resume(record)
            except (OrchestratorError, OSError) as exc:
                reason = f"it could not be queued again after a restart: {exc}"
            else:
                await enqueue(record, kind, job)
                continue
        interrupted.append(record.id)
        await store.append(
            record.id, [Event(Action.INTERRUPTED, f"⚠️ Job interrupted: {reason}", Level.ERROR)]
        )
        await store.update_job(
            record.id,
            status=JobStatus.INTERRUPTED,
            finished_at=time.time(),
            reason=reason,
            cancel_reason=record.cancel_reason or CancelReason.SHUTDOWN.value,
        )
    return interrupted


def remove_all_but(folder: Path, keep: set[str]) -> None:
    """Sources of jobs that will never run again (and of uploads cut off half-way)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name not in keep:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


# What an upload keeps before its job is stored (``build.reproduce.keep_inputs``).
_KEPT_INPUTS = frozenset({INPUTS_NAME, f".new-{INPUTS_NAME}"})


async def remove_unowned_inputs(store: Store, folder: Path) -> list[str]:
    """Kept inputs of uploads killed before their job was stored (no job will ever own them,
    nor remove them with its packages): a job's folder holding only those, with no record.
    Returns the ids of the folders removed."""
    candidates = await asyncio.to_thread(_inputs_only, folder)
    removed = []
    for job_id in candidates:
        if await store.get_job(job_id) is None:
            await asyncio.to_thread(shutil.rmtree, folder / job_id, True)
            removed.append(job_id)
    return removed


def _inputs_only(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            names = {child.name for child in entry.iterdir()}
            if names and names <= _KEPT_INPUTS:
                found.append(entry.name)
    return found
