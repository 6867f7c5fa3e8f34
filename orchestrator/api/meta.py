"""Health, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import OrchestratorError
from .keys import BACKEND, DISK, METRICS, REGISTRY, SETTINGS, STORE
from .openapi import document
from .wire import DiskHealth, Health, StoreHealth, respond


async def health(request: web.Request) -> web.Response:
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
    return respond(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    counts = await request.app[STORE].count_by_status()
    body = request.app[METRICS].render(counts)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
