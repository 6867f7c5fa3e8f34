"""Prometheus metrics, one registry per app so tests and several apps in a process don't clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .jobs.status import JobStatus


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
            "Wall time of a build from start to its end, by how it ended",
            ["status"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, float("inf")),
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

    def render(self, counts: dict[JobStatus, int]) -> bytes:
        for status in JobStatus:
            self.jobs.labels(status=status.value).set(counts.get(status, 0))
        return generate_latest(self.registry)
