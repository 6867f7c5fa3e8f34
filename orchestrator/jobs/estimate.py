"""How long a job is expected to take, from the package's own history (as Jenkins estimates a
build from its earlier ones), and how far along a running job is."""

from __future__ import annotations

from collections.abc import Sequence

from ..build.vitals import duration
from ..narration.events import Action, Event
from ..storage.records import JobRecord
from ..storage.store import Store
from .result import Sink
from .status import JobStatus

# A running job never shows done: past its estimate it is late, not finished.
MOST_PROGRESS = 0.99
History = Sequence[tuple[float, bool | None]]  # (wall time s, cache warm; None: no cache)


def expected_warm(history: History, cache_asked: bool) -> bool | None:
    """Whether this run's cache will be warm: a cache kept by the newest success that had one.
    None when it asked for no cache."""
    if not cache_asked:
        return None
    return any(warm is not None for _, warm in history)


def expected_s(history: History, warm: bool | None) -> float | None:
    """The newest successful run's wall time whose cache was as warm as this one's will be;
    without one, the newest of any (a cold build expected from a warm one is too hopeful, but
    a guess beats none)."""
    for took, was_warm in history:
        if was_warm == warm:
            return took
    return history[0][0] if history else None


def progress(record: JobRecord, now: float) -> float | None:
    """A running job's elapsed time over its estimate, at most ``MOST_PROGRESS``."""
    if record.status is not JobStatus.RUNNING or not record.estimate_s:
        return None
    if record.started_at is None:
        return None
    return round(min(MOST_PROGRESS, max(0.0, now - record.started_at) / record.estimate_s), 3)


async def announce(store: Store, record: JobRecord, sink: Sink) -> None:
    """At a job's start: its estimate, kept with its record and said in its narration (where a
    client following the stream reads it)."""
    if record.pkgname is None:
        return
    history = await store.past_durations(record.operation, record.pkgname, record.variant)
    warm = expected_warm(history, cache_asked=record.cache_asked)
    estimate = expected_s(history, warm)
    if estimate is None:
        return
    await store.update_job(record.id, estimate_s=estimate)
    cache = {True: " with a warm cache", False: " with a new cache", None: ""}[warm]
    said = f"Expected to take about {duration(estimate)}{cache}, from its earlier builds"
    await sink([Event(Action.ESTIMATE, said, estimate_s=round(estimate, 3))])
