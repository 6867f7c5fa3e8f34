"""A build submitted straight to a registry (no HTTP in between), and the wait for its record."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

from orchestrator import JobStatus, Settings
from orchestrator.backend.fake import printsrcinfo
from orchestrator.build.srcinfo import parse
from orchestrator.jobs import Submission
from orchestrator.jobs.registry import Registry
from orchestrator.storage.store import JobRecord

from .. import waiting


async def submit(registry: Registry, settings: Settings, build_dir: Callable[..., Path]) -> str:
    """``hello-c`` as an upload the registry has taken: its job's id."""
    job_id = registry.new_job_id()
    src = settings.work_dir / job_id
    src.parent.mkdir(parents=True, exist_ok=True)
    build_dir("hello-c").rename(src)
    info = parse(printsrcinfo((src / "PKGBUILD").read_text()).steps[0][1])
    body = {"variant": "cpu", "timeout_s": "60"}
    await registry.submit("build", Submission(job_id, body, body, upload=src, srcinfo=info))
    return job_id


async def job_until(
    registry: Registry,
    job_id: str,
    done: Callable[[JobRecord], bool] | Collection[JobStatus],
    timeout_s: float = 10,
) -> JobRecord:
    """The job's record once ``done`` says yes of it (or its status is one of ``done``)."""
    check = done if callable(done) else lambda record: record.status in done
    return await waiting.until(
        lambda: registry.get(job_id), check, timeout_s=timeout_s, what=f"job {job_id}"
    )
