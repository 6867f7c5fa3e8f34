"""Publishing after a job: a failure fails the job, says so and keeps its packages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import RepoError
from orchestrator.jobs import JobResult
from orchestrator.jobs.cancel import CancelToken
from orchestrator.jobs.status import JobStatus
from orchestrator.narration.events import Action, Event
from orchestrator.repo import Repositories
from orchestrator.repo.publishing import then_publish

PACKAGE = Path("/out/hello-c-1.0.0-1-x86_64.pkg.tar.gz")
BUILT = JobResult(JobStatus.SUCCEEDED, "built hello-c", 0, (PACKAGE,), life={"cpu_seconds": 1.0})


class Repos:
    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.asked: list[tuple[str, Sequence[Path]]] = []

    async def publish(self, variant: str, packages: Sequence[Path]) -> list[str]:
        self.asked.append((variant, packages))
        if self.fails:
            raise RepoError("repo-add failed (exit 1): No space left on device")
        return [p.name for p in packages]


async def _run(result: JobResult, repos: Repos) -> tuple[JobResult, list[Event]]:
    said: list[Event] = []

    async def sink(batch: Sequence[Event]) -> None:
        said.extend(batch)

    async def work(_sink: Any, _token: CancelToken) -> JobResult:
        return result

    publish = then_publish(work, cast(Repositories, repos), "cuda")
    return await publish(sink, CancelToken()), said


async def test_a_published_build_says_where() -> None:
    repos = Repos(fails=False)
    result, said = await _run(BUILT, repos)
    assert result == BUILT
    assert repos.asked == [("cuda", (PACKAGE,))]
    assert [(e.action, e.message) for e in said] == [
        (Action.PUBLISHED, f"📚 Published {PACKAGE.name} to orchestrator-cuda")
    ]


async def test_a_failed_publish_fails_the_job_and_keeps_its_package() -> None:
    result, said = await _run(BUILT, Repos(fails=True))
    assert result.status is JobStatus.FAILED
    assert result.artifacts == (PACKAGE,) and result.life == BUILT.life
    assert result.reason.startswith("built hello-c, but could not publish to orchestrator-cuda")
    assert "No space left" in result.reason
    assert "could not publish" in said[0].message


async def test_a_failed_build_publishes_nothing() -> None:
    repos = Repos(fails=False)
    failed = JobResult(JobStatus.FAILED, "makepkg exited 1", 1)
    result, said = await _run(failed, repos)
    assert result == failed and said == [] and repos.asked == []
