"""The seed's job operations beyond plain builds: installing a catalog worker, downloading a
model. Each becomes a job in the same registry, with the same narration, stream and cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import tarfile
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

from .backend import Backend
from .cancel import CancelToken
from .catalog import Catalog, CatalogEntry
from .engine import Engine
from .errors import InvalidInput, JobStateConflict, UnknownOperation
from .events import Action, Event
from .installed import InstallError, WorkerStore
from .models import ModelStore
from .registry import Queued, Registry
from .runner import BuildRequest, BuildResult, Sink, cancel_result, ending_event
from .settings import Settings
from .status import JobStatus
from .store import JobRecord

OPERATIONS = ("worker_install", "model_download")
_HF = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)/(?P<file>[^@]+?)(?:@(?P<revision>[\w.-]+))?$")


class Operations:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        engine: Engine,
        backend: Backend,
        catalog: Catalog,
        workers: WorkerStore,
        models: ModelStore,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._engine = engine
        self._backend = backend
        self.catalog = catalog
        self.workers = workers
        self.models = models
        # Subjects claimed by a request that is still being queued (before the registry knows
        # the job): claimed without an await in between, so two requests cannot both pass.
        self._claimed: set[str] = set()
        registry.register_resume("worker_install", self._resume_install)
        registry.register_resume("model_download", self._resume_download)

    async def submit(self, body: Mapping[str, Any], *, cache: bool = True) -> JobRecord:
        """Queue the operation ``body`` names; ``cache`` is for the builds it makes."""
        operation = body.get("operation")
        timeout_s = _timeout(body.get("timeout_s"), self._settings)
        if operation == "worker_install":
            return await self.install_worker(_text(body, "worker_id"), timeout_s, cache=cache)
        if operation == "model_download":
            sha256 = body.get("sha256")
            if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):
                raise InvalidInput("sha256 must be 64 hex digits")
            return await self.download_model(
                _text(body, "url"), _text(body, "name"), sha256 and str(sha256).lower(), timeout_s
            )
        raise UnknownOperation(operation, OPERATIONS)

    async def install_worker(
        self, worker_id: str, timeout_s: float | None, *, cache: bool = True
    ) -> JobRecord:
        entry = self.catalog.get(worker_id)
        # Refuses what cannot run here (metal, another OS or CPU); the build itself warns
        # when a cuda worker gets no GPU.
        entry.check_runs_here(self._settings, gpu_runtime=await self._backend.gpu_runtime())
        subject = f"worker:{entry.id}"
        with self._claim(subject):
            return await self._queue_install(entry, subject, timeout_s, cache)

    async def _queue_install(
        self, entry: CatalogEntry, subject: str, timeout_s: float | None, cache: bool
    ) -> JobRecord:
        job_id = self._registry.new_job_id()
        record = JobRecord(
            id=job_id,
            operation="worker_install",
            status=JobStatus.QUEUED,
            variant=entry.worker_type,
            pkgname=entry.id,
            pkgver=entry.version,
            timeout_s=timeout_s,
            request={} if cache else {"cache": False},
        )
        queued = await self._install_job(entry, record)
        message = f"📥 Queued install of {entry.name} {entry.version} ({entry.worker_type})"
        return await self._registry.submit(record, queued, message)

    async def _install_job(self, entry: CatalogEntry, record: JobRecord) -> Queued:
        job_id, timeout_s = record.id, record.timeout_s
        source_dir = await asyncio.to_thread(
            entry.write_build_dir, self._settings.work_dir / job_id
        )
        cache = record.request.get("cache", True) is not False
        request = BuildRequest(job_id, source_dir, entry.worker_type, timeout_s, cache=cache)

        async def work(sink: Sink, token: CancelToken) -> BuildResult:
            built = await self._engine.build(request, sink, token)
            if built.status is not JobStatus.SUCCEEDED:
                return built
            if token.cancelled:  # the build finished, but the job was stopped: install nothing
                assert token.reason is not None
                result = cancel_result(token.reason, timeout_s)
                await sink([ending_event(result, "Install")])
                return dataclasses.replace(result, cache=built.cache)
            installed = await self._install(entry, built, sink, token, job_id)
            return dataclasses.replace(installed, cache=built.cache)

        return Queued(work, cleanup_dir=source_dir, subject=f"worker:{entry.id}")

    async def _resume_install(self, record: JobRecord) -> Queued:
        # The catalog may have changed while the service was down: install what it has now.
        entry = self.catalog.get(record.pkgname or "")
        return await self._install_job(entry, record)

    async def _install(
        self, entry: CatalogEntry, built: BuildResult, sink: Sink, token: CancelToken, job_id: str
    ) -> BuildResult:
        await sink([Event(Action.PHASE, f"Installing {entry.binary_name} {entry.version}")])
        try:
            [package] = built.artifacts
            installed = await asyncio.to_thread(
                self.workers.install,
                entry.id,
                entry.version,
                entry.binary_name,
                package,
                job_id,
                lambda: token.cancelled,  # asked right before the switch
            )
        except (InstallError, ValueError, tarfile.TarError, OSError) as exc:
            result = BuildResult(JobStatus.FAILED, f"install of {entry.id} failed: {exc}", 0)
            await sink([ending_event(result, "Install")])
            return result
        if installed is None:  # cancelled during the install: the previous version stays
            assert token.reason is not None
            result = cancel_result(token.reason)
            await sink([ending_event(result, "Install")])
            return result
        await sink(
            [
                Event(
                    Action.INSTALLED,
                    f"📦 Installed {installed.path} (sha256 {installed.sha256[:12]}…)",
                ),
                Event(Action.SUCCEEDED, f"✅ Worker {entry.id} {entry.version} installed"),
            ]
        )
        return BuildResult(
            JobStatus.SUCCEEDED, f"installed {entry.id} {entry.version}", 0, built.artifacts
        )

    async def download_model(
        self, url: str, name: str, sha256: str | None, timeout_s: float | None
    ) -> JobRecord:
        name = ModelStore.check_name(name)
        url = self.resolve_url(url)
        subject = f"model:{name}"
        with self._claim(subject):
            return await self._queue_download(url, name, sha256, subject, timeout_s)

    async def _queue_download(
        self, url: str, name: str, sha256: str | None, subject: str, timeout_s: float | None
    ) -> JobRecord:
        record = JobRecord(
            id=self._registry.new_job_id(),
            operation="model_download",
            status=JobStatus.QUEUED,
            pkgname=name,
            timeout_s=timeout_s,
            request={"url": url, "sha256": sha256},
        )
        message = f"📥 Queued download of {name} from {url}"
        return await self._registry.submit(record, self._download_job(record), message)

    def _download_job(self, record: JobRecord) -> Queued:
        url, sha256 = str(record.request["url"]), record.request.get("sha256")
        name = ModelStore.check_name(record.pkgname or "")

        async def work(sink: Sink, token: CancelToken) -> BuildResult:
            result = await self.models.download(url, name, sha256, sink, token)
            await sink([ending_event(result, "Download")])
            return result

        return Queued(work, subject=f"model:{name}")

    async def _resume_download(self, record: JobRecord) -> Queued:
        if "url" not in record.request:
            raise InvalidInput("its request was not recorded")
        return self._download_job(record)

    def resolve_url(self, url: str) -> str:
        """hf://REPO/FILE[@REVISION] through the template in settings; http(s) as it is."""
        if match := _HF.match(url):
            return self._settings.model_url_template.format(
                repo=match["repo"], file=match["file"], revision=match["revision"] or "main"
            )
        if urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
            raise InvalidInput(f"url must be http(s):// or hf://REPO/FILE, not {url!r}")
        return url

    @contextlib.contextmanager
    def _claim(self, subject: str) -> Iterator[None]:
        self.ensure_idle(subject)
        self._claimed.add(subject)
        try:
            yield
        finally:
            self._claimed.discard(subject)

    def ensure_idle(self, subject: str) -> None:
        """409 while a job installs or downloads ``subject`` ("worker:ID", "model:NAME"): one
        job at a time, and no removal under it."""
        if subject in self._claimed:
            raise JobStateConflict(f"{subject} is busy: a job for it is being queued", "queued")
        if (running := self._registry.busy_with(subject)) is not None:
            raise JobStateConflict(f"{subject} is busy: job {running} is working on it", "running")


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"'{key}' is required (a non-empty string)")
    return value


def _timeout(raw: object, settings: Settings) -> float:
    if raw is None:
        return settings.default_timeout_s
    if not isinstance(raw, int | float) or not 0 < raw <= settings.max_timeout_s:
        raise InvalidInput(
            f"timeout_s must be a number above 0 and at most {settings.max_timeout_s:g}"
        )
    return float(raw)
