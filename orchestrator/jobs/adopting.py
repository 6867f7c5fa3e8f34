"""A build an earlier process of this service started, picked up again by the next one.

The build's step is the unit of work, not the process: a stopping service leaves it running
(``Detached``), and the next one finds it again by its labels (``find``), reads back what it
printed meanwhile (``Backend.reattach``, skipping what the store already holds, so every line is
stored once), then watches and finishes it as ``Runner.run`` would have: the same cancel, disk
watch, exit, cache report, packages and removal. A step that ended meanwhile is finished as if
it had been watched; one that is gone is the registry's to end (``StepGone``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from ..backend import Backend, FoundStep, Handle, Lossy, OutputChunk, OutputStream, Stream
from ..backend.lines import note_ends
from ..build.caches import Lease
from ..build.runner import CACHE_KEY_LABEL, BuildResult, Caching, Runner
from ..errors import BackendError, OrchestratorError, StepGone, StepNotStarted
from ..narration.events import Action, Event, Level, output_events
from ..storage.archive import is_package_name
from ..timeouts import ADOPTED_EXIT_POLL_S
from . import Sink, Work
from .cancel import CancelToken
from .status import JobStatus

_STREAMS: tuple[Stream, ...] = ("stdout", "stderr")


@dataclass(frozen=True, slots=True)
class Adoption:
    """A build to pick up again: its step as found, the lines of each of its streams the
    store already holds (``Store.output_lines``) and the first and last of them
    (``Store.output_ends``: they tell a log rotated meanwhile apart)."""

    job_id: str
    step: FoundStep
    stored: Mapping[str, int]
    ends: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def adopted_job(runner: Runner, adoption: Adoption) -> Work:
    """The work of a job that goes on with ``adoption``'s build."""

    async def work(sink: Sink, token: CancelToken) -> BuildResult:
        return await adopt(runner, adoption, sink, token)

    return work


async def find(runner: Runner, job_id: str) -> FoundStep:
    """The job's build step of this instance; ``StepGone`` when there is none any more, and
    ``StepNotStarted`` (once it is removed) when it never started: a process killed while it
    copied the inputs in leaves them half there."""
    backend = runner.backend
    if not backend.supports_adopt:
        raise OrchestratorError(f"the {backend.name} engine cannot pick a build up again")
    found = await backend.find(runner.labels(job_id))
    if not found:
        raise StepGone(
            f"its {backend.sandbox.lower()} is gone (the engine restarted, a node was lost, "
            "or it was removed by hand) while the service was not running"
        )
    if found[0].state == "created":
        await backend.destroy(found[0].handle)
        raise StepNotStarted("its build had been set up but not started")
    return found[0]


async def adopt(runner: Runner, adoption: Adoption, sink: Sink, cancel: CancelToken) -> BuildResult:
    """Watch the found build to its end and finish it; its step is removed at the end."""

    async def make(caching: Caching) -> tuple[Handle, None]:
        cancel.step_started = True  # found running (or exited): it started long ago
        return adoption.step.handle, None

    async def follow(handle: Handle, _: None, caching: Caching) -> BuildResult:
        return await _adopted(runner, adoption, sink, cancel, caching)

    return await runner.guarded(adoption.job_id, sink, cancel, make, follow)


async def _adopted(
    runner: Runner, adoption: Adoption, sink: Sink, cancel: CancelToken, caching: Caching
) -> BuildResult:
    step = adoption.step
    handle = step.handle
    stored = {s: adoption.stored.get(s, 0) for s in _STREAMS}
    ends = {s: adoption.ends[s] for s in _STREAMS if s in adoption.ends}
    lease = await _lease(runner, step, adoption.job_id, sink, caching)
    stream = await _reattach(runner, step, stored, ends, sink)
    return await runner.watch(
        adoption.job_id,
        handle,
        stream,
        sink,
        cancel,
        lease,
        image=step.image,
        cache=caching[1],
        started_at=step.started_at,
    )


