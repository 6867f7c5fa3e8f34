"""POST /v1/builds: an uploaded build directory becomes a queued job, or a clear refusal.

Everything is checked before the job exists: size (while the body streams in), archive safety,
the PKGBUILD (statically), the variant. A refusal leaves nothing on disk.
"""

from __future__ import annotations

import asyncio
import shutil

from aiohttp import web

from .. import archive, pkgbuild
from ..disk import out_of_space
from ..errors import ArchiveTooLarge, InsufficientStorage, InvalidInput
from ..variants import plan
from .keys import BACKEND, REGISTRY, SETTINGS

ACCEPTED_TYPES = frozenset(
    {
        "application/x-tar",
        "application/tar",
        "application/gzip",
        "application/x-gzip",
        "application/octet-stream",
    }
)
_CHUNK = 256 * 1024


def job_links(job_id: str) -> dict[str, str]:
    return {"job_url": f"/v1/jobs/{job_id}", "sse_url": f"/v1/jobs/{job_id}/stream"}


def parse_timeout(raw: str | None, default_s: float, max_s: float) -> float:
    if raw is None or raw == "":
        return default_s
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"timeout_s must be a number of seconds, not {raw!r}") from None
    if not 0 < value <= max_s:
        raise InvalidInput(f"timeout_s must be more than 0 and at most {max_s:g}")
    return value


async def create_build(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    registry = request.app[REGISTRY]
    variant_name = request.query.get("variant", "cpu")
    timeout_s = parse_timeout(
        request.query.get("timeout_s"), settings.default_timeout_s, settings.max_timeout_s
    )
    variant = plan(variant_name, settings, gpu_runtime=await request.app[BACKEND].gpu_runtime())

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

    registry.check_room()
    job_id = registry.new_job_id()
    dest = settings.work_dir / job_id
    body = archive.spooled()
    # The queue's share of the disk is claimed before unpacking, so that uploads arriving
    # together cannot all take the last of it.
    cap_bytes = registry.uploads.claim(job_id, settings.max_build_dir_bytes)
    try:
        received = 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received > limit:
                raise ArchiveTooLarge(f"upload is larger than {limit} bytes", limit_bytes=limit)
            body.write(chunk)
        if received == 0:
            raise InvalidInput("the request body is empty: send a tar of the build directory")
        body.seek(0)
        try:
            await asyncio.to_thread(archive.extract, body, dest, max_bytes=cap_bytes)
        except ArchiveTooLarge as exc:
            if cap_bytes < settings.max_build_dir_bytes:  # over the queue's share, not its own
                raise InsufficientStorage(registry.uploads.exceeded()) from exc
            raise
        await registry.uploads.settle(job_id, dest)
        info = await asyncio.to_thread(pkgbuild.parse_dir, dest)
        record = await registry.submit_build(job_id, dest, info, variant.variant.value, timeout_s)
    except OSError as exc:
        await asyncio.to_thread(shutil.rmtree, dest, True)
        registry.uploads.release(job_id)
        if out_of_space(exc):
            raise InsufficientStorage(f"the data disk is full: {exc}") from exc
        raise
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, dest, True)
        registry.uploads.release(job_id)
        raise
    finally:
        body.close()
    payload = {
        "job_id": record.id,
        "status": record.status.value,
        "pkgname": record.pkgname,
        "pkgver": record.pkgver,
        "variant": record.variant,
        "warnings": list(variant.warnings),
        **job_links(record.id),
    }
    return web.json_response(payload, status=201, headers={"Location": f"/v1/jobs/{record.id}"})
