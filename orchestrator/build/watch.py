"""A build's running step, watched to its end: its output narrated as events (paced), its
disk use watched, and a cancel, an overrun or the service leaving it carried out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..backend import Backend, ExitStatus, Handle, OutputStream
from ..errors import Detached
from ..jobs import JobResult, Sink, cancel_result
from ..jobs.cancel import CancelToken
from ..jobs.status import JobStatus
from ..narration.events import Action, Event, output_events
from ..settings import MiB, Settings
from ..timeouts import OUTPUT_PACE_S
from . import cachescript
from .caches import Lease
from .life import sample_while_running
from .vitals import Vitals
from .watchdog import DiskWatch, Overrun


class StepWatch:
    def __init__(
        self, backend: Backend, settings: Settings, *, noun: str, writable: tuple[str, ...]
    ) -> None:
        """``noun``: how the endings name the build; ``writable``: where a build can write,
        the disk watchdog's first guess."""
        self._backend = backend
        self._settings = settings
        self._noun = noun
        self._writable = writable
        self._disk = DiskWatch(backend, settings)

    async def watch(
        self,
        cid: Handle,
        stream: OutputStream,
        sink: Sink,
        cancel: CancelToken,
        image: str,
        lease: Lease | None,
        vitals: Vitals,
    ) -> ExitStatus | JobResult:
        """Narrate the running step's output to its end and say how it ended; or stop it
        (cancelled, or over its disk limit) and say why; or leave it running (``Detached``).
        Meanwhile its life is sampled into ``vitals``."""
        build: asyncio.Future[ExitStatus] | None = None
        waits: list[asyncio.Future[Any]] = []
        interval_s = self._settings.sample_interval_s
        life = asyncio.ensure_future(
            sample_while_running(self._backend, cid, vitals, sink, interval_s)
        )
        try:
            build = asyncio.ensure_future(self._pump_and_wait(cid, stream, sink, vitals))
            stop = asyncio.ensure_future(cancel.wait())
            detach = asyncio.ensure_future(cancel.wait_detach())
            waits = [stop, detach]
            if lease is not None or not self._backend.enforces_disk_limit:
                cache = cachescript.CACHE_DIR if lease else None
                watch = self._disk.watch(cid, image, self._writable, cache, vitals.saw_disk)
                waits.append(asyncio.ensure_future(watch))
            await asyncio.wait({build, *waits}, return_when=asyncio.FIRST_COMPLETED)
            if build.done():
                return build.result()
            if detach.done() and not stop.done():
                if lease is not None:
                    lease.started = False  # the service that picks it up counts it
                raise Detached("the service is stopping and leaves the build running", left=True)
            if stop.done():
                # Cancel won: say so, kill (which ends the output stream), then drop the pump.
                await sink([Event(Action.CANCELLING, f"Stopping the build ({cancel.reason})")])
                result = cancel_result(cancel, self._noun)
            else:
                result = JobResult(JobStatus.FAILED, self._overrun_reason(waits[2].result()))
                await sink([Event(Action.CANCELLING, f"Stopping the build: {result.reason}")])
            await self._backend.kill(cid, self._settings.kill_grace_s)
            return result
        finally:
            life.cancel()
            for wait in waits:
                wait.cancel()
            if build is not None and not build.done():
                build.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await build
            await stream.aclose()

    def _overrun_reason(self, overrun: Overrun) -> str:
        # Rounded up: "more than 512 MiB (512 MiB...)" would read as a contradiction.
        used, limit = -(-overrun.used // MiB), self._settings.build_disk_bytes // MiB
        return (
            f"the build wrote more than {limit} MiB to its container's disk and cache "
            f"({used} MiB, most of it in {overrun.where}; the limit is "
            "ORCHESTRATOR_BUILD_DISK_BYTES)"
        )

    async def _pump_and_wait(
        self, cid: str, stream: OutputStream, sink: Sink, vitals: Vitals
    ) -> ExitStatus:
        async for batch in stream:
            events = output_events(batch)
            vitals.saw(events, time.monotonic())
            await sink(events)
            # Pacing: a line after a quiet spell goes at once, but a flood goes out at most
            # once per pause, in big events. Each event costs the same to store and send
            # whatever it holds, so small ones made most of the CPU a flood cost.
            await asyncio.sleep(OUTPUT_PACE_S)
        return await self._backend.wait(cid)
