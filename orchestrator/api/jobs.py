"""Jobs: list, look at one, cancel one."""

from __future__ import annotations

from aiohttp import web

from ..errors import InvalidInput
from ..jobs import Submission
from ..jobs.status import JobStatus
from ..provenance import FILE_NAME
from ..repo import repo_name
from ..storage.store import JobRecord
from .keys import ENGINE, REGISTRY, REPOS, STORE
from .routes import MAX_PAGE, url
from .wire import Job, JobList, JobSubmitted, Publication, job_links, respond


def view(request: web.Request, record: JobRecord) -> Job:
    """The job as the API shows it, with what vouches for its packages: its provenance, if it
    is on disk, and the repository it published to."""
    if record.status is not JobStatus.SUCCEEDED or not record.artifacts:
        return Job.of(record)
    proven = (request.app[ENGINE].runner.artifact_dir(record.id) / FILE_NAME).is_file()
    published = None
    # A publish that fails fails the job: a succeeded job that asked for one was published.
    if record.request.get("publish") is True:
        variant = record.variant or "cpu"
        published = Publication(
            repository=repo_name(variant),
            variant=variant,
            fingerprint=request.app[REPOS].signer.fingerprint,
            repo_url=url("list_repo", variant=variant),
        )
    return Job.of(record, proven=proven, published=published)


def _int_param(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {raw!r}") from None
    if not 0 <= value <= maximum:
        raise InvalidInput(f"{name} must be between 0 and {maximum}")
    return value


async def list_jobs(request: web.Request) -> web.Response:
    status_raw = request.query.get("status")
    status = None
    if status_raw:
        try:
            status = JobStatus(status_raw)
        except ValueError:
            known = ", ".join(s.value for s in JobStatus)
            raise InvalidInput(f"unknown status {status_raw!r}; known: {known}") from None
    limit = _int_param(request, "limit", 50, MAX_PAGE)
    offset = _int_param(request, "offset", 0, 10**9)
    records, total = await request.app[STORE].list_jobs(status=status, limit=limit, offset=offset)
    return respond(
        JobList(jobs=[view(request, r) for r in records], total=total, limit=limit, offset=offset)
    )


async def get_job(request: web.Request) -> web.Response:
    record = await request.app[REGISTRY].get(request.match_info["job_id"])
    return respond(view(request, record))


async def create_job(request: web.Request) -> web.Response:
    """POST /v1/jobs: a job of the kind ``operation`` names (``wire.Operation``)."""
    # A page on another site can POST text/plain (or no type) without a CORS preflight, so
    # JSON is taken only when labelled as JSON. aiohttp reports a missing type as
    # application/octet-stream, which is refused too.
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text="send the operation as JSON with Content-Type: application/json "
            "(e.g. curl -H 'Content-Type: application/json' -d '{\"operation\": ...}' ...)"
        )
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput('send a JSON object like {"operation": "worker_install", ...}') from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    registry = request.app[REGISTRY]
    submission = Submission(registry.new_job_id(), body, dict(request.query))
    record = (await registry.submit(body.get("operation"), submission)).record
    return respond(
        JobSubmitted(job_id=record.id, status=record.status, **job_links(record.id)),
        status=201,
        headers={"Location": url("get_job", job_id=record.id)},
    )


async def reproduce_job(request: web.Request) -> web.Response:
    """POST /v1/jobs/{id}/reproduce: a "reproduce" job for that build (``kinds.reproduce``)."""
    registry = request.app[REGISTRY]
    body = {"operation": "reproduce", "job": request.match_info["job_id"]}
    submission = Submission(registry.new_job_id(), body, dict(request.query))
    record = (await registry.submit("reproduce", submission)).record
    return respond(
        JobSubmitted(job_id=record.id, status=record.status, **job_links(record.id)),
        status=202,
        headers={"Location": url("get_job", job_id=record.id)},
    )


async def cancel_job(request: web.Request) -> web.Response:
    record = await request.app[REGISTRY].cancel(request.match_info["job_id"])
    return respond(view(request, record))