async def _reattach(
    runner: Runner,
    step: FoundStep,
    stored: Mapping[Stream, int],
    ends: dict[Stream, tuple[str, str]],
    sink: Sink,
) -> OutputStream:
    """Store what the step printed meanwhile, say so, and follow the rest of its output.
    ``ends`` (the store's first and last line of each stream) becomes what is had after the
    read back."""
    backend = runner.backend
    where = "it had ended meanwhile" if step.state == "exited" else "it is still running"
    try:
        read, lost = await _read_back(backend, step.handle, stored, ends, sink)
    except BackendError as exc:
        # Its output cannot be placed (the engine cut its log): the build itself goes on.
        message = f"🔁 Service restarted: build adopted ({where}), its output lost: {exc}"
        await sink([Event(Action.ADOPTED, message, Level.WARNING)])
        return _Silent(backend, step)
    message = f"🔁 Service restarted: build adopted, {_count(sum(read.values()))} read back"
    if lost:
        message += (
            f"; its log had been rotated while no service ran, past the last line stored: "
            f"the lines of {' and '.join(sorted(lost))} printed in between were lost"
        )
    level = Level.WARNING if lost else Level.INFO
    await sink([Event(Action.ADOPTED, f"{message} ({where})", level)])
    skip = {s: stored[s] + read[s] for s in _STREAMS}
    return await backend.reattach(step.handle, skip, follow=True, ends=ends)


class _Silent:
    """An output stream with no lines that ends when the step exits."""

    def __init__(self, backend: Backend, step: FoundStep) -> None:
        self._backend = backend
        self._step = step

    async def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        while True:
            found = await self._backend.find(self._step.labels)
            if all(s.handle != self._step.handle or s.state == "exited" for s in found):
                return
            await asyncio.sleep(ADOPTED_EXIT_POLL_S)
        yield []  # makes this an async generator; never reached

    async def aclose(self) -> None:
        return None


async def _read_back(
    backend: Backend,
    handle: Handle,
    stored: Mapping[Stream, int],
    ends: dict[Stream, tuple[str, str]],
    sink: Sink,
) -> tuple[dict[Stream, int], frozenset[Stream]]:
    """Store what the step printed while no service watched: how many lines of each stream,
    and the streams whose lines were lost. ``ends`` is brought up to what was read."""
    read = dict.fromkeys(_STREAMS, 0)
    stream = await backend.reattach(handle, stored, follow=False, ends=dict(ends))
    try:
        async for batch in stream:
            for chunk in batch:
                read[chunk.stream] += chunk.text.count("\n") + 1
            note_ends(ends, batch)
            await sink(output_events(batch))
    finally:
        await stream.aclose()
    return read, stream.lost if isinstance(stream, Lossy) else frozenset()


async def _lease(
    runner: Runner, step: FoundStep, job_id: str, sink: Sink, caching: Caching
) -> Lease | None:
    """The cache the step has mounted, held again until the build ends (so it is neither
    lent to another build nor pruned meanwhile)."""
    key, caches = step.labels.get(CACHE_KEY_LABEL), runner.caches
    if key is None or caches is None or not caches.enabled:
        return None
    leases, record = caching
    pkgbase, _, variant = key.partition(":")
    try:
        lease = await leases.enter_async_context(caches.lease(pkgbase, variant, job_id, step.image))
    except OrchestratorError as exc:
        await sink([Event(Action.CACHE, f"Its cache is not held: {exc}", Level.WARNING)])
        return None
    lease.started = True  # counted once, here: the process that started it did not
    record.update(key=lease.key, used=True, warm=lease.warm)
    return lease


def _count(lines: int) -> str:
    text = f"{lines:,}".replace(",", " ")
    return f"{text} line" if lines == 1 else f"{text} lines"


def stored_packages(runner: Runner, job_id: str) -> Work:
    """The work of a job whose build ended and whose packages were stored, but whose step was
    removed before its end was written (the service died while removing it): it ends with
    those packages. ``OrchestratorError`` when there are none."""
    folder = runner.artifact_dir(job_id)
    found = folder.iterdir() if folder.is_dir() else iter(())
    packages = tuple(sorted(p for p in found if is_package_name(p.name) and p.is_file()))
    if not packages:
        raise OrchestratorError(f"no package of it is in {folder}")

    async def work(sink: Sink, cancel: CancelToken) -> BuildResult:
        said = (
            "🔁 Service restarted: the build had ended and its packages were stored; its "
            "container was removed while no service ran"
        )
        await sink([Event(Action.ADOPTED, said)])
        names = ", ".join(p.name for p in packages)
        return BuildResult(JobStatus.SUCCEEDED, f"built {names}", 0, packages)

    return work
