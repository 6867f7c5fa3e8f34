"""Typed application keys: how handlers reach the app's resources."""

from __future__ import annotations

from aiohttp import web

from ..backend import Backend
from ..catalog.installed import WorkerStore
from ..catalog.model_store import ModelStore
from ..catalog.workers import Catalog
from ..engine import Engine
from ..jobs.janitor import Janitor
from ..jobs.registry import Registry
from ..metrics import Metrics
from ..narration.bus import Bus
from ..repo import Repositories
from ..settings import Settings
from ..storage.disk import DataDisk
from ..storage.store import Store

SETTINGS = web.AppKey("settings", Settings)
BACKEND = web.AppKey("backend", Backend)
STORE = web.AppKey("store", Store)
DISK = web.AppKey("disk", DataDisk)
ENGINE = web.AppKey("engine", Engine)
BUS = web.AppKey("bus", Bus)
REGISTRY = web.AppKey("registry", Registry)
METRICS = web.AppKey("metrics", Metrics)
CATALOG = web.AppKey("catalog", Catalog)
WORKERS = web.AppKey("workers", WorkerStore)
MODELS = web.AppKey("models", ModelStore)
JANITOR = web.AppKey("janitor", Janitor)
REPOS = web.AppKey("repos", Repositories)
