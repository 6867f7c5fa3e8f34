"""Prometheus metrics, one registry per app so tests and several apps in a process don't clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .status import JobStatus


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
        self.events = Counter(
            "orchestrator_narration_events", "Narration events stored", registry=self.registry
        )

    def render(self, counts: dict[JobStatus, int]) -> bytes:
        for status in JobStatus:
            self.jobs.labels(status=status.value).set(counts.get(status, 0))
        return generate_latest(self.registry)
