"""What the route table (``routes.py``) is made of: a route, its parameters and its bodies.

Light on purpose, as the table is: a handler, and a model that would load the service to build
(``wire.Operation``, made from the kinds), are named as ``"module.name"`` under
``orchestrator.api`` and looked up only when the router or the document needs them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

SCHEMA_REF = "#/components/schemas/{model}"
TEXT = {"type": "string"}


def resolve(name: str) -> Any:
    """``"module.name"`` under ``orchestrator.api``: a handler, or a model built on demand."""
    module_name, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(f"{__package__}.{module_name}"), attribute)


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # path, query or header
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Body:
    """An answer or a request body: a model as JSON (or the name of one, for ``resolve``), or
    any of ``media`` types with ``schema`` (none at all: no body)."""

    description: str
    model: type[BaseModel] | str | None = None
    media: tuple[str, ...] = ()
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string", "format": "binary"})
    headers: tuple[str, ...] = ()  # response headers it always has
    extra: dict[str, Any] = field(default_factory=dict)  # more for its media type object

    def json_model(self) -> type[BaseModel] | None:
        """Its model, looked up if it is named."""
        model: type[BaseModel] | None = (
            resolve(self.model) if isinstance(self.model, str) else self.model
        )
        return model


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: what the router serves and what the OpenAPI document says of it."""

    operation_id: str  # snake_case: a generated client's function name
    tag: str  # its group in the document and in a generated client
    method: str
    path: str
    handler: str  # "module.function" under ``orchestrator.api``, resolved by ``add_routes``
    summary: str
    answers: dict[int, Body | str]
    params: tuple[Param, ...] = ()
    body: Body | None = None


def json_body(model: type[BaseModel] | str, description: str, *headers: str) -> Body:
    return Body(description, model, headers=headers)


def binary(description: str, *media: str) -> Body:
    return Body(description, media=media)


def text(description: str) -> Body:
    return Body(description, media=("text/plain",), schema=TEXT)
