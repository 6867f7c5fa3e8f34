"""The "build" kind: an uploaded build directory, built by makepkg (``POST /v1/builds``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace

from pydantic import BaseModel

from ..build import srcinfo
from ..build.runner import NOUN, BuildRequest
from ..build.srcinfo import SrcInfo
from ..engine import Engine
from ..errors import InvalidInput
from ..jobs import Job, JobResult, Plan, Sink, Submission, Work, adopting
from ..jobs.cancel import CancelToken
from ..repo import Repositories
from ..repo.proving import then_prove
from ..settings import Settings
from ..storage.archive import file_digests
from ..storage.store import JobRecord
from ..storage.uploads import UploadBudget
from ._body import cache_request, parse_cache, published, read
from ._services import Services


class Build(BaseModel):
    """A build's query (its body is the uploaded build directory): what the kind reads of it."""

    variant: str = "cpu"
    cache: str | None = None  # on or off: ``parse_cache`` says what else is refused
    publish: bool = False  # add the package to the variant's repository once it is built


class BuildKind:
    name = "build"
    noun = NOUN
    upload = True
    request = Build

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        uploads: UploadBudget,
        repos: Repositories | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._uploads = uploads
        self._repos = repos

    @classmethod
    def of(cls, services: Services) -> BuildKind:
        return cls(services.settings, services.engine, services.uploads, services.repos)

    async def parse(self, submission: Submission) -> Plan:
        """The upload's PKGBUILD (as makepkg reads it), the variant, and ``cache``."""
        if submission.upload is None:
            raise InvalidInput("a build needs its uploaded build directory")
        query = read(Build, submission.query)
        cache = parse_cache(query.cache)
        reading = BuildRequest(
            submission.job_id, submission.upload, query.variant, srcinfo=submission.srcinfo
        )
        info, variant = await self._engine.runner.prepare(reading)  # the runner's own checks
        return Plan(
            message=f"📥 Queued {info.pkgbase} {info.version} ({variant.variant.value})",
            variant=variant.variant.value,
            pkgname=info.pkgbase,
            pkgver=info.version,
            srcinfo=info.text,
            # What its top level printed is said again when the build starts.
            request={
                **cache_request(cache, publish=query.publish),
                **({"printed": info.printed} if info.printed else {}),
                # As submitted, for its provenance: sha256 by path in the upload.
                "submitted": await asyncio.to_thread(file_digests, submission.upload),
            },
        )

    def subject(self, record: JobRecord) -> str | None:
        return None  # each build has its own sources: builds never wait for one another

    async def job(self, record: JobRecord) -> Job:
        source_dir = self._settings.work_dir / record.id
        info = record_srcinfo(record)
        request = BuildRequest(
            record.id, source_dir, record.variant or "cpu", srcinfo=info, cache=record.cache_asked
        )
        runner = self._engine.runner

        async def build(sink: Sink, token: CancelToken) -> JobResult:
            return await runner.run(request, sink, token)

        work = published(self._proven(build, record), record, self._repos)
        return Job(work, cleanup_dir=source_dir)

    def _proven(self, work: Work, record: JobRecord) -> Work:
        """``work``, then its signed provenance once it succeeded (with the service's key)."""
        if self._repos is None:
            return work
        runner, signer = self._engine.runner, self._repos.signer
        return then_prove(work, record, record_srcinfo(record), runner, signer, self._settings)

    async def adopt(self, record: JobRecord, stored: Mapping[str, int]) -> Job:
        runner = self._engine.runner
        step = await adopting.find(runner, record.id)
        adoption = adopting.Adoption(record.id, step, stored)
        work = published(
            self._proven(adopting.adopted_job(runner, adoption), record), record, self._repos
        )
        # Its sources are in its step: what is left of them here goes when it ends.
        return Job(work, self._settings.work_dir / record.id)

    async def conclude(self, record: JobRecord) -> Job:
        work = self._proven(adopting.stored_packages(self._engine.runner, record.id), record)
        return Job(published(work, record, self._repos), self._settings.work_dir / record.id)

    async def resume(self, record: JobRecord) -> Job:
        source_dir = self._settings.work_dir / record.id
        if not (source_dir / "PKGBUILD").is_file():
            raise InvalidInput("its uploaded sources are gone")
        await self._uploads.settle(record.id, source_dir)
        return await self.job(record)


def record_srcinfo(record: JobRecord) -> SrcInfo | None:
    """makepkg's reading as the record keeps it."""
    if not record.srcinfo:
        return None
    printed = record.request.get("printed")
    info = srcinfo.parse(record.srcinfo)
    return replace(info, printed=printed) if isinstance(printed, str) else info
