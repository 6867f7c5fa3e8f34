"""Prometheus metrics, one registry per app so tests and several apps in a process don't clash.

Every metric is one row of ``_TABLE`` (its attribute, kind, name, help, labels and buckets);
names follow Prometheus's conventions: base units in the name (``_seconds``, ``_bytes``), and
counters get ``_total`` from the client library. A ratio is left to the query: the cache hit
ratio over any window is ``rate(..._cache_hits_total[1h]) / rate(..._cache_lookups_total[1h])``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .build.cachescript import stored_warmth
from .jobs.status import JobStatus
from .storage.records import JobRecord

MiB = 1 << 20
_DURATION_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, float("inf"))
_MEMORY_BUCKETS_BYTES = (*(float(64 * MiB << k) for k in range(10)), float("inf"))
_CPU_BUCKETS_S = (1, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, float("inf"))
_READING_BUCKETS_S = (0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 15, 60, float("inf"))

_Row = tuple[str, type, str, str, tuple[str, ...], tuple[float, ...] | None]
_TABLE: tuple[_Row, ...] = (
    ("jobs", Gauge, "orchestrator_jobs", "Jobs in the store, by status", ("status",), None),
    ("queue_length", Gauge, "orchestrator_queue_length", "Jobs waiting for a build slot", (), None),
    ("running", Gauge, "orchestrator_builds_running", "Builds running now", (), None),
    (
        "build_duration", Histogram, "orchestrator_build_duration_seconds",
        "Wall time of a build from start to its end, by variant and how it ended",
        ("variant", "status"), _DURATION_BUCKETS_S,
    ),
    (
        "queue_wait", Histogram, "orchestrator_queue_wait_seconds",
        "Time a job waited in the queue for a build slot, by variant",
        ("variant",), _DURATION_BUCKETS_S,
    ),
    (
        "build_peak_memory", Histogram, "orchestrator_build_peak_memory_bytes",
        "The most memory a build's processes held at a sample, by variant",
        ("variant",), _MEMORY_BUCKETS_BYTES,
    ),
    (
        "build_cpu", Histogram, "orchestrator_build_cpu_seconds",
        "CPU time a build's container used, all its processes, by variant",
        ("variant",), _CPU_BUCKETS_S,
    ),
    (
        "cache_lookups", Counter, "orchestrator_build_cache_lookups",
        "Builds that got their package's build cache (warm or new), by variant",
        ("variant",), None,
    ),
    (
        "cache_hits", Counter, "orchestrator_build_cache_hits",
        "Builds whose build cache was warm (an earlier build filled it), by variant",
        ("variant",), None,
    ),
    (
        "cancels", Counter, "orchestrator_cancels",
        "Builds stopped before they ended, by reason", ("reason",), None,
    ),
    (
        "reading_seconds", Histogram, "orchestrator_pkgbuild_reading_seconds",
        "Wall time of makepkg reading a PKGBUILD in a warm reader (its answer's wait)",
        (), _READING_BUCKETS_S,
    ),
    (
        "readers_busy", Gauge, "orchestrator_pkgbuild_readers_busy",
        "Readers reading or being tidied now", (), None,
    ),
    (
        "submits_refused", Counter, "orchestrator_submits_refused",
        "Submits answered with an error, by its code (bad_pkgbuild, too_large, ...)",
        ("reason",), None,
    ),
    (
        "removals_failed", Counter, "orchestrator_removals_failed",
        "Containers (services) whose removal failed where it was made, handed to the janitor",
        (), None,
    ),
    (
        "janitor_removed", Counter, "orchestrator_janitor_removed",
        "Containers (services) the janitor removed: a failed removal retried, or swept up",
        ("how",), None,
    ),
    (
        "janitor_errors", Counter, "orchestrator_janitor_errors",
        "Removals the janitor tried that failed (it tries again later)", (), None,
    ),
    ("events", Counter, "orchestrator_narration_events", "Narration events stored", (), None),
)  # fmt: skip


class Metrics:
    jobs: Gauge
    queue_length: Gauge
    running: Gauge
    build_duration: Histogram
    queue_wait: Histogram
    build_peak_memory: Histogram
    build_cpu: Histogram
    cache_lookups: Counter
    cache_hits: Counter
    cancels: Counter
    reading_seconds: Histogram
    readers_busy: Gauge
    submits_refused: Counter
    removals_failed: Counter
    janitor_removed: Counter
    janitor_errors: Counter
    events: Counter

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for attribute, kind, name, about, labels, buckets in _TABLE:
            extra: dict[str, Any] = {} if buckets is None else {"buckets": buckets}
            metric = kind(name, about, labels, registry=self.registry, **extra)
            setattr(self, attribute, metric)

    def job_ended(self, record: JobRecord, cache: Mapping[str, Any] | None) -> None:
        """A job's final figures: its duration, and a build's life and cache."""
        variant = record.variant or ""
        if record.started_at is not None and record.finished_at is not None:
            self.build_duration.labels(variant=variant, status=record.status.value).observe(
                max(0.0, record.finished_at - record.started_at)
            )
        if record.peak_memory_bytes is not None:
            self.build_peak_memory.labels(variant=variant).observe(record.peak_memory_bytes)
        if record.cpu_seconds is not None:
            self.build_cpu.labels(variant=variant).observe(record.cpu_seconds)
        warm = stored_warmth(cache)
        if warm is not None:
            self.cache_lookups.labels(variant=variant).inc()
            if warm:
                self.cache_hits.labels(variant=variant).inc()

    def render(self, counts: dict[JobStatus, int]) -> bytes:
        for status in JobStatus:
            self.jobs.labels(status=status.value).set(counts.get(status, 0))
        return generate_latest(self.registry)
