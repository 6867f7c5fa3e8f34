"""The app's resources, each one cleanup context: made on start-up, closed on shutdown in
reverse order (lock, disk, store, repositories, engine, janitor, registry).

On shutdown the registry stops first: running builds are left running for the next start (or
killed and removed, or waited for: ``on_stop``), then every SSE stream ends (clients resume with
``Last-Event-ID``); then the janitor removes what a build could not. On start-up the registry
adopts the builds an earlier process left before anything reaps them: the engine reaps all but
builds, the janitor holds off until the registry has recovered, and the builds no job claims are
reaped after that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .. import kinds
from ..backend import Backend
from ..build.runner import INSTANCE_LABEL
from ..catalog import workers as catalog
from ..catalog.installed import WorkerStore
from ..catalog.model_store import ModelStore
from ..engine import Engine
from ..jobs.janitor import Janitor, any_live, owned_by_jobs, owned_by_readers
from ..jobs.registry import Registry
from ..kinds import reproduce
from ..narration.bus import Bus
from ..repo import Repositories
from ..storage.disk import DataDisk
from ..storage.lock import hold_data_dir
from ..storage.store import Store
from .keys import (
    BACKEND,
    BUS,
    CATALOG,
    DISK,
    ENGINE,
    JANITOR,
    METRICS,
    MODELS,
    REGISTRY,
    REPOS,
    SETTINGS,
    STORE,
    WORKERS,
)

Context = Callable[[web.Application], AsyncIterator[None]]


def contexts(backend: Backend | None) -> list[Context]:
    """Every resource's context, in the order they start (``backend``: the engine's, when given
    instead of the one the settings name)."""
    return [
        lock_ctx,
        disk_ctx,
        store_ctx,
        repos_ctx,
        engine_ctx(backend),
        janitor_ctx,
        registry_ctx,
    ]


async def lock_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    with hold_data_dir(settings.data_dir, settings.instance_id):
        yield


async def disk_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[DISK] = DataDisk(
        settings.data_dir,
        min_free_bytes=settings.disk_min_free_bytes,
        reserve_bytes=settings.disk_reserve_bytes,
        poll_s=settings.disk_poll_s,
    )
    await app[DISK].start()
    yield
    await app[DISK].close()


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    app[STORE] = await Store.open(app[SETTINGS].data_dir / "orchestrator.db")
    app[STORE].on_out_of_space(app[DISK].make_room)
    yield
    await app[STORE].close()


async def repos_ctx(app: web.Application) -> AsyncIterator[None]:
    # Its key is made (or read) before any job can ask to publish.
    app[REPOS] = await Repositories.open(app[SETTINGS])
    yield
    await app[REPOS].close()


def engine_ctx(backend: Backend | None) -> Context:
    async def engine(app: web.Application) -> AsyncIterator[None]:
        opened = await Engine.open(app[SETTINGS], backend, app[METRICS], keep_builds=True)
        app[ENGINE] = opened
        app[BACKEND] = opened.backend
        yield
        await opened.close()

    return engine


async def janitor_ctx(app: web.Application) -> AsyncIterator[None]:
    # Between the engine and the registry: it stops after every job has (so nothing it
    # removes then is in use) and before the engine closes the daemon's client.
    def is_active(job_id: str) -> bool:
        # Live until the registry has adopted what it will: a sweep before that must not
        # take a build that an earlier process left running.
        registry = app.get(REGISTRY)
        return registry is None or registry.holds(job_id)

    settings = app[SETTINGS]
    runner = app[ENGINE].runner
    readers = runner.inspector.pool
    janitor = Janitor(
        app[BACKEND],
        {INSTANCE_LABEL: settings.instance_id},
        any_live(owned_by_jobs(is_active), owned_by_readers(readers.held if readers else ())),
        interval_s=settings.janitor_interval_s,
        grace_s=settings.janitor_grace_s,
        metrics=app[METRICS],
    )
    app[JANITOR] = janitor
    runner.unremoved = janitor.adopt
    if readers is not None:
        readers.unremoved = janitor.adopt
    janitor.start()
    yield
    runner.unremoved = None
    if readers is not None:
        readers.unremoved = None
    await janitor.close()


async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[BUS] = Bus(app[STORE])
    registry = Registry(
        settings,
        app[STORE],
        app[BUS],
        app[METRICS],
        app[DISK],
        adopts=app[BACKEND].supports_adopt,
    )
    app[REGISTRY] = registry
    await _register_kinds(app, registry)
    # makepkg reads the catalog's PKGBUILDs beside start-up, not before it: a few seconds of
    # containers that nothing needs to wait for (an install reads its PKGBUILD anyway).
    verifying = asyncio.create_task(
        catalog.verify(app[CATALOG], app[ENGINE].runner.inspector, settings)
    )
    await registry.start()
    # A reproduction a dead service left "running" (its rebuild is not queued again) failed.
    await reproduce.settle(app[STORE], registry.is_active)
    await app[ENGINE].reap_builds(registry.holds)
    yield
    verifying.cancel()
    await asyncio.gather(verifying, return_exceptions=True)
    # on_shutdown has stopped the registry already, so this call only waits for that. It
    # stays for a cleanup without a shutdown first (aiohttp runs none when start-up failed
    # after this context, and nothing makes a caller of app.cleanup() run one), so the
    # engine and the store below never close under running jobs.
    await registry.shutdown()


async def _register_kinds(app: web.Application, registry: Registry) -> None:
    settings = app[SETTINGS]
    app[CATALOG] = await catalog.load(settings.catalog)
    app[WORKERS] = WorkerStore(settings.workers_dir)
    app[MODELS] = ModelStore(settings.models_dir)
    services = kinds.Services(
        settings,
        app[ENGINE],
        registry.uploads,
        app[CATALOG],
        app[WORKERS],
        app[MODELS],
        app[REPOS],
        app[STORE],
    )
    for kind in kinds.make(services):
        registry.register(kind)


async def on_shutdown(app: web.Application) -> None:
    # Runs before aiohttp waits for open requests: end the builds and the SSE streams
    # first, or the streams would keep the server from stopping. This is the call that
    # stops the registry; the one in registry_ctx is a backstop.
    await app[REGISTRY].shutdown()
