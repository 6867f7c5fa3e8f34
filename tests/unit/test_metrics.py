"""/metrics: one table of metrics named as Prometheus advises, and a job's end observed in
them: duration by variant and status, a build's peak memory and CPU time, cache lookups."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.jobs.status import JobStatus
from orchestrator.metrics import Metrics
from orchestrator.storage.records import JobRecord


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render({}).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_jobs_end_is_observed_by_variant() -> None:
    metrics = Metrics()
    warm = {"used": True, "warm": True}
    record = JobRecord(
        "j", "build", JobStatus.SUCCEEDED, "cuda", "hello",
        started_at=100.0, finished_at=160.0, peak_memory_bytes=300 << 20, cpu_seconds=42.0,
    )  # fmt: skip
    metrics.job_ended(record, warm)
    metrics.job_ended(JobRecord("k", "build", JobStatus.FAILED, "cuda"), {"used": True})
    seen = samples(metrics)
    cuda = (("variant", "cuda"),)
    assert seen[("orchestrator_build_duration_seconds_count", (("status", "succeeded"), *cuda))]
    assert seen[("orchestrator_build_duration_seconds_sum", (("status", "succeeded"), *cuda))] == 60
    assert seen[("orchestrator_build_peak_memory_bytes_sum", cuda)] == 300 << 20
    assert seen[("orchestrator_build_cpu_seconds_sum", cuda)] == 42
    assert seen[("orchestrator_build_cache_lookups_total", cuda)] == 2
    assert seen[("orchestrator_build_cache_hits_total", cuda)] == 1
    # A job that never started is not a duration.
    assert ("orchestrator_build_duration_seconds_count", (("status", "failed"), *cuda)) not in seen


def test_every_metric_is_named_with_its_prefix_and_unit() -> None:
    text = Metrics().render({}).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert all(name.startswith("orchestrator_") for name in names), names
    assert {
        "orchestrator_queue_wait_seconds",
        "orchestrator_build_peak_memory_bytes",
        "orchestrator_build_cpu_seconds",
        "orchestrator_build_cache_hits",
        "orchestrator_build_cache_lookups",
    } <= names
