"""A job's packages, published once it has succeeded: the step a build or an install adds when
it was asked to (``publish=true``)."""

from __future__ import annotations

from ..errors import OrchestratorError
from ..jobs import JobResult, Sink, Work, failed_after
from ..jobs.cancel import CancelToken
from ..jobs.status import JobStatus
from ..narration.events import Action, Event, Level
from . import Repositories, repo_name


def then_publish(work: Work, repos: Repositories, variant: str) -> Work:
    """``work``, then its packages added to ``variant``'s repository if it succeeded.

    A publish that fails fails the job, saying so, and keeps its packages: they are in its
    record to download, and publishing them again is a new job's business.
    """

    async def publish(sink: Sink, token: CancelToken) -> JobResult:
        result = await work(sink, token)
        if result.status is not JobStatus.SUCCEEDED or not result.artifacts:
            return result
        name = repo_name(variant)
        try:
            added = await repos.publish(variant, result.artifacts)
        except (OrchestratorError, OSError) as exc:
            message = f"could not publish to {name}: {exc}"
            await sink([Event(Action.WARNING, f"📚 {message}", Level.ERROR)])
            return failed_after(result, message)
        await sink([Event(Action.PUBLISHED, f"📚 Published {', '.join(added)} to {name}")])
        return result

    return publish
