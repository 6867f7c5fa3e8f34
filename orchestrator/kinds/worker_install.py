"""The "worker_install" kind: a catalog worker built by makepkg, then switched in atomically."""

from __future__ import annotations

import asyncio
import dataclasses
import tarfile
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field

from ..build.runner import NOUN as BUILD
from ..build.runner import BuildRequest
from ..catalog.installed import WorkerStore
from ..catalog.workers import Catalog, CatalogEntry
from ..engine import Engine
from ..errors import InstallError
from ..jobs import (
    Job,
    JobResult,
    Plan,
    Sink,
    Submission,
    Work,
    adopting,
    cancel_result,
    ending_event,
)
from ..jobs.cancel import CancelToken
from ..jobs.status import JobStatus
from ..narration.events import Action, Event
from ..repo import Repositories
from ..settings import Settings
from ..storage.store import JobRecord
from ._body import cache_request, parse_cache, published, read
from ._services import Services

NOUN = "Install"


class WorkerInstall(BaseModel):
    """Build a catalog worker and install its binary."""

    operation: Literal["worker_install"]
    worker_id: str = Field(min_length=1)
    timeout_s: float | None = Field(default=None, gt=0)
    publish: bool = Field(
        default=False, description="also add its package to its variant's repository"
    )


class WorkerInstallKind:
    name = "worker_install"
    noun = NOUN
    upload = False
    request = WorkerInstall

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        catalog: Catalog,
        workers: WorkerStore,
        repos: Repositories,
    ) -> None:
        self._repos = repos
        self._settings = settings
        self._engine = engine
        self._catalog = catalog
        self._workers = workers

    @classmethod
    def of(cls, services: Services) -> WorkerInstallKind:
        s = services
        return cls(s.settings, s.engine, s.catalog, s.workers, s.repos)

    async def parse(self, submission: Submission) -> Plan:
        """``worker_id``, a catalog entry that can run here; ``cache`` for its build."""
        asked = read(WorkerInstall, submission.body)
        entry = self._catalog.get(asked.worker_id)
        # Refuses what cannot run here (metal, another OS or CPU); the build itself warns
        # when a cuda worker gets no GPU.
        gpu_runtime = await self._engine.backend.gpu_runtime()
        entry.check_runs_here(self._settings, gpu_runtime=gpu_runtime)
        cache = parse_cache(submission.query.get("cache"))
        return Plan(
            message=f"📥 Queued install of {entry.name} {entry.version} ({entry.worker_type})",
            variant=entry.worker_type,
            pkgname=entry.id,
            pkgver=entry.version,
            request=cache_request(cache, publish=asked.publish),
        )

    def subject(self, record: JobRecord) -> str | None:
        return f"worker:{record.pkgname}"

    async def job(self, record: JobRecord) -> Job:
        # A resumed job installs what the catalog has now: it may have changed meanwhile.
        entry = self._catalog.get(record.pkgname or "")
        job_id = record.id
        source_dir = await asyncio.to_thread(
            entry.write_build_dir, self._settings.work_dir / job_id
        )
        request = BuildRequest(job_id, source_dir, entry.worker_type, cache=record.cache_asked)

        async def build(sink: Sink, token: CancelToken) -> JobResult:
            return await self._engine.runner.run(request, sink, token)

        work = published(self._then_install(entry, build, job_id), record, self._repos)
        return Job(work, cleanup_dir=source_dir)

    async def adopt(
        self, record: JobRecord, stored: Mapping[str, int], ends: Mapping[str, tuple[str, str]]
    ) -> Job:
        """Its build goes on; the install that follows is the catalog's entry of now."""
        entry = self._catalog.get(record.pkgname or "")
        runner = self._engine.runner
        step = await adopting.find(runner, record.id)
        build = adopting.adopted_job(runner, adopting.Adoption(record.id, step, stored, ends))
        work = published(self._then_install(entry, build, record.id), record, self._repos)
        return Job(work, self._settings.work_dir / record.id)

    def _then_install(self, entry: CatalogEntry, build: Work, job_id: str) -> Work:
        async def work(sink: Sink, token: CancelToken) -> JobResult:
            built = await build(sink, token)
            if built.status is not JobStatus.SUCCEEDED:
                return built
            await sink([ending_event(built, BUILD)])  # the build's end, half-way through
            if token.cancelled:  # the build finished, but the job was stopped: install nothing
                return dataclasses.replace(cancel_result(token, NOUN), cache=built.cache)
            installed = await self._install(entry, built, sink, token, job_id)
            return dataclasses.replace(installed, cache=built.cache)

        return work

    resume = job

    async def _install(
        self, entry: CatalogEntry, built: JobResult, sink: Sink, token: CancelToken, job_id: str
    ) -> JobResult:
        await sink([Event(Action.PHASE, f"Installing {entry.binary_name} {entry.version}")])
        try:
            [package] = built.artifacts
            installed = await asyncio.to_thread(
                self._workers.install,
                entry.id,
                entry.version,
                entry.binary_name,
                package,
                job_id,
                lambda: token.cancelled,  # asked right before the switch
            )
        except (InstallError, ValueError, tarfile.TarError, OSError) as exc:
            return JobResult(JobStatus.FAILED, f"install of {entry.id} failed: {exc}", 0)
        if installed is None:  # cancelled during the install: the previous version stays
            return cancel_result(token, NOUN)
        message = f"📦 Installed {installed.path} (sha256 {installed.sha256[:12]}…)"
        await sink([Event(Action.INSTALLED, message)])
        return JobResult(
            JobStatus.SUCCEEDED,
            f"installed {entry.id} {entry.version}",
            0,
            built.artifacts,
            ending=f"✅ Worker {entry.id} {entry.version} installed",
        )
