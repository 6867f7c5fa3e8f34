"""The sampling beside a running build: every ``sample_interval_s`` the engine's figures become
a ``sample`` event, a silence is explained, and a build near its memory limit is warned of.

It runs as a task beside the output pump and is cancelled with it, never awaited: a look the
engine cannot answer is skipped, and a fault of ours ends the sampling with a logged error,
never the build (nobody would see the task's exception otherwise).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..backend import Backend, Handle
from ..errors import OrchestratorError
from ..jobs import Sink
from ..narration.events import Action, Event, Level
from .vitals import Sample, Vitals, size

log = logging.getLogger(__name__)


async def sample_while_running(
    backend: Backend, handle: Handle, vitals: Vitals, sink: Sink, interval_s: float
) -> None:
    """Look at the build every ``interval_s`` until cancelled; say what each look means."""
    if not backend.supports_usage:
        return
    try:
        while True:
            await asyncio.sleep(interval_s)
            await _look(backend, handle, vitals, sink)
    except Exception:
        log.exception("sampling build %s stopped", handle)


async def _look(backend: Backend, handle: Handle, vitals: Vitals, sink: Sink) -> None:
    try:
        usage = await backend.usage(handle)
    except OrchestratorError:
        usage = None
    now = time.monotonic()
    events: list[Event] = []
    if usage is not None:
        sample = vitals.sample(usage, now, vitals.disk_bytes)
        events.append(sample_event(sample))
        warning = vitals.memory_warning()
        if warning is not None:
            events.append(Event(Action.WARNING, warning, Level.WARNING))
    if vitals.silent(now):
        running = await _busiest(backend, handle)
        said = vitals.silence(now, running)
        if said is not None:
            events.append(Event(Action.SILENCE, said))
    if events:
        await sink(events)


def sample_event(sample: Sample) -> Event:
    summary = f"CPU {sample.cpu_percent:.0f}%, {size(sample.memory_bytes)}, {sample.pids} pids"
    return Event(
        Action.SAMPLE,
        summary,
        elapsed_s=round(sample.elapsed_s, 3),
        cpu_seconds=round(sample.cpu_seconds, 3),
        cpu_percent=round(sample.cpu_percent, 1),
        memory_bytes=sample.memory_bytes,
        peak_memory_bytes=sample.peak_memory_bytes,
        memory_limit_bytes=sample.memory_limit_bytes,
        pids=sample.pids,
        disk_bytes=sample.disk_bytes,
        net_rx_bytes=sample.net_rx_bytes,
        net_tx_bytes=sample.net_tx_bytes,
    )


async def _busiest(backend: Backend, handle: Handle) -> tuple[str, ...]:
    try:
        return await backend.busiest(handle)
    except OrchestratorError:
        return ()
