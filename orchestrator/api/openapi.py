"""The OpenAPI 3.1 document, generated: the route table below plus the JSON schemas of ``wire.py``.

Over the ~400 lines a module should have only because the route table is one literal of about
280 of them, kept in one piece to be read beside ``app.py``; the generator is the rest.

A route names its summary, parameters, request body and, per status, the model that answers
(a bare string is an ``Error`` with that description). What the guards add is derived from the
rules they enforce (``guard.py``): a ``401`` on everything under ``/v1/`` when a token is set,
the stream's ``?access_token=``, and a ``403`` on every operation (another site's page). Tests check
the table against the app's routes and real answers against the document.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    models_json_schema,
)

from .._version import __version__
from ..status import JobStatus
from .guard import API_PREFIX, STREAM_SUFFIX, TOKEN_PARAM
from .wire import (
    ArtifactList,
    BuildSubmitted,
    Cache,
    CacheList,
    Catalog,
    CatalogWorkerDetail,
    DryRun,
    Error,
    Event,
    Health,
    InstalledWorker,
    Job,
    JobList,
    JobSubmitted,
    ModelList,
    Operation,
    Removed,
    StreamEnd,
    WorkerList,
)

_REF = "#/components/schemas/{model}"
_TEXT = {"type": "string"}
_TAR_TYPES = ("application/x-tar", "application/gzip", "application/octet-stream")


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # path, query or header
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Body:
    """An answer or a request body: a model as JSON, or any of ``media`` types with ``schema``
    (none at all: no body)."""

    description: str
    model: type[BaseModel] | None = None
    media: tuple[str, ...] = ()
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string", "format": "binary"})
    headers: tuple[str, ...] = ()  # response headers it always has
    extra: dict[str, Any] = field(default_factory=dict)  # more for its media type object


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    summary: str
    answers: dict[int, Body | str]
    params: tuple[Param, ...] = ()
    body: Body | None = None


def _json(model: type[BaseModel], description: str, *headers: str) -> Body:
    return Body(description, model, headers=headers)


def _binary(description: str, *media: str) -> Body:
    return Body(description, media=media)


def _text(description: str) -> Body:
    return Body(description, media=("text/plain",), schema=_TEXT)


_JOB_ID = Param("job_id", "path")
_WORKER_ID = Param("worker_id", "path")
_CACHE_KEY = Param("key", "path", description="pkgbase:variant")
_CACHE = Param(
    "cache",
    "query",
    {"type": "string", "enum": ["on", "off"], "default": "on"},
    "off: build without the package's cache (it is neither read nor filled)",
)
_NO_JOB = "No such job"
_QUEUED = "Queued; Location names the job"
_UNAUTHORIZED = "Missing or wrong bearer token (when a token is configured)"
_CROSS_ORIGIN = (
    "A browser request from another site (Sec-Fetch-Site; for a change, also an Origin not this "
    "Host), other than the user following a link; error `cross_origin`"
)

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/builds",
        "Submit a build directory (a tar of the PKGBUILD and its local sources)",
        params=(
            Param(
                "variant",
                "query",
                {"type": "string", "enum": ["cpu", "cuda", "metal"], "default": "cpu"},
            ),
            Param("timeout_s", "query", {"type": "number", "exclusiveMinimum": 0}),
            Param(
                "dry_run",
                "query",
                {"type": "boolean", "default": False},
                "Only have makepkg read the PKGBUILD: 200, no job",
            ),
            _CACHE,
        ),
        body=_binary("The build directory as a tar, optionally gzipped", *_TAR_TYPES),
        answers={
            200: _json(DryRun, "dry_run: what makepkg read, and what would stop a build"),
            201: _json(BuildSubmitted, _QUEUED, "Location"),
            400: "Unsafe or unreadable archive, or a bad parameter",
            408: "The upload took longer than ORCHESTRATOR_UPLOAD_TIMEOUT_S",
            413: "Upload or unpacked build directory over the limit",
            415: "No Content-Type, or not a tar type",
            422: "makepkg refused the PKGBUILD (its message), a problem it would stop at "
            "(problems), an unknown variant, or a variant refused here",
            503: "Shutting down, or the Docker daemon is unreachable",
            507: "The data disk is full, or the queue's share of it is used up",
        },
    ),
    Route(
        "GET",
        "/v1/jobs",
        "Jobs, newest first",
        params=(
            Param("status", "query", {"$ref": _REF.format(model=JobStatus.__name__)}),
            Param(
                "limit", "query", {"type": "integer", "minimum": 0, "maximum": 500, "default": 50}
            ),
            Param("offset", "query", {"type": "integer", "minimum": 0, "default": 0}),
        ),
        answers={200: _json(JobList, "A page of jobs"), 400: "Bad filter or page"},
    ),
    Route(
        "POST",
        "/v1/jobs",
        "Start an operation as a job: worker_install or model_download",
        params=(_CACHE,),
        body=_json(Operation, "The operation"),
        answers={
            201: _json(JobSubmitted, _QUEUED, "Location"),
            400: "Missing or malformed field",
            404: "No such worker in the catalog",
            409: "The same worker or model is already being worked on",
            415: "Content-Type is not application/json",
            422: "Unknown operation (the answer lists the known ones), or a worker that cannot "
            "run here (metal)",
            503: "Shutting down",
            507: "The data disk is full",
        },
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}",
        "One job",
        params=(_JOB_ID,),
        answers={200: _json(Job, "The job"), 404: _NO_JOB},
    ),
    Route(
        "POST",
        "/v1/jobs/{job_id}/cancel",
        "Cancel a job; answers once its container is gone",
        params=(_JOB_ID,),
        answers={
            200: _json(Job, "The job, now ended"),
            404: _NO_JOB,
            409: "The job has already ended",
        },
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}/stream",
        "The job's narration as Server-Sent Events (replay, then live)",
        params=(
            _JOB_ID,
            Param("Last-Event-ID", "header", {"type": "integer", "minimum": 0}),
            Param("last_event_id", "query", {"type": "integer", "minimum": 0}),
        ),
        answers={
            200: Body(
                "Per event `id: <seq>` and `data: <Event as JSON>`; `: keep-alive` comments "
                "while nothing happens; once the job has ended `event: end` with a StreamEnd, "
                "then `data: [DONE]`",
                media=("text/event-stream",),
                schema=_TEXT,
                extra={
                    "x-events": {
                        "message": {"$ref": _REF.format(model=Event.__name__)},
                        "end": {"$ref": _REF.format(model=StreamEnd.__name__)},
                    }
                },
            ),
            400: "Bad Last-Event-ID",
            404: _NO_JOB,
        },
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}/artifacts",
        "The packages a job made",
        params=(_JOB_ID,),
        answers={200: _json(ArtifactList, "Artifacts"), 404: _NO_JOB},
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}/artifacts/{name}",
        "Download one package",
        params=(_JOB_ID, Param("name", "path")),
        answers={
            200: _binary("The package file", "application/octet-stream"),
            404: "No such job or artifact",
        },
    ),
    Route(
        "GET",
        "/v1/catalog/workers",
        "Workers that can be installed, and catalog entries that were skipped",
        answers={200: _json(Catalog, "The catalog")},
    ),
    Route(
        "GET",
        "/v1/catalog/workers/{worker_id}",
        "One catalog entry",
        params=(_WORKER_ID,),
        answers={
            200: _json(CatalogWorkerDetail, "The entry"),
            404: "No such worker in the catalog",
        },
    ),
    Route(
        "GET",
        "/v1/catalog/workers/{worker_id}/pkgbuild",
        "The entry's PKGBUILD",
        params=(_WORKER_ID,),
        answers={
            200: _text("PKGBUILD text"),
            404: "No such worker in the catalog",
        },
    ),
    Route("GET", "/v1/workers", "Installed workers", answers={200: _json(WorkerList, "Workers")}),
    Route(
        "GET",
        "/v1/workers/{worker_id}",
        "One installed worker",
        params=(_WORKER_ID,),
        answers={
            200: _json(InstalledWorker, "The worker"),
            400: "Not a worker id",
            404: "Not installed",
        },
    ),
    Route(
        "DELETE",
        "/v1/workers/{worker_id}",
        "Uninstall a worker",
        params=(_WORKER_ID,),
        answers={
            200: _json(Removed, "Removed"),
            400: "Not a worker id",
            404: "Not installed",
            409: "An install of this worker is running",
        },
    ),
    Route("GET", "/v1/models", "Downloaded models", answers={200: _json(ModelList, "Models")}),
    Route(
        "DELETE",
        "/v1/models/{name}",
        "Delete a downloaded model",
        params=(Param("name", "path"),),
        answers={
            200: _json(Removed, "Removed"),
            400: "Not a valid model name",
            404: "No such model",
            409: "A download of this model is running",
        },
    ),
    Route(
        "GET",
        "/v1/caches",
        "Build caches, most recently used first",
        answers={200: _json(CacheList, "Caches")},
    ),
    Route(
        "GET",
        "/v1/caches/{key}",
        "One build cache",
        params=(_CACHE_KEY,),
        answers={200: _json(Cache, "The cache"), 404: "No such cache"},
    ),
    Route(
        "DELETE",
        "/v1/caches/{key}",
        "Remove a build cache (its volume); the next build of it starts cold",
        params=(_CACHE_KEY,),
        answers={
            204: Body("Removed"),
            404: "No such cache",
            409: "A running build is using it",
            502: "The engine could not remove its volume",
        },
    ),
    Route(
        "GET",
        "/health",
        "Daemon reachable, build images present, job store and data disk writable",
        answers={200: _json(Health, "Healthy"), 503: _json(Health, "Not ready, saying why")},
    ),
    Route(
        "GET",
        "/metrics",
        "Prometheus metrics",
        answers={200: _text("Prometheus text format")},
    ),
    Route(
        "GET",
        "/openapi.json",
        "This document",
        answers={200: Body("OpenAPI 3.1", media=("application/json",), schema={"type": "object"})},
    ),
)


class _Schemas(GenerateJsonSchema):
    # A property's title would only repeat its name.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    # A field that defaults to None is left out of the answer when unset: no default to state.
    def default_schema(self, schema: Any) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if "default" in out and out["default"] is None:
            del out["default"]
        return out


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _content(body: Body) -> dict[str, Any]:
    if body.model is not None:
        return {"application/json": {"schema": _ref(body.model), **body.extra}}
    return {media: {"schema": body.schema, **body.extra} for media in body.media}


def _answer(answer: Body | str) -> dict[str, Any]:
    body = answer if isinstance(answer, Body) else _json(Error, answer)
    out: dict[str, Any] = {"description": body.description}
    if body.model is not None or body.media:
        out["content"] = _content(body)
    if body.headers:
        out["headers"] = {name: {"schema": _TEXT, "required": True} for name in body.headers}
    return out


def _parameter(param: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.name, "in": param.where, "schema": param.schema}
    if param.where == "path":
        out["required"] = True
    if param.description:
        out["description"] = param.description
    return out


def _operation(route: Route) -> dict[str, Any]:
    answers = dict(route.answers)
    op: dict[str, Any] = {"summary": route.summary}
    if route.params:
        op["parameters"] = [_parameter(p) for p in route.params]
    if route.body is not None:
        op["requestBody"] = {"required": True, **_answer(route.body)}
    if not route.path.startswith(API_PREFIX):
        op["security"] = []  # answers without a token
    else:
        answers.setdefault(401, _UNAUTHORIZED)
        if route.path.endswith(STREAM_SUFFIX):
            # EventSource cannot set headers, so the stream also takes the token in the query.
            op["security"] = [{"bearer": []}, {TOKEN_PARAM: []}]
    answers.setdefault(403, _CROSS_ORIGIN)
    op["responses"] = {str(status): _answer(answers[status]) for status in sorted(answers)}
    return op


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    # The stream's models are named by an extension, errors by a default: list them first.
    found: dict[type[BaseModel], JsonSchemaMode] = {
        Event: "serialization",
        StreamEnd: "serialization",
        Error: "serialization",
    }
    for route in ROUTES:
        if route.body is not None and route.body.model is not None:
            found[route.body.model] = "validation"
        for answer in route.answers.values():
            if isinstance(answer, Body) and answer.model is not None:
                found[answer.model] = "serialization"
    return list(found.items())


@functools.cache
def document() -> dict[str, Any]:
    """The document (built once; callers must not change it)."""
    _, schemas = models_json_schema(
        _models(),
        ref_template=_REF,
        union_format="primitive_type_array",
        schema_generator=_Schemas,
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "orchestrator", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                TOKEN_PARAM: {"type": "apiKey", "in": "query", "name": TOKEN_PARAM},
            },
        },
        "security": [{"bearer": []}],
    }
