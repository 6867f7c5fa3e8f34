"""The "reproduce" kind: a finished build rebuilt from its stored inputs, and its packages
compared with the first build's (``POST /v1/jobs/{id}/reproduce``).

As makerepropkg does it: the same upload, the same variant (its image), in a fresh container,
with no build cache, and with the first build's ``SOURCE_DATE_EPOCH`` (read from its package);
then each package compared by file name and sha256, and diffoscope, sandboxed, says where the
ones that differ do (``build.differ``). A difference is a finding, not a failure: the job
succeeds and its report says "differs". The report is on both jobs' records (the original's:
its latest reproduction); one that a dead service left "running" is settled at the next start
(``settle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..build import differ
from ..build.reproduce import (
    MAX_DIFFOSCOPE_PACKAGES,
    PackageComparison,
    Reproduction,
    build_date,
    compare,
    inputs_path,
)
from ..build.runner import BuildRequest
from ..engine import Engine
from ..errors import (
    ArchiveTooLarge,
    InsufficientStorage,
    JobNotFound,
    JobStateConflict,
    NoStoredInputs,
    NotReproducible,
    OrchestratorError,
)
from ..jobs import Job, JobResult, JobStatus, Plan, Sink, Submission
from ..jobs.cancel import CancelToken
from ..narration.events import Action, Event, Level
from ..provenance import sha256_file
from ..settings import Settings
from ..storage import archive
from ..storage.store import JobRecord, Store
from ..storage.uploads import UploadBudget
from ._body import read
from ._services import Services
from .build import BuildKind, record_srcinfo

NOUN = "Rebuild"
_NOT_LOOKED = (
    f"not compared by diffoscope: it looks into the first {MAX_DIFFOSCOPE_PACKAGES} packages "
    "that differ only"
)


class Reproduce(BaseModel):
    """Rebuild a finished build from its stored inputs and compare its packages."""

    operation: Literal["reproduce"]
    job: str = Field(min_length=1, max_length=64, description="the build's job id")
    timeout_s: float | None = Field(default=None, gt=0)


class ReproduceKind:
    name = "reproduce"
    noun = NOUN
    upload = False
    request = Reproduce

    def __init__(
        self, settings: Settings, engine: Engine, store: Store, uploads: UploadBudget
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._store = store
        self._uploads = uploads

    @classmethod
    def of(cls, services: Services) -> ReproduceKind:
        return cls(services.settings, services.engine, services.store, services.uploads)

    async def parse(self, submission: Submission) -> Plan:
        """The build to reproduce: a build that succeeded, whose inputs were kept."""
        asked = read(Reproduce, submission.body)
        original = await self._reproducible(asked.job)
        epoch = await self._source_date_epoch(original)
        return Plan(
            message=(
                f"📥 Queued rebuild of {original.pkgname} {original.pkgver} (job {original.id}, "
                f"{original.variant}), cache off, SOURCE_DATE_EPOCH={epoch}"
            ),
            variant=original.variant,
            pkgname=original.pkgname,
            pkgver=original.pkgver,
            srcinfo=original.srcinfo,
            request={"original": original.id, "source_date_epoch": epoch},
        )

    async def _reproducible(self, job_id: str) -> JobRecord:
        record = await self._store.get_job(job_id)
        if record is None:
            raise JobNotFound(job_id)
        if record.operation != BuildKind.name:
            raise NotReproducible(
                f"job {job_id} is a {record.operation} job: only builds (POST /v1/builds) "
                "keep the inputs a rebuild needs"
            )
        if record.status is not JobStatus.SUCCEEDED:
            raise JobStateConflict(
                f"job {job_id} is {record.status.value}: only a build that succeeded can be "
                "reproduced (there is nothing to compare with)",
                record.status.value,
            )
        if not inputs_path(self._engine.runner.artifact_dir(job_id)).is_file():
            raise NoStoredInputs(
                f"job {job_id} has no stored inputs: it was built before the service kept "
                "them, or they were removed with its packages; submit its sources again"
            )
        return record

    async def _source_date_epoch(self, original: JobRecord) -> int:
        """The first build's, from its first package's .PKGINFO (makerepropkg's way)."""
        folder = self._engine.runner.artifact_dir(original.id)
        packages = [folder / name for name in original.artifacts if (folder / name).is_file()]
        if not packages:
            raise NoStoredInputs(f"job {original.id}'s packages are gone: nothing to compare")
        try:
            return await asyncio.to_thread(build_date, packages[0])
        except OrchestratorError as exc:
            raise NoStoredInputs(f"job {original.id}: {exc}") from None

    def subject(self, record: JobRecord) -> str | None:
        # One reproduction of a build at a time: the original shows its latest.
        return f"reproduce:{record.request.get('original')}"

    async def job(self, record: JobRecord) -> Job:
        original_id = str(record.request["original"])
        epoch = int(record.request["source_date_epoch"])
        runner = self._engine.runner
        source_dir = self._settings.work_dir / record.id
        inputs = inputs_path(runner.artifact_dir(original_id))
        await self._unpacked(record.id, inputs, source_dir)
        request = BuildRequest(
            record.id,
            source_dir,
            record.variant or "cpu",
            srcinfo=record_srcinfo(record),
            cache=False,
            env={"SOURCE_DATE_EPOCH": str(epoch)},
        )

        async def work(sink: Sink, token: CancelToken) -> JobResult:
            # Said once it runs, not when queued: a job cancelled in the queue never runs
            # anything that would say it ended.
            await self._report(Reproduction(original_id, record.id, "running"))
            report = Reproduction(original_id, record.id, "failed")
            try:
                said = f"🔁 Rebuilding job {original_id} from its stored inputs in a fresh "
                said += f"container: cache off, SOURCE_DATE_EPOCH={epoch}"
                await sink([Event(Action.PHASE, said)])
                built = await runner.run(request, sink, token)
                if built.status is not JobStatus.SUCCEEDED:
                    return built
                report = await self._compared(original_id, record.id, built, sink)
                return JobResult(
                    JobStatus.SUCCEEDED,
                    f"rebuilt job {original_id}: {report.summary()}",
                    0,
                    built.artifacts,
                    cache=built.cache,
                    life=built.life,
                )
            finally:
                # However it ended (a kill -9 is settled at the next start instead).
                await asyncio.shield(self._report(report))
                if report.state == "failed":
                    with contextlib.suppress(OrchestratorError):
                        said = "🔁 Reproduction failed: the rebuild did not finish"
                        await sink([Event(Action.REPRODUCED, said, Level.ERROR)])

        return Job(work, cleanup_dir=source_dir)

    resume = job

    async def _unpacked(self, job_id: str, inputs: Path, source_dir: Path) -> None:
        """The upload unpacked again, counted as a queued upload is (given back when the job
        ends): a rebuild queued is up to max_build_dir_bytes on the disk, like a build."""
        limit = self._settings.max_build_dir_bytes
        cap_bytes = await self._uploads.claim(job_id, limit)
        try:
            await asyncio.to_thread(_unpack, inputs, source_dir, cap_bytes)
            await self._uploads.settle(job_id, source_dir)
        except BaseException as exc:
            self._uploads.release(job_id)
            await asyncio.to_thread(shutil.rmtree, source_dir, True)
            if isinstance(exc, ArchiveTooLarge) and cap_bytes < limit:
                raise InsufficientStorage(self._uploads.exceeded()) from exc
            raise

    async def _compared(
        self, original_id: str, rebuild_id: str, built: JobResult, sink: Sink
    ) -> Reproduction:
        """Each package compared; diffoscope, sandboxed, on those that differ."""
        runner = self._engine.runner
        original = await self._store.get_job(original_id)
        folder = runner.artifact_dir(original_id)
        names = original.artifacts if original is not None else ()
        theirs = await asyncio.to_thread(_digests, [folder / n for n in names])
        ours = await asyncio.to_thread(_digests, list(built.artifacts))
        found = []
        looked = 0
        for package in compare(theirs, ours):
            if not package.identical and package.original_sha256 and package.rebuilt_sha256:
                looked += 1
                if looked <= MAX_DIFFOSCOPE_PACKAGES:
                    package = await self._diffoscope(rebuild_id, folder, package, sink)
                else:
                    package = dataclasses.replace(package, differences=_NOT_LOOKED)
            found.append(package)
            await sink([_event(package)])
        report = Reproduction.of(original_id, rebuild_id, found)
        level = Level.INFO if report.state == "identical" else Level.WARNING
        if report.state == "identical":
            said = "✅ Reproduced: every package is bit-identical"
        else:
            said = f"⚠️ Not reproducible: {report.summary()}"
        await sink([Event(Action.REPRODUCED, said, level)])
        return report

    async def _diffoscope(
        self, rebuild_id: str, folder: Path, package: PackageComparison, sink: Sink
    ) -> PackageComparison:
        said = f"🔍 {package.name} differs: diffoscope, sandboxed, says where"
        await sink([Event(Action.PHASE, said)])
        rebuilt = self._engine.runner.artifact_dir(rebuild_id) / package.name
        try:
            text = await differ.differences(
                self._engine.backend, self._settings, rebuild_id, folder / package.name, rebuilt
            )
        except OrchestratorError as exc:
            text = f"diffoscope could not say where: {exc}"
            await sink([Event(Action.WARNING, text, Level.WARNING)])
        return PackageComparison(
            package.name, False, package.original_sha256, package.rebuilt_sha256, text
        )

    async def _report(self, report: Reproduction) -> None:
        """The report on the rebuild, and on the original (whose latest it is)."""
        data = report.to_dict()
        for job_id in (report.rebuild, report.original):
            with contextlib.suppress(OrchestratorError):  # the original may have been removed
                await self._store.update_job(job_id, reproduction=data)


def _unpack(inputs: Path, dest: Path, max_bytes: int) -> None:
    """The stored upload, unpacked afresh (with the checks the upload had)."""
    shutil.rmtree(dest, ignore_errors=True)
    with inputs.open("rb") as body:
        archive.extract(body, dest, max_bytes=max_bytes)


def _digests(paths: list[Path]) -> dict[str, str]:
    return {path.name: sha256_file(path) for path in paths if path.is_file()}


def _event(package: PackageComparison) -> Event:
    name = package.name
    if package.identical:
        return Event(Action.REPRODUCED, f"✅ {name}: bit-identical")
    if package.rebuilt_sha256 is None:
        said = f"⚠️ {name}: the rebuild did not make it"
    elif not package.original_sha256:
        said = f"⚠️ {name}: only the rebuild made it"
    else:
        said = f"⚠️ {name} differs: sha256 {package.original_sha256[:12]}… then "
        said += f"{package.rebuilt_sha256[:12]}…"
    return Event(Action.REPRODUCED, said, Level.WARNING)


async def settle(store: Store, is_active: Callable[[str], bool]) -> list[str]:
    """At start-up, once the jobs left queued are queued again: a reproduction still said to
    be "running" whose rebuild is not active here any more (the service died during it) has
    failed. Returns the ids of the jobs whose report was settled."""
    settled = []
    for record in await store.reproducing():
        report = record.reproduction or {}
        rebuild = str(report.get("rebuild", ""))
        if is_active(rebuild):
            continue
        ended = {**report, "state": "failed"}
        if rebuild != record.id:
            # A kill between the two writes of the finished report (the rebuild's first):
            # what the rebuild found stands for both.
            found = await _finished_report(store, rebuild, record.id)
            ended = found if found is not None else ended
        with contextlib.suppress(OrchestratorError):
            await store.update_job(record.id, reproduction=ended)
            settled.append(record.id)
    return settled


async def _finished_report(store: Store, rebuild: str, original: str) -> dict[str, Any] | None:
    """The rebuild's own report of its reproduction of ``original``, when it had finished."""
    record = await store.get_job(rebuild)
    report = record.reproduction if record is not None else None
    if not report or report.get("original") != original or report.get("rebuild") != rebuild:
        return None
    return dict(report) if report.get("state") in ("identical", "differs") else None
