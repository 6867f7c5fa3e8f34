"""One build, start to end: the only place that sequences a build's step and narrates it.

``Runner.run`` validates, sets the build's step up with the sources in it, starts makepkg,
streams its output as events, and collects the packages. Whatever happens (success, failure,
cancel, timeout, or the task itself being cancelled) the step is destroyed before ``run``
returns. How the build ended is said by whoever runs it as a job (``jobs.perform``), which also
holds its time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, TypeVar

from ..backend import Backend, ExitStatus, Handle, OutputStream, Step
from ..errors import Detached, OrchestratorError, PkgbuildError
from ..jobs import JobResult, Sink, cancel_result
from ..jobs.cancel import CancelToken
from ..jobs.status import JobStatus
from ..metrics import Metrics
from ..narration.events import Action, Event, Level
from ..settings import MiB, Settings
from ..storage import archive
from . import cachescript, lending, srcinfo
from .caches import Caches, Lease
from .inspector import Inspector
from .srcinfo import SrcInfo
from .variants import VariantPlan, plan
from .vitals import Vitals
from .watch import StepWatch

JOB_LABEL = "orchestrator.job"
CACHE_KEY_LABEL = "orchestrator.cache_key"  # the build cache a build's step has mounted
INSTANCE_LABEL = "orchestrator.instance"
INSPECT_LABEL = "orchestrator.inspect"
BUILDER_UID = 1000  # the image's `builder` user; copied-in files must be theirs
BUILD_DIR = "/build"
PACKAGE_DIR = "/out"
MAKEPKG = ("makepkg", "--nodeps", "--noconfirm", "--noprogressbar")
# Where a build in our images can write (the disk watchdog's first guess, until it has found
# them in the image): makepkg's folders, the temporary ones, the build user's home.
WRITABLE_GUESS = (BUILD_DIR, PACKAGE_DIR, "/tmp", "/var/tmp", "/home/builder")

NOUN = "Build"  # how the endings name a build


@dataclass(frozen=True, slots=True)
class BuildRequest:
    job_id: str
    source_dir: Path
    variant: str = "cpu"
    srcinfo: SrcInfo | None = None  # makepkg's reading, when the caller already has it
    cache: bool = True  # lend the build its package's cache (when the service keeps them)
    # More environment for makepkg (a rebuild's SOURCE_DATE_EPOCH); never over the runner's own.
    env: Mapping[str, str] = field(default_factory=dict)


BuildResult = JobResult  # a build's result is a job's: its cache report is ``cache``
# What a build holds beyond its step: its cache lease (on the stack), and its cache report.
Caching = tuple[contextlib.AsyncExitStack, dict[str, Any]]
_M = TypeVar("_M")  # what a build's step, once made, is followed with


@dataclass(frozen=True, slots=True)
class _Made:
    """A new build's step as made: its image, its cache lease, the size of the sources."""

    image: str
    lease: Lease | None
    size: int


