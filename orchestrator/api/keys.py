"""Typed application keys: how handlers reach the app's resources."""

from __future__ import annotations

from aiohttp import web

from ..backend import Backend
from ..bus import Bus
from ..catalog import Catalog
from ..disk import DataDisk
from ..engine import Engine
from ..installed import WorkerStore
from ..janitor import Janitor
from ..metrics import Metrics
from ..models import ModelStore
from ..registry import Registry
from ..settings import Settings
from ..store import Store

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
