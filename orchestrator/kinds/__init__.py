"""The job kinds the service runs, one module each; ``make`` is where each is registered."""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog.installed import WorkerStore
from ..catalog.model_store import ModelStore
from ..catalog.workers import Catalog
from ..engine import Engine
from ..jobs import Kind
from ..settings import Settings
from ..storage.uploads import UploadBudget
from ._body import parse_cache
from .build import BuildKind
from .model_download import ModelDownloadKind
from .worker_install import WorkerInstallKind


@dataclass(frozen=True, slots=True)
class Services:
    """What the kinds need from the service."""

    settings: Settings
    engine: Engine
    uploads: UploadBudget
    catalog: Catalog
    workers: WorkerStore
    models: ModelStore


def make(services: Services) -> list[Kind]:
    """Every kind, in the order ``POST /v1/jobs`` lists them."""
    s = services
    return [
        BuildKind(s.settings, s.engine, s.uploads),
        WorkerInstallKind(s.settings, s.engine, s.catalog, s.workers),
        ModelDownloadKind(s.settings, s.models),
    ]


__all__ = [
    "BuildKind",
    "ModelDownloadKind",
    "Services",
    "WorkerInstallKind",
    "make",
    "parse_cache",
]
