"""The service's stop, for the jobs unfinished here: running builds are left running for the
next start (``leave``), stopped (``cancel``) or waited for (``drain``); jobs still waiting stay
queued in the store, with their sources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from ..narration.events import Action, Event, Level
from ..storage.store import JobRecord, Store
from ..timeouts import DETACH_GRACE_S, SHUTDOWN_GRACE_S
from .cancel import CancelReason
from .handles import Handle, Handles
from .status import JobStatus

log = logging.getLogger(__name__)

Emit = Callable[[str, Sequence[Event]], Awaitable[None]]
# What a job set aside at the stop becomes: its build left running (the job stays running, for
# the next start to adopt), dropped before it started (back to the queue), or still waiting.
Aside = Literal["left", "requeued", "parked"]

_SAID: dict[Aside, str] = {
    "left": (
        "⏸️ The service is stopping: the build goes on in its "
        "container and is picked up again when the service is back"
    ),
    "requeued": "⏸️ The service is stopping; this job goes back to the queue",
    "parked": "⏸️ The service is stopping; this job stays queued and runs when it is back",
}
_VERB: dict[Aside, str] = {"left": "leave", "requeued": "leave", "parked": "park"}


async def stop(
    handles: Handles,
    on_stop: str,
    workers: Sequence[asyncio.Task[None]],
    set_aside: Callable[[Handle, Aside], Awaitable[None]],
) -> None:
    """Tell every unfinished job the service stops, park the waiting ones, give the running
    ones their grace, then end the workers."""
    waiting = [h for h in handles if not h.started]
    for handle in waiting:
        # First, without an await, so that no worker takes one of them meanwhile.
        handle.token.cancel(CancelReason.SHUTDOWN)
    for handle in handles:
        if handle.started and on_stop == "cancel":
            handle.token.cancel(CancelReason.SHUTDOWN)
        elif handle.started and on_stop == "leave":
            handle.token.detach()
    for handle in waiting:
        await set_aside(handle, "parked")
    pending = [h.done for h in handles]
    grace = {"cancel": SHUTDOWN_GRACE_S, "leave": DETACH_GRACE_S}.get(on_stop)
    if pending:
        await asyncio.wait(pending, timeout=grace)
    for worker in workers:
        worker.cancel()
    for worker in workers:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker


async def set_aside(
    handle: Handle, how: Aside, *, handles: Handles, store: Store, emit: Emit
) -> None:
    """Say what becomes of the job as the service stops, and settle its handle with the job
    as the store has it (unfinished: the next start goes on with it)."""
    job_id = handle.job_id
    outcome: JobRecord | BaseException | None = None
    try:
        await emit(job_id, [Event(Action.WARNING, _SAID[how], Level.WARNING)])
        if how == "requeued":
            await store.update_job(job_id, status=JobStatus.QUEUED, started_at=None)
        outcome = await store.get_job(job_id)
    except Exception as exc:
        log.exception("could not %s job %s", _VERB[how], job_id)
        outcome = exc
    finally:
        handles.settle(handle, outcome)
