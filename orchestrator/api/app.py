"""The aiohttp application: ``create_app(settings)``.

Each resource is one cleanup context (lock, store, engine, janitor, registry), so start-up and
shutdown run in one order and in reverse. On shutdown the registry stops first: running builds
are left running for the next start (or killed and removed, or waited for: ``on_stop``), then
every SSE stream ends (clients resume with ``Last-Event-ID``); then the janitor removes what a
build could not. On start-up the registry adopts the builds an earlier process left before
anything reaps them: the engine reaps all but builds, the janitor holds off until the registry
has recovered, and the builds no job claims are reaped after that.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from .. import kinds
from ..backend import Backend
from ..build.runner import INSTANCE_LABEL
from ..catalog import workers as catalog
from ..catalog.installed import WorkerStore
from ..catalog.model_store import ModelStore
from ..engine import Engine
from ..errors import InsecureBind
from ..jobs.janitor import Janitor, any_live, owned_by_jobs, owned_by_readers
from ..jobs.registry import Registry
from ..metrics import Metrics
from ..narration.bus import Bus
from ..settings import Settings
from ..storage.disk import DataDisk
from ..storage.lock import hold_data_dir
from ..storage.store import Store
from ..web import add_routes as add_dashboard
from .errors import error_response, errors_middleware
from .guard import (
    API_PREFIX,
    AccessLogger,
    cross_origin_middleware,
    harden_response,
    holds_token,
    host_middleware,
    host_name,
)
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
    SETTINGS,
    STORE,
    WORKERS,
)
from .routes import add_routes


def check_bind(settings: Settings) -> None:
    if settings.api_token is not None or settings.allow_unauthenticated:
        return
    host = settings.host
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InsecureBind(
            f"refusing to listen on {host} without ORCHESTRATOR_API_TOKEN: this service holds "
            "the Docker socket, so anyone who can reach it controls the host. Set a token, or "
            "bind to 127.0.0.1 (in a container published only on 127.0.0.1, "
            "ORCHESTRATOR_ALLOW_UNAUTHENTICATED=true says so)."
        )


def _auth_middleware(token: str) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX) and not holds_token(request, token):
            response = error_response(401, "unauthorized", "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    return auth


def create_app(settings: Settings, *, backend: Backend | None = None) -> web.Application:
    # Outermost first: refusals are JSON, and a cross-origin request is refused whatever its
    # token.
    middlewares = [errors_middleware, cross_origin_middleware]
    if settings.api_token is not None:
        middlewares.append(_auth_middleware(settings.api_token.get_secret_value()))
    else:
        allowed = frozenset(host_name(h) for h in settings.allowed_hosts)
        middlewares.append(host_middleware(allowed))
    # The access logger is set here, not by whoever runs the app, so no runner logs tokens.
    app = web.Application(middlewares=middlewares, handler_args={"access_log_class": AccessLogger})
    app.on_response_prepare.append(harden_response)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()

    async def lock_ctx(app: web.Application) -> AsyncIterator[None]:
        with hold_data_dir(settings.data_dir, settings.instance_id):
            yield

    async def disk_ctx(app: web.Application) -> AsyncIterator[None]:
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
        app[STORE] = await Store.open(settings.data_dir / "orchestrator.db")
        app[STORE].on_out_of_space(app[DISK].make_room)
        yield
        await app[STORE].close()

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        engine = await Engine.open(settings, backend, app[METRICS], keep_builds=True)
        app[ENGINE] = engine
        app[BACKEND] = engine.backend
        yield
        await engine.close()

    async def janitor_ctx(app: web.Application) -> AsyncIterator[None]:
        # Between the engine and the registry: it stops after every job has (so nothing it
        # removes then is in use) and before the engine closes the daemon's client.
        def is_active(job_id: str) -> bool:
            # Live until the registry has adopted what it will: a sweep before that must not
            # take a build that an earlier process left running.
            registry = app.get(REGISTRY)
            return registry is None or registry.holds(job_id)

        readers = app[ENGINE].runner.inspector.pool
        janitor = Janitor(
            app[BACKEND],
            {INSTANCE_LABEL: settings.instance_id},
            any_live(owned_by_jobs(is_active), owned_by_readers(readers.held if readers else ())),
            interval_s=settings.janitor_interval_s,
            grace_s=settings.janitor_grace_s,
            metrics=app[METRICS],
        )
        app[JANITOR] = janitor
        runner = app[ENGINE].runner
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
        workers = await catalog.load(settings.catalog)
        app[CATALOG] = workers
        app[WORKERS] = WorkerStore(settings.workers_dir)
        app[MODELS] = ModelStore(settings.models_dir)
        services = kinds.Services(
            settings, app[ENGINE], registry.uploads, workers, app[WORKERS], app[MODELS]
        )
        for kind in kinds.make(services):
            registry.register(kind)
        # makepkg reads the catalog's PKGBUILDs beside start-up, not before it: a few seconds of
        # containers that nothing needs to wait for (an install reads its PKGBUILD anyway).
        verifying = asyncio.create_task(
            catalog.verify(workers, app[ENGINE].runner.inspector, settings)
        )
        await app[REGISTRY].start()
        await app[ENGINE].reap_builds(registry.holds)
        yield
        verifying.cancel()
        await asyncio.gather(verifying, return_exceptions=True)
        # on_shutdown has stopped the registry already, so this call only waits for that. It
        # stays for a cleanup without a shutdown first (aiohttp runs none when start-up failed
        # after this context, and nothing makes a caller of app.cleanup() run one), so the
        # engine and the store below never close under running jobs.
        await app[REGISTRY].shutdown()

    async def on_shutdown(app: web.Application) -> None:
        # Runs before aiohttp waits for open requests: end the builds and the SSE streams
        # first, or the streams would keep the server from stopping. This is the call that
        # stops the registry; the one in registry_ctx is a backstop.
        await app[REGISTRY].shutdown()

    app.cleanup_ctx.extend([lock_ctx, disk_ctx, store_ctx, engine_ctx, janitor_ctx, registry_ctx])
    app.on_shutdown.append(on_shutdown)

    add_routes(app)
    add_dashboard(app)  # /, /jobs/{id}, /submit, /catalog and /assets/: the browser's view
    return app
