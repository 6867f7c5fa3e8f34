"""A build's provenance, made once it has succeeded and kept beside its packages: signed then,
so what ``/v1/jobs/{id}/provenance`` serves is fixed."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..build.runner import Runner
from ..build.srcinfo import SrcInfo, makepkg_name
from ..build.variants import plan
from ..errors import OrchestratorError
from ..jobs import JobResult, Sink, Work, failed_after
from ..jobs.cancel import CancelToken
from ..jobs.status import JobStatus
from ..narration.events import Action, Event, Level
from ..provenance import FILE_NAME, Facts, declared_sources, envelope, sha256_file, statement
from ..settings import Settings
from ..storage.store import JobRecord
from .signing import Signer

_SUM_KEYS = ("sha256sums", "sha512sums", "sha384sums", "sha224sums", "sha1sums", "md5sums")


def provenance_path(runner: Runner, job_id: str) -> Path:
    return runner.artifact_dir(job_id) / FILE_NAME


def then_prove(
    work: Work,
    record: JobRecord,
    info: SrcInfo | None,
    runner: Runner,
    signer: Signer,
    settings: Settings,
) -> Work:
    """``work``, then its signed provenance written if it succeeded. Provenance that cannot be
    made fails the job, saying so (its packages stay to download)."""

    async def prove(sink: Sink, token: CancelToken) -> JobResult:
        started_s = record.started_at or time.time()  # an adopted build's, from its record
        result = await work(sink, token)
        if result.status is not JobStatus.SUCCEEDED or not result.artifacts:
            return result
        submitted = record.request.get("submitted")
        if not isinstance(submitted, dict):
            # Submitted before the service made provenance (adopted across the upgrade): what
            # was submitted is not known any more, and a statement must not guess it.
            await sink([Event(Action.WARNING, "📜 No provenance: submitted before it was kept")])
            return result
        try:
            image, labels = await _image(runner, record, settings)
            facts = Facts(
                job_id=record.id,
                builder_id=settings.instance_id,
                version=__version__,
                variant=record.variant or "cpu",
                parameters={
                    "cache": record.cache_asked,
                    "publish": record.request.get("publish") is True,
                },
                # Hashed when it was submitted, as submitted (kept in its record).
                submitted={str(name): str(sha) for name, sha in submitted.items()},
                sources=_sources(info),
                image=image,
                image_labels=labels,
                packages=await asyncio.to_thread(_digests, result.artifacts),
                exit_code=result.exit_code,
                started_s=started_s,
                finished_s=time.time(),
                cache=result.cache,
            )
            await asyncio.to_thread(_write, provenance_path(runner, record.id), facts, signer)
        except (OrchestratorError, OSError) as exc:
            message = f"could not sign its provenance: {exc}"
            await sink([Event(Action.WARNING, f"📜 {message}", Level.ERROR)])
            return failed_after(result, message)
        return result

    return prove


async def _image(
    runner: Runner, record: JobRecord, settings: Settings
) -> tuple[str, Mapping[str, str]]:
    backend = runner.backend
    variant = plan(record.variant or "cpu", settings, gpu_runtime=await backend.gpu_runtime())
    return variant.image, await backend.image_labels(variant.image)


def _sources(info: SrcInfo | None) -> list[dict[str, Any]]:
    if info is None:
        return []
    sums = {key: info.per_arch(key) for key in (*_SUM_KEYS, "b2sums")}
    return declared_sources([makepkg_name(s) for s in info.sources()], sums)


def _digests(packages: Sequence[Path]) -> dict[str, str]:
    return {package.name: sha256_file(package) for package in packages}


def _write(path: Path, facts: Facts, signer: Signer) -> None:
    signed = envelope(statement(facts), signer.fingerprint, signer.sign_bytes)
    staged = path.with_name(f".new-{path.name}")
    staged.write_text(json.dumps(signed, indent=2) + "\n")
    os.replace(staged, path)
