"""The background removal of what a job or a reading could not remove itself.

A removal can fail for good where it is made (the daemon answers 500 under load, or does not
answer within ``docker_timeout_s``) and the job must still end; its step is then handed to the
``Janitor`` (``adopt``), which tries again in the background. It also sweeps: every
``interval_s`` it lists the steps carrying the service's labels and removes each one that no
live job or reading claims (``is_live``, asked with the step's labels) and that has gone
unclaimed for ``grace_s``; the grace covers a step that exists a moment before its owner is
known (a reading for a job that is not queued yet, a cache helper). Closing it (the service
stopping) tries once more for whatever it still holds and sweeps with no grace, after the jobs
have stopped.

``is_live`` is how owners plug in, asked with each step's handle and labels: the registry for
builds (``orchestrator.job``) and their readings (``orchestrator.inspect``), the reader pool for
its readers (``orchestrator.reader``); ``any_live`` joins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping

from ..backend import Backend, Handle
from ..build.readers import READER_LABEL
from ..build.runner import INSPECT_LABEL, JOB_LABEL
from ..errors import ContainerGone, OrchestratorError
from ..metrics import Metrics
from ..timeouts import JANITOR_CLOSE_TIMEOUT_S, JANITOR_RETRY_S

# Asked of each step the sweep finds, with its handle and its labels.
IsLive = Callable[[Handle, Mapping[str, str]], bool]

log = logging.getLogger(__name__)


def any_live(*checks: IsLive) -> IsLive:
    """A step is live while any of its possible owners says so."""
    return lambda handle, labels: any(check(handle, labels) for check in checks)


def owned_by_jobs(is_active: Callable[[str], bool]) -> IsLive:
    """Live while its job is queued or running: a build, and makepkg's reading for a job.
    Steps with no job (the catalog's readings, cache helpers) are never live here: the grace
    covers the moment they are in use."""

    def is_live(handle: Handle, labels: Mapping[str, str]) -> bool:
        job = labels.get(JOB_LABEL) or labels.get(INSPECT_LABEL)
        return job is not None and is_active(job)

    return is_live


def owned_by_readers(live: Collection[Handle]) -> IsLive:
    """A warm PKGBUILD reader (``orchestrator.reader``) is live while its pool holds it:
    ``live`` is the pool's set of the readers it holds, idle or reading (a live view)."""

    def is_live(handle: Handle, labels: Mapping[str, str]) -> bool:
        return READER_LABEL in labels and handle in live

    return is_live


class Janitor:
    def __init__(
        self,
        backend: Backend,
        labels: Mapping[str, str],
        is_live: IsLive,
        *,
        interval_s: float = 60.0,
        grace_s: float = 300.0,
        retry_s: float = JANITOR_RETRY_S,
        close_timeout_s: float = JANITOR_CLOSE_TIMEOUT_S,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._labels = dict(labels)
        self._is_live = is_live
        self._interval_s = interval_s
        self._grace_s = grace_s
        # How soon an adopted step is tried again (then less and less often, up to interval_s).
        self._retry_s = retry_s
        # A daemon that is gone must not hold the service's stop for a removal per step.
        self._close_timeout_s = close_timeout_s
        self._metrics = metrics
        self._clock = clock
        self._held: dict[Handle, tuple[float, float]] = {}  # handle → (next try, its delay)
        self._unclaimed: dict[Handle, float] = {}  # seen by a sweep, owned by none: since when
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> frozenset[Handle]:
        """The adopted steps not removed yet."""
        return frozenset(self._held)

    def adopt(self, handle: Handle) -> None:
        """Take over the removal of ``handle``, which its owner could not remove."""
        if handle not in self._held:
            self._held[handle] = (self._clock() + self._retry_s, self._retry_s)
            if self._metrics is not None:
                self._metrics.removals_failed.inc()
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="janitor")

    async def close(self) -> None:
        """Stop the background work; remove what is still held and whatever no one owns."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await self.retry(everything=True)
                await self.sweep(grace_s=0.0)
        except TimeoutError:
            log.warning("stopped with steps left to remove: %s", sorted(self._held))

    async def retry(self, *, everything: bool = False) -> None:
        """Try again to remove the adopted steps that are due (or all of them)."""
        now = self._clock()
        due = [h for h, (at, _) in self._held.items() if everything or at <= now]
        for handle in due:
            if await self._remove(handle, "retry"):
                self._held.pop(handle, None)
            else:
                delay = min(self._held[handle][1] * 2, self._interval_s)
                self._held[handle] = (self._clock() + delay, delay)

    async def sweep(self, *, grace_s: float | None = None) -> list[Handle]:
        """Remove the service's steps that no one has claimed for ``grace_s``; return them."""
        grace = self._grace_s if grace_s is None else grace_s
        try:
            found = await self._backend.list_steps(self._labels)
        except OrchestratorError as exc:
            log.warning("could not list the steps to sweep: %s", exc)
            return []
        now = self._clock()
        # Only what is still unclaimed keeps its time: a step claimed again starts over.
        self._unclaimed = {
            h: self._unclaimed.get(h, now)
            for h, labels in found.items()
            if not self._is_live(h, labels)
        }
        removed: list[Handle] = []
        for handle, since in list(self._unclaimed.items()):
            if now - since >= grace and await self._remove(handle, "sweep"):
                removed.append(handle)
                self._held.pop(handle, None)
                self._unclaimed.pop(handle, None)
        return removed

    async def _remove(self, handle: Handle, how: str) -> bool:
        try:
            await self._backend.destroy(handle)
        except ContainerGone:
            pass  # gone already is what was wanted
        except OrchestratorError as exc:
            log.warning("could not remove %s yet (%s): %s", handle[:12], how, exc)
            if self._metrics is not None:
                self._metrics.janitor_errors.inc()
            return False
        if self._metrics is not None:
            self._metrics.janitor_removed.labels(how=how).inc()
        return True

    async def _loop(self) -> None:
        next_sweep = self._clock() + self._interval_s
        while True:
            soonest = min((at for at, _ in self._held.values()), default=next_sweep)
            wait_s = max(0.0, min(soonest, next_sweep) - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)
            self._wake.clear()
            # Nothing here may end the loop: a janitor that stops leaves everything behind.
            try:
                await self.retry()
                if self._clock() >= next_sweep:
                    await self.sweep()
                    next_sweep = self._clock() + self._interval_s
            except Exception:
                log.exception("the janitor's round failed; trying again later")
