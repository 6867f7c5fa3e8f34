"""A job kind: one kind of work the registry runs, looked up by its name (arq's job functions).

A kind says how it parses its request, what it acts on (its subject: one job at a time per
subject), the fields of its record, how it runs, and how it runs again after a restart. The
registry does the rest, the same for every kind: the queue, the time limit, the busy guard, the
endings and the final status. A new kind is one module in ``orchestrator/kinds/`` and one line in
``kinds.KINDS``; the model of its request is what the API validates and documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..build.srcinfo import SrcInfo
from ..storage.store import JobRecord
from .result import Work
from .status import JobStatus

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class Submission:
    """A request for a job as the API received it."""

    job_id: str
    body: Mapping[str, Any]  # the JSON body; for an upload, its query parameters
    query: Mapping[str, str] = field(default_factory=dict)  # the URL's query parameters
    upload: Path | None = None  # the unpacked upload, for a kind that takes one
    srcinfo: SrcInfo | None = None  # makepkg's reading of the upload, when the API has it


@dataclass(frozen=True, slots=True)
class Plan:
    """What a kind makes of a valid request: its record's fields and its first narration line."""

    message: str
    variant: str | None = None
    pkgname: str | None = None
    pkgver: str | None = None
    srcinfo: str | None = None
    # What the kind needs to run the job again after a restart, beyond the fields above.
    request: Mapping[str, Any] = field(default_factory=dict)
    reproduction: Mapping[str, Any] | None = None  # a reproduce job's report, from the start

    def record(self, job_id: str, kind: str, timeout_s: float | None) -> JobRecord:
        return JobRecord(
            id=job_id,
            operation=kind,
            status=JobStatus.QUEUED,
            variant=self.variant,
            pkgname=self.pkgname,
            pkgver=self.pkgver,
            timeout_s=timeout_s,
            srcinfo=self.srcinfo,
            request=dict(self.request),
            reproduction=self.reproduction,
        )


@dataclass(frozen=True, slots=True)
class Job:
    """A job ready to run: its work, and what it holds until it ends."""

    work: Work
    cleanup_dir: Path | None = None  # removed when the job ends (its sources)


class Kind(Protocol):
    @property
    def name(self) -> str:
        """Its name: what ``POST /v1/jobs`` takes as ``operation``, and the record's."""

    @property
    def noun(self) -> str:
        """How its narration names a job of it: "Build", "Install", "Download"."""

    @property
    def upload(self) -> bool:
        """True when its request is an upload (``POST /v1/builds``), not a JSON body."""

    @property
    def request(self) -> type[BaseModel]:
        """Its request's model: the JSON body's (with ``operation`` its name), or an upload's
        query's. ``parse`` reads the request through it."""

    async def parse(self, submission: Submission) -> Plan:
        """Check the request (raising ``InvalidInput``, ``NotFound``…) and say what the job is."""

    def subject(self, record: JobRecord) -> str | None:
        """What the job acts on ("worker:ID"): no two unfinished jobs share one."""

    async def job(self, record: JobRecord) -> Job:
        """How a new job runs."""

    async def resume(self, record: JobRecord) -> Job:
        """How a job left queued by an earlier process runs; raises ``OrchestratorError``
        (or ``OSError``) when it cannot run any more."""


@runtime_checkable
class Adoptable(Protocol):
    """A kind whose running jobs an earlier process left behind can go on (their build)."""

    async def adopt(self, record: JobRecord, stored: Mapping[str, int]) -> Job:
        """How the job goes on with its build step as the engine holds it (found now:
        ``StepGone`` when it is not there any more); ``stored``: the lines of each stream
        of its output the store holds already."""
        ...


@runtime_checkable
class Concludable(Protocol):
    """A kind whose build can be finished from what it stored, once its step is gone: a kill
    after its packages were stored, while its step was being removed."""

    async def conclude(self, record: JobRecord) -> Job:
        """How the job ends with the packages it stored; raises ``OrchestratorError`` when
        they are not all there."""
        ...
