"""What the kinds need from the service."""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog.installed import WorkerStore
from ..catalog.model_store import ModelStore
from ..catalog.workers import Catalog
from ..engine import Engine
from ..repo import Repositories
from ..settings import Settings
from ..storage.store import Store
from ..storage.uploads import UploadBudget


@dataclass(frozen=True, slots=True)
class Services:
    """What the kinds need from the service."""

    settings: Settings
    engine: Engine
    uploads: UploadBudget
    catalog: Catalog
    workers: WorkerStore
    models: ModelStore
    repos: Repositories
    store: Store
