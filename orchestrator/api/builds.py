"""POST /v1/builds: an uploaded build directory becomes a queued job, or a clear refusal.

Everything is checked before the job exists: size (while the body streams in), archive safety,
the PKGBUILD (read by makepkg in a sandbox), the variant. A refusal leaves nothing on disk.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aiohttp import web

from ..build import reproduce, srcinfo
from ..build.srcinfo import SrcInfo
from ..build.variants import VariantPlan, plan
from ..errors import ArchiveTooLarge, InsufficientStorage, InvalidInput
from ..jobs import Submission
from ..jobs.registry import Registry
from ..kinds import parse_cache
from ..settings import MiB
from ..storage import archive
from ..storage.disk import out_of_space
from .keys import BACKEND, DISK, ENGINE, REGISTRY, SETTINGS
from .routes import TAR_TYPES, url
from .wire import BuildSubmitted, DryRun, job_links, respond

ACCEPTED_TYPES = frozenset(TAR_TYPES)
_CHUNK = 256 * 1024


async def _receive(request: web.Request, body: IO[bytes], limit: int, timeout_s: float) -> None:
    """The whole body into ``body``, or 413 past ``limit`` and 408 past ``timeout_s``."""
    received = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(_CHUNK):
                received += len(chunk)
                if received > limit:
                    raise ArchiveTooLarge(f"upload is larger than {limit} bytes", limit_bytes=limit)
                body.write(chunk)
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"the upload took longer than {timeout_s:g} s (ORCHESTRATOR_UPLOAD_TIMEOUT_S)"
        ) from None
    if received == 0:
        raise InvalidInput("the request body is empty: send a tar of the build directory")
    body.seek(0)


def parse_flag(raw: str | None, name: str) -> bool:
    if raw is None or raw.lower() in ("", "0", "false", "no"):
        return False
    if raw.lower() in ("1", "true", "yes"):
        return True
    raise InvalidInput(f"{name} must be true or false, not {raw!r}")


@dataclass(frozen=True, slots=True)
class _Asked:
    """What the query asks for."""

    variant: VariantPlan
    dry_run: bool
    cache: bool


async def _asked(request: web.Request) -> _Asked:
    """The query and the headers, checked before the upload is read (the "build" kind checks
    the query again, with the rest, when it takes the job)."""
    settings = request.app[SETTINGS]
    request.app[REGISTRY].parse_timeout(request.query.get("timeout_s"))
    dry_run = parse_flag(request.query.get("dry_run"), "dry_run")
    cache = parse_cache(request.query.get("cache"))
    gpu_runtime = await request.app[BACKEND].gpu_runtime()
    variant = plan(request.query.get("variant", "cpu"), settings, gpu_runtime=gpu_runtime)
    # aiohttp reports a missing Content-Type as application/octet-stream; a page can send a
    # body with none and no CORS preflight, so only a type it cannot send without one is taken.
    if "Content-Type" not in request.headers or request.content_type not in ACCEPTED_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text="send the build directory as a tar: Content-Type application/x-tar or "
            "application/gzip (e.g. tar -cz -C DIR . | curl --data-binary @- "
            "-H 'Content-Type: application/gzip' ...)"
        )
    limit = settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ArchiveTooLarge(f"upload is larger than {limit} bytes", limit_bytes=limit)
    return _Asked(variant, dry_run, cache)


async def _unpack(request: web.Request, job_id: str, body: IO[bytes], dest: Path) -> None:
    """The upload received into ``body`` and unpacked into ``dest``, within the room there is."""
    settings = request.app[SETTINGS]
    uploads = request.app[REGISTRY].uploads
    await _receive(request, body, settings.max_upload_bytes, settings.upload_timeout_s)
    # Room is claimed only now, with the whole body here (a client that sends slowly holds
    # none), and before unpacking, so that uploads arriving together cannot all take the
    # last of it: the queue's share, and what the data disk has above its minimum (an
    # upload must never be what fills it, stopping everyone's builds).
    queue_cap = await uploads.claim(job_id, settings.max_build_dir_bytes)
    others = uploads.unpacking_bytes - queue_cap
    disk_room = await asyncio.to_thread(request.app[DISK].room_bytes) - others
    cap_bytes = min(queue_cap, disk_room)
    try:
        if cap_bytes <= 0:
            raise ArchiveTooLarge("no room", limit_bytes=0)
        await asyncio.to_thread(archive.extract, body, dest, max_bytes=cap_bytes)
    except ArchiveTooLarge as exc:
        if cap_bytes == disk_room < settings.max_build_dir_bytes:
            raise InsufficientStorage(
                f"the data disk has room for {max(disk_room, 0) // MiB} MiB more above its "
                "minimum free space (ORCHESTRATOR_DISK_MIN_FREE_BYTES), and this upload "
                "unpacks to more"
            ) from exc
        if cap_bytes < settings.max_build_dir_bytes:  # over the queue's share, not its own
            raise InsufficientStorage(uploads.exceeded()) from exc
        raise
    await uploads.settle(job_id, dest)


def _dry_run(info: SrcInfo, dest: Path, asked: _Asked, warnings: list[str]) -> web.Response:
    dry = DryRun.model_validate(
        {
            "srcinfo": info.text,
            **info.summary(),
            "variant": asked.variant.variant.value,
            "problems": srcinfo.problems(info, dest),
            "warnings": warnings,
        }
    )
    return respond(dry)


async def create_build(request: web.Request) -> web.Response:
    """A build job; or, with ``dry_run=true``, only what makepkg reads (200, no job)."""
    asked = await _asked(request)
    registry = request.app[REGISTRY]
    runner = request.app[ENGINE].runner
    registry.check_room()
    job_id = registry.new_job_id()
    dest = request.app[SETTINGS].work_dir / (f"dry-run-{job_id}" if asked.dry_run else job_id)
    body = archive.spooled()
    try:
        await _unpack(request, job_id, body, dest)
        image = asked.variant.image
        info = await runner.inspector.read(dest, image, runner.inspect_labels(job_id))
        warnings = [
            *info.warnings,
            *asked.variant.warnings,
            *await runner.image_warnings(info, image),
        ]
        if asked.dry_run:
            return _dry_run(info, dest, asked, warnings)
        # Kept as submitted, for a reproduce job to build again (removed with its packages).
        await asyncio.to_thread(reproduce.keep_inputs, body, runner.artifact_dir(job_id))
        query = dict(request.query)
        submission = Submission(job_id, query, query, upload=dest, srcinfo=info)
        record = (await registry.submit("build", submission)).record
    except OSError as exc:
        await _discard(registry, job_id, dest, runner.artifact_dir(job_id))
        if out_of_space(exc):
            raise InsufficientStorage(f"the data disk is full: {exc}") from exc
        raise
    except BaseException:
        await _discard(registry, job_id, dest, runner.artifact_dir(job_id))
        raise
    finally:
        body.close()
        if asked.dry_run:
            await _discard(registry, job_id, dest)
    submitted = BuildSubmitted(
        job_id=record.id,
        status=record.status,
        pkgname=record.pkgname,
        pkgver=record.pkgver,
        pkgnames=list(info.pkgnames),
        variant=record.variant,
        cache=asked.cache and request.app[ENGINE].caches.enabled,
        warnings=warnings,
        **job_links(record.id),
    )
    return respond(submitted, status=201, headers={"Location": url("get_job", job_id=record.id)})


async def _discard(
    registry: Registry, job_id: str, dest: Path, artifact_dir: Path | None = None
) -> None:
    """What a refused upload left: its sources, its kept inputs (its job was never made)."""
    await asyncio.to_thread(shutil.rmtree, dest, True)
    if artifact_dir is not None:
        await asyncio.to_thread(shutil.rmtree, artifact_dir, True)
    registry.uploads.release(job_id)
