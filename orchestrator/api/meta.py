"""Health, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import OrchestratorError
from ..settings import Settings
from .guard import holds_token
from .keys import BACKEND, DISK, METRICS, REGISTRY, SETTINGS, STORE
from .openapi import document
from .wire import DiskHealth, Health, StoreHealth, respond


async def health(request: web.Request) -> web.Response:
    """Probes need no token, so without it the answer names only what is wrong, in fixed
    words: the daemon's address, the data directory and the store's errors are the host's."""
    settings = request.app[SETTINGS]
    backend = request.app[BACKEND]
    docker_ok = True
    images: dict[str, bool] = {}
    error: str | None = None
    try:
        await backend.ping()
        for variant, image in (("cpu", settings.image_cpu), ("cuda", settings.image_cuda)):
            images[variant] = await backend.image_present(image)
    except OrchestratorError as exc:
        docker_ok, error = False, str(exc)
    disk, store_failure = request.app[DISK], request.app[STORE].failure
    healthy = docker_ok and images.get("cpu", False) and disk.full is None and not store_failure
    status = 200 if healthy else 503
    if not holds_token(request, _token(settings)):
        body = Health(status="ok" if healthy else "unavailable")
        if not healthy:
            body.error = _plain_problem(docker_ok, images, disk.full, store_failure)
        return respond(body, status=status)
    body = Health(
        status="ok" if healthy else "unavailable",
        docker=docker_ok,
        images=images,
        store=StoreHealth(ok=store_failure is None, error=store_failure),
        disk=DiskHealth(
            path=str(disk.path),
            free_bytes=await asyncio.to_thread(disk.free_bytes),
            full=disk.full,
        ),
        queue_length=request.app[REGISTRY].queue_length,
    )
    if error:
        body.error = error
    elif not images.get("cpu"):
        body.error = f"build image {settings.image_cpu} is missing: run images/bootstrap"
    elif disk.full is not None:
        body.error = f"the data disk is full ({disk.full})"
    elif store_failure is not None:
        body.error = f"the job store cannot write: {store_failure}"
    return respond(body, status=status)


def _token(settings: Settings) -> str | None:
    return None if settings.api_token is None else settings.api_token.get_secret_value()


def _plain_problem(
    docker_ok: bool, images: dict[str, bool], disk_full: str | None, store_failure: str | None
) -> str:
    if not docker_ok:
        return "the container engine cannot be reached"
    if not images.get("cpu"):
        return "the build image is missing"
    if disk_full is not None:
        return "the data disk is full"
    if store_failure is not None:
        return "the job store cannot write"
    return "not ready"


async def metrics(request: web.Request) -> web.Response:
    counts = await request.app[STORE].count_by_status()
    body = request.app[METRICS].render(counts)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