class Runner:
    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        caches: Caches | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._backend = backend
        self._settings = settings
        instance = {INSTANCE_LABEL: settings.instance_id}
        self.inspector = Inspector(backend, settings, instance, metrics)
        self._watch = StepWatch(backend, settings, noun=NOUN, writable=WRITABLE_GUESS)
        self.caches = caches
        # Where a container that could not be removed goes (the app's janitor): not left to
        # the next start-up's reaping, which may never come.
        self.unremoved: Callable[[Handle], None] | None = None

    @property
    def backend(self) -> Backend:
        return self._backend

    async def prepare(self, request: BuildRequest) -> tuple[SrcInfo, VariantPlan]:
        """Everything that can be checked before the build's container exists: the variant,
        and makepkg's reading of the PKGBUILD (unless the request brings it); raises
        ``InvalidInput`` (``PkgbuildError`` with makepkg's words)."""
        variant = plan(
            request.variant, self._settings, gpu_runtime=await self._backend.gpu_runtime()
        )
        info = request.srcinfo
        if info is None:
            labels = self.inspect_labels(request.job_id)
            info = await self.inspector.read(request.source_dir, variant.image, labels)
        if problems := srcinfo.problems(info, request.source_dir):
            raise PkgbuildError("; ".join(problems), problems=problems)
        return info, variant

    async def image_warnings(self, info: SrcInfo, image: str) -> list[str]:
        """What the PKGBUILD depends on that the image says it does not provide."""
        provides = await self.inspector.provides(image)
        missing = [] if provides is None else srcinfo.not_provided(info, provides)
        if not missing:
            return []
        return [
            f"not in the build image {image} (the build fails if it needs them): "
            + ", ".join(missing)
        ]

    def labels(self, job_id: str, lease: Lease | None = None) -> dict[str, str]:
        """A build's step's: its job, this instance, and its cache (found again on adoption)."""
        labels = {JOB_LABEL: job_id, INSTANCE_LABEL: self._settings.instance_id}
        if lease is not None:
            labels[CACHE_KEY_LABEL] = lease.key
        return labels

    def inspect_labels(self, job_id: str) -> dict[str, str]:
        """makepkg's reading of a job's PKGBUILD is not its build: it carries the job's id under
        a label of its own (start-up reaping still finds it by the instance)."""
        return {INSPECT_LABEL: job_id, INSTANCE_LABEL: self._settings.instance_id}

    def artifact_dir(self, job_id: str) -> Path:
        return self._settings.artifacts_dir / job_id

    async def run(self, request: BuildRequest, sink: Sink, cancel: CancelToken) -> BuildResult:
        async def make(caching: Caching) -> tuple[Handle, _Made] | BuildResult:
            return await self._make(request, sink, cancel, caching)

        async def follow(cid: Handle, made: _Made, caching: Caching) -> BuildResult:
            return await self._follow(request.job_id, cid, made, sink, cancel, caching[1])

        return await self.guarded(request.job_id, sink, cancel, make, follow)

    async def guarded(
        self,
        job_id: str,
        sink: Sink,
        cancel: CancelToken,
        make: Callable[[Caching], Awaitable[tuple[Handle, _M] | BuildResult]],
        follow: Callable[[Handle, _M, Caching], Awaitable[BuildResult]],
    ) -> BuildResult:
        """Make the build's step (``make``: its handle and what ``follow`` needs of it, or how
        the build ended before it had one), run it to its end (``follow``), and destroy it,
        however it ended; unless the service is leaving it running (``Detached``, or the task
        cancelled while the service stops after the step started), which goes on up."""
        container: Handle | None = None  # known as soon as the step exists, for the cleanup
        cache: dict[str, Any] = {}  # filled once the build knows whether it has a cache
        # The lease outlives the container: its volume is not released (nor pruned) while a
        # container still has it mounted.
        async with contextlib.AsyncExitStack() as leases:
            left = False
            try:
                made = await make((leases, cache))
                if isinstance(made, BuildResult):
                    result = made
                else:
                    container = made[0]
                    result = await follow(container, made[1], (leases, cache))
            except Detached as exc:
                left = exc.left
                raise
            except asyncio.CancelledError:
                left = cancel.detaching and cancel.step_started
                raise
            except OrchestratorError as exc:
                result = BuildResult(JobStatus.FAILED, str(exc))
            finally:
                if not left:
                    await _shielded(self._destroy(job_id, container, sink))
        if cache:
            result = replace(result, cache=cache)
        return result

    async def _make(
        self, request: BuildRequest, sink: Sink, cancel: CancelToken, caching: Caching
    ) -> tuple[Handle, _Made] | BuildResult:
        """Read the PKGBUILD, lend the cache, and set the step up with the sources in it."""
        if cancel.cancelled:  # not even makepkg's reading: nothing has started
            return cancel_result(cancel, NOUN)
        info, variant = await self.prepare(request)
        await sink(await self._validated(info, variant))
        if cancel.cancelled:
            return cancel_result(cancel, NOUN)
        _check_detach(cancel)
        job_id, caches = request.job_id, self.caches
        lease = await lending.lend(caches, info, variant, job_id, request.cache, sink, *caching)
        cache_env, mtimes = await lending.set_up(
            caches, lease, info, request.source_dir, self._settings.cache_max_bytes
        )
        tar = await asyncio.to_thread(
            archive.pack_dir,
            request.source_dir,
            uid=BUILDER_UID,
            gid=BUILDER_UID,
            max_bytes=self._settings.max_build_dir_bytes,
            mtimes=mtimes,
        )
        with tar:
            size = tar.seek(0, 2)
            step = self._step(job_id, variant, lease, {**request.env, **cache_env}, tar)
            cid = await self._backend.setup(step)
        return cid, _Made(step.image, lease, size)

    async def _validated(self, info: SrcInfo, variant: VariantPlan) -> list[Event]:
        """What makepkg read, and what may go wrong with it in this image."""
        names = f" ({', '.join(info.pkgnames)})" if info.pkgnames != (info.pkgbase,) else ""
        read = (
            f"makepkg read the PKGBUILD: {info.pkgbase}{names} {info.version}, "
            f"variant {variant.variant}"
        )
        warnings = [
            *info.warnings,
            *variant.warnings,
            *await self.image_warnings(info, variant.image),
        ]
        return [
            Event(Action.VALIDATED, read),
            *(Event(Action.WARNING, text, Level.WARNING) for text in warnings),
        ]

    def _step(
        self,
        job_id: str,
        variant: VariantPlan,
        lease: Lease | None,
        env: dict[str, str],
        inputs: IO[bytes],
    ) -> Step:
        return Step(
            image=variant.image,
            command=cachescript.command(MAKEPKG) if lease else MAKEPKG,
            labels=self.labels(job_id, lease),
            workdir=BUILD_DIR,
            env={**env, "PKGDEST": PACKAGE_DIR},
            inputs=inputs,
            outputs=(PACKAGE_DIR, cachescript.REPORT_DIR) if lease else (PACKAGE_DIR,),
            volumes={lease.volume: cachescript.CACHE_DIR} if lease else {},
            network=self._settings.build_network != "none",
            memory_bytes=self._settings.build_memory_bytes,
            cpus=self._settings.build_cpus,
            pids_limit=self._settings.build_pids_limit,
            log_max_bytes=self._settings.build_log_max_bytes,
            gpus=variant.gpus,
            disk_bytes=self._settings.build_disk_bytes,
        )

    async def _follow(
        self,
        job_id: str,
        cid: Handle,
        made: _Made,
        sink: Sink,
        cancel: CancelToken,
        cache: dict[str, Any],
    ) -> BuildResult:
        """Start the step that was made, narrate it to its end, and collect its packages."""
        said = f"{self._backend.sandbox} {cid[:12]} created from {made.image}"
        await sink([Event(Action.CONTAINER_CREATED, said)])
        copied = f"Copied the build directory in ({made.size} bytes)"
        await sink([Event(Action.SOURCES_COPIED, copied)])
        if cancel.cancelled:
            return cancel_result(cancel, NOUN)
        _check_detach(cancel)

        stream = await self._backend.start(cid)
        cancel.step_started = True
        if made.lease is not None:
            made.lease.started = True
        await sink([Event(Action.BUILD_STARTED, "🔨 makepkg started")])
        return await self.watch(
            job_id, cid, stream, sink, cancel, made.lease, image=made.image, cache=cache
        )

    async def conclude(
        self,
        cid: Handle,
        ended: ExitStatus | BuildResult,
        job_id: str,
        lease: Lease | None,
        cache: dict[str, Any],
        sink: Sink,
    ) -> BuildResult:
        """Say how a build that has exited ended, and collect its packages."""
        if isinstance(ended, BuildResult):  # stopped before it ended by itself
            return ended
        exit_code = ended.code
        level = Level.INFO if exit_code == 0 else Level.ERROR
        exited = f"makepkg exited with code {exit_code}"
        if ended.oom_killed:
            # makepkg's own code hides it (4 when a build step was killed, 137 when it was).
            limit = self._settings.build_memory_bytes // MiB
            exited = f"out of memory (limit {limit} MiB): {exited}"
            level = Level.ERROR
        await sink([Event(Action.BUILD_EXITED, exited, level)])
        if lease is not None:
            lease.report = await lending.report(self._backend, cid, lease)
            cache.update(lease.report.to_dict())
            summary = lease.report.summary()
            await sink([Event(Action.CACHE, summary[:1].upper() + summary[1:])])
        if exit_code != 0 or ended.oom_killed:
            return BuildResult(JobStatus.FAILED, exited, exit_code)

        # The container has exited: from here on the build has finished, and a cancel that
        # arrives now is too late to stop anything, so the packages are copied out regardless.
        packages = await self._copy_packages(cid, job_id)
        if not packages:
            return BuildResult(JobStatus.FAILED, "makepkg succeeded but made no package", 0)
        await sink(
            [
                Event(Action.ARTIFACT_STORED, f"📦 Stored {p.name} ({p.stat().st_size} bytes)")
                for p in packages
            ]
        )
        names = ", ".join(p.name for p in packages)
        return BuildResult(JobStatus.SUCCEEDED, f"built {names}", 0, tuple(packages))

    async def watch(
        self,
        job_id: str,
        cid: Handle,
        stream: OutputStream,
        sink: Sink,
        cancel: CancelToken,
        lease: Lease | None,
        *,
        image: str,
        cache: dict[str, Any],
        started_at: float | None = None,
    ) -> BuildResult:
        """The running step narrated to its end (``StepWatch.watch``), stopped, or left; then
        concluded, with what it used. ``started_at``: when its command began (Unix time), for
        a step that began before this process watched it."""
        began = time.monotonic() - (0.0 if started_at is None else time.time() - started_at)
        vitals = Vitals(started=began, silence_s=self._settings.silence_s)
        ended = await self._watch.watch(cid, stream, sink, cancel, image, lease, vitals)
        result = await self.conclude(cid, ended, job_id, lease, cache, sink)
        return replace(result, life=vitals.totals(time.monotonic()).fields() or None)

    async def _copy_packages(self, cid: str, job_id: str) -> list[Path]:
        tar = await self._backend.collect(cid, PACKAGE_DIR + "/.")
        with tar:
            return await asyncio.to_thread(
                archive.extract_packages,
                tar,
                self.artifact_dir(job_id),
                max_bytes=self._settings.max_artifact_bytes,
            )

    async def _destroy(self, job_id: str, container: Handle | None, sink: Sink) -> None:
        try:
            if container is not None:
                await self._backend.destroy(container)
                message = f"{self._backend.sandbox} {container[:12]} removed"
                await sink([Event(Action.CONTAINER_REMOVED, message)])
            else:
                # The task may have been cancelled while `setup` was in flight: find it by label.
                await self._backend.reap({JOB_LABEL: job_id})
        except OrchestratorError as exc:
            # The janitor (or else start-up reaping) removes it later; the build's own outcome
            # stands.
            if container is not None and self.unremoved is not None:
                self.unremoved(container)
            await sink(
                [Event(Action.WARNING, f"Could not remove the container: {exc}", Level.ERROR)]
            )


def _check_detach(cancel: CancelToken) -> None:
    """Before the step starts: leaving it is dropping it (the job goes back to the queue)."""
    if cancel.detaching:
        raise Detached("the service is stopping before the build started", left=False)


async def _shielded(coro: Awaitable[None]) -> None:
    """Finish ``coro`` even if our task is cancelled meanwhile; then re-raise the cancel."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
