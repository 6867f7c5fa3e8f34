"""A finished job's packages: list them, download one."""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from ..provenance import FILE_NAME
from ..storage.archive import is_package_name
from .keys import ENGINE, REGISTRY
from .wire import Artifact, ArtifactList, artifact_url, respond

_NOT_PLAIN = re.compile(r"[^A-Za-z0-9._+@-]")


def content_disposition(name: str) -> str:
    """``attachment`` naming ``name`` so that every client saves it under that name or a plain
    one. The build chose the name: a ``"`` or ``;`` in it would end the quoted ``filename`` early
    (``a";.pkg.tar`` saved as ``a``), and non-ASCII in a header is read as Latin-1. So the plain
    ``filename`` keeps only makepkg's own characters (others become ``_``) and ``filename*``
    (RFC 6266, which browsers and ``curl -J`` prefer) carries the exact name, percent-encoded.
    """
    plain = _NOT_PLAIN.sub("_", name)
    exact = quote(name, safe="", errors="surrogateescape")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}"


async def list_artifacts(request: web.Request) -> web.Response:
    record = await request.app[REGISTRY].get(request.match_info["job_id"])
    folder = request.app[ENGINE].runner.artifact_dir(record.id)
    items = []
    for name in record.artifacts:
        path = folder / name
        if path.is_file():
            size_bytes = path.stat().st_size
            items.append(
                Artifact(name=name, size_bytes=size_bytes, url=artifact_url(record.id, name))
            )
    return respond(ArtifactList(job_id=record.id, status=record.status, artifacts=items))


async def get_artifact(request: web.Request) -> web.StreamResponse:
    record = await request.app[REGISTRY].get(request.match_info["job_id"])
    name = request.match_info["name"]
    # Only names the job recorded are served: no path from the request reaches the disk.
    if name not in record.artifacts or not is_package_name(name):
        raise web.HTTPNotFound(text=f"job {record.id} has no artifact named {name!r}")
    path = request.app[ENGINE].runner.artifact_dir(record.id) / name
    if not path.is_file():
        raise web.HTTPNotFound(text=f"artifact {name!r} is no longer on disk")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": content_disposition(name),
        },
    )


async def get_provenance(request: web.Request) -> web.StreamResponse:
    record = await request.app[REGISTRY].get(request.match_info["job_id"])
    # The file as signed when the build ended: served as it is, never made again.
    path = request.app[ENGINE].runner.artifact_dir(record.id) / FILE_NAME
    if not path.is_file():
        raise web.HTTPNotFound(text=f"job {record.id} has no provenance")
    return web.FileResponse(path, headers={"Content-Type": "application/json"})
