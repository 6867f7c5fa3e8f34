"""The worker catalog, installed workers and downloaded models."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..errors import NotFound
from .keys import OPERATIONS


async def list_catalog(request: web.Request) -> web.Response:
    catalog = request.app[OPERATIONS].catalog
    return web.json_response(
        {
            "workers": [entry.summary() for entry in catalog.entries.values()],
            # Entries that did not validate were skipped; say which and why.
            "problems": [str(p) for p in catalog.problems],
            # Until true, makepkg is still reading the PKGBUILDs: more problems may appear.
            "checked": catalog.checked,
        }
    )


async def get_catalog_worker(request: web.Request) -> web.Response:
    entry = request.app[OPERATIONS].catalog.get(request.match_info["worker_id"])
    body = entry.summary()
    body["sources"] = sorted(entry.sources)
    body["pkgbuild_url"] = f"/v1/catalog/workers/{entry.id}/pkgbuild"
    return web.json_response(body)


async def get_catalog_pkgbuild(request: web.Request) -> web.Response:
    entry = request.app[OPERATIONS].catalog.get(request.match_info["worker_id"])
    return web.Response(text=entry.pkgbuild, content_type="text/plain")


async def list_workers(request: web.Request) -> web.Response:
    workers = await asyncio.to_thread(request.app[OPERATIONS].workers.list)
    return web.json_response({"workers": [w.to_dict() for w in workers]})


async def get_worker(request: web.Request) -> web.Response:
    worker_id = request.match_info["worker_id"]
    worker = await asyncio.to_thread(request.app[OPERATIONS].workers.get, worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id!r} is not installed")
    return web.json_response(worker.to_dict())


async def delete_worker(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    worker_id = request.match_info["worker_id"]
    operations.ensure_idle(f"worker:{worker_id}")
    if not await asyncio.to_thread(operations.workers.remove, worker_id):
        raise NotFound(f"worker {worker_id!r} is not installed")
    return web.json_response({"removed": worker_id})


async def list_models(request: web.Request) -> web.Response:
    models = await asyncio.to_thread(request.app[OPERATIONS].models.list)
    return web.json_response({"models": [m.to_dict() for m in models]})


async def delete_model(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    name = operations.models.check_name(request.match_info["name"])
    operations.ensure_idle(f"model:{name}")
    if not await asyncio.to_thread(operations.models.remove, name):
        raise NotFound(f"no model named {name!r}")
    return web.json_response({"removed": name})
