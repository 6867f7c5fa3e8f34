"""Prometheus metrics, one registry per app so tests and several apps in a process don't clash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .jobs.status import JobStatus
from .storage.records import JobRecord

MiB = 1 << 20
_DURATION_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, float("inf"))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge(
            "orchestrator_jobs", "Jobs in the store, by status", ["status"], registry=self.registry
        )
        self.queue_length = Gauge(
            "orchestrator_queue_length", "Jobs waiting for a build slot", registry=self.registry
        )
        self.running = Gauge(
            "orchestrator_builds_running", "Builds running now", registry=self.registry
        )
        self.build_duration = Histogram(
            "orchestrator_build_duration_seconds",
            "Wall time of a build from start to its end, by variant and how it ended",
            ["variant", "status"],
            buckets=_DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "orchestrator_queue_wait_seconds",
            "Time a job waited in the queue for a build slot, by variant",
            ["variant"],
            buckets=_DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.build_peak_memory = Histogram(
            "orchestrator_build_peak_memory_bytes",
            "The most memory a build's container held (its working set, sampled), by variant",
            ["variant"],
            buckets=(*(float(64 * MiB << k) for k in range(10)), float("inf")),
            registry=self.registry,
        )
        self.build_cpu = Histogram(
            "orchestrator_build_cpu_seconds",
            "CPU time a build's container used, all its processes, by variant",
            ["variant"],
            buckets=(1, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, float("inf")),
            registry=self.registry,
        )
        # Two counters, not a ratio gauge: a ratio over any window is their rates' quotient
        # (rate(..._hits_total[1h]) / rate(..._lookups_total[1h])), as Prometheus advises.
        self.cache_lookups = Counter(
            "orchestrator_build_cache_lookups",
            "Builds that asked for a build cache and got one (warm or new)",
            ["variant"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "orchestrator_build_cache_hits",
            "Builds whose build cache was warm (an earlier build of the package filled it)",
            ["variant"],
            registry=self.registry,
        )
        self.cancels = Counter(
            "orchestrator_cancels",
            "Builds stopped before they ended, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.reading_seconds = Histogram(
            "orchestrator_pkgbuild_reading_seconds",
            "Wall time of makepkg reading a PKGBUILD in a warm reader (its answer's wait)",
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 15, 60, float("inf")),
            registry=self.registry,
        )
        self.readers_busy = Gauge(
            "orchestrator_pkgbuild_readers_busy",
            "Readers reading or being tidied now",
            registry=self.registry,
        )
        self.submits_refused = Counter(
            "orchestrator_submits_refused",
            "Submits answered with an error, by its code (bad_pkgbuild, too_large, ...)",
            ["reason"],
            registry=self.registry,
        )
        self.removals_failed = Counter(
            "orchestrator_removals_failed",
            "Containers (services) whose removal failed where it was made, handed to the janitor",
            registry=self.registry,
        )
        self.janitor_removed = Counter(
            "orchestrator_janitor_removed",
            "Containers (services) the janitor removed: a failed removal retried, or swept up",
            ["how"],
            registry=self.registry,
        )
        self.janitor_errors = Counter(
            "orchestrator_janitor_errors",
            "Removals the janitor tried that failed (it tries again later)",
            registry=self.registry,
        )
        self.events = Counter(
            "orchestrator_narration_events", "Narration events stored", registry=self.registry
        )

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
        if cache and cache.get("used"):
            self.cache_lookups.labels(variant=variant).inc()
            if cache.get("warm"):
                self.cache_hits.labels(variant=variant).inc()

    def render(self, counts: dict[JobStatus, int]) -> bytes:
        for status in JobStatus:
            self.jobs.labels(status=status.value).set(counts.get(status, 0))
        return generate_latest(self.registry)
