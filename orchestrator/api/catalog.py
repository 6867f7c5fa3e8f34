"""The worker catalog, installed workers and downloaded models."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..catalog.workers import CatalogEntry
from ..errors import NotFound, VariantRefused
from ..settings import Settings
from .keys import CATALOG, MODELS, REGISTRY, SETTINGS, WORKERS
from .routes import url
from .wire import (
    Catalog,
    CatalogWorker,
    CatalogWorkerDetail,
    DownloadedModel,
    InstalledWorker,
    ModelList,
    Removed,
    WorkerList,
    respond,
)


def _summary(entry: CatalogEntry, settings: Settings) -> dict[str, Any]:
    """An entry's metadata and, so a client need not offer what would fail, why an install of
    it would be refused: the same check the install makes (whether the daemon can hand out GPUs
    changes only its warnings, so the daemon is not asked)."""
    refused: str | None = None
    try:
        entry.check_runs_here(settings, gpu_runtime=False)
    except VariantRefused as exc:
        refused = str(exc)
    return {**entry.summary(), "refused": refused}


async def list_catalog(request: web.Request) -> web.Response:
    catalog, settings = request.app[CATALOG], request.app[SETTINGS]
    return respond(
        Catalog(
            workers=[
                CatalogWorker.model_validate(_summary(e, settings))
                for e in catalog.entries.values()
            ],
            # Entries that did not validate were skipped; say which and why.
            problems=[str(p) for p in catalog.problems],
            # Until true, makepkg is still reading the PKGBUILDs: more problems may appear.
            checked=catalog.checked,
        )
    )


async def get_catalog_worker(request: web.Request) -> web.Response:
    entry = request.app[CATALOG].get(request.match_info["worker_id"])
    detail = CatalogWorkerDetail.model_validate(
        {
            **_summary(entry, request.app[SETTINGS]),
            "sources": sorted(entry.sources),
            "pkgbuild_url": url("get_catalog_pkgbuild", worker_id=entry.id),
        }
    )
    return respond(detail)


async def get_catalog_pkgbuild(request: web.Request) -> web.Response:
    entry = request.app[CATALOG].get(request.match_info["worker_id"])
    return web.Response(text=entry.pkgbuild, content_type="text/plain")


async def list_workers(request: web.Request) -> web.Response:
    workers = await asyncio.to_thread(request.app[WORKERS].list)
    return respond(
        WorkerList(workers=[InstalledWorker.model_validate(w.to_dict()) for w in workers])
    )


async def get_worker(request: web.Request) -> web.Response:
    worker_id = request.match_info["worker_id"]
    worker = await asyncio.to_thread(request.app[WORKERS].get, worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id!r} is not installed")
    return respond(InstalledWorker.model_validate(worker.to_dict()))


async def delete_worker(request: web.Request) -> web.Response:
    worker_id = request.match_info["worker_id"]
    request.app[REGISTRY].ensure_idle(f"worker:{worker_id}")
    if not await asyncio.to_thread(request.app[WORKERS].remove, worker_id):
        raise NotFound(f"worker {worker_id!r} is not installed")
    return respond(Removed(removed=worker_id))


async def list_models(request: web.Request) -> web.Response:
    models = await asyncio.to_thread(request.app[MODELS].list)
    return respond(ModelList(models=[DownloadedModel.model_validate(m.to_dict()) for m in models]))


async def delete_model(request: web.Request) -> web.Response:
    models = request.app[MODELS]
    name = models.check_name(request.match_info["name"])
    request.app[REGISTRY].ensure_idle(f"model:{name}")
    if not await asyncio.to_thread(models.remove, name):
        raise NotFound(f"no model named {name!r}")
    return respond(Removed(removed=name))
