"""The job kinds the service runs, one module each; ``KINDS`` is where each is registered.

Each kind declares its request's model; the JSON ones, together, are ``Operation``: what
``POST /v1/jobs`` takes and the OpenAPI document describes (``api.wire.Operation``).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Protocol, Union

from pydantic import BaseModel, Field, RootModel

from ..jobs import Kind
from ._body import parse_cache
from ._services import Services
from .build import Build, BuildKind
from .model_download import ModelDownload, ModelDownloadKind
from .reproduce import Reproduce, ReproduceKind
from .worker_install import WorkerInstall, WorkerInstallKind


class Declared(Protocol):
    """A kind's class: its name, its request's model, and how it is made."""

    @property
    def name(self) -> str: ...

    @property
    def upload(self) -> bool: ...

    @property
    def request(self) -> type[BaseModel]: ...

    def of(self, services: Services) -> Kind: ...


# In the order POST /v1/jobs lists them.
KINDS: tuple[Declared, ...] = (BuildKind, WorkerInstallKind, ModelDownloadKind, ReproduceKind)


def make(services: Services) -> list[Kind]:
    """Every kind, made for this service."""
    return [kind.of(services) for kind in KINDS]


def names(*, upload: bool = False) -> list[str]:
    """The names of the kinds whose request is (or is not) an upload."""
    return [kind.name for kind in KINDS if kind.upload is upload]


@functools.cache
def operation() -> type[RootModel[Any]]:
    """The JSON kinds' requests as one model, told apart by ``operation``."""
    requests = tuple(kind.request for kind in KINDS if not kind.upload)
    # A union is built at run time from the kinds, so the type checker cannot follow it.
    union: Any = Union[requests] if len(requests) > 1 else requests[0]  # noqa: UP007
    if len(requests) > 1:
        union = Annotated[union, Field(discriminator="operation")]

    class Operation(RootModel[union]):
        """An operation to run as a job."""

    return Operation


__all__ = [
    "KINDS",
    "Build",
    "BuildKind",
    "Declared",
    "ModelDownload",
    "ModelDownloadKind",
    "Reproduce",
    "ReproduceKind",
    "Services",
    "WorkerInstall",
    "WorkerInstallKind",
    "make",
    "names",
    "operation",
    "parse_cache",
]
