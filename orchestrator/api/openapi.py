"""The OpenAPI 3.1 document, generated from the route table (``routes.py``) and the JSON schemas
of ``wire.py``.

What the guards add is derived from the rules they enforce (``guard.py``): a ``401`` on
everything under ``/v1/`` when a token is set, the stream's ``?access_token=``, and a ``403`` on
every operation (another site's page). Tests check the table against the app's routes and real
answers against the document, and drive a build through a client generated from it.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    models_json_schema,
)

from .._version import __version__
from .guard import API_PREFIX, REPO_PREFIX, STREAM_SUFFIX, TOKEN_PARAM
from .route import SCHEMA_REF, TEXT, Body, Param, Route, json_body
from .routes import ROUTES
from .wire import Error, Event, StreamEnd

_UNAUTHORIZED = "Missing or wrong bearer token (when a token is configured)"
_CROSS_ORIGIN = (
    "A browser request from another site (Sec-Fetch-Site; for a change, also an Origin not this "
    "Host), other than the user following a link; error `cross_origin`"
)

# The document's tags, in the order a reader meets them.
_TAGS = {
    "builds": "Submit a build directory",
    "jobs": "Jobs: their state, narration, packages and cancel",
    "catalog": "Workers that can be installed",
    "workers": "Installed workers",
    "models": "Downloaded models",
    "caches": "Build caches",
    "repo": "The signed pacman repositories published packages go to, and their key",
    "meta": "Health, metrics and this document",
}


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
    return {"$ref": SCHEMA_REF.format(model=model.__name__)}


def _content(body: Body) -> dict[str, Any]:
    if (model := body.json_model()) is not None:
        return {"application/json": {"schema": _ref(model), **body.extra}}
    return {media: {"schema": body.schema, **body.extra} for media in body.media}


def _answer(answer: Body | str) -> dict[str, Any]:
    body = answer if isinstance(answer, Body) else json_body(Error, answer)
    out: dict[str, Any] = {"description": body.description}
    if body.model is not None or body.media:
        out["content"] = _content(body)
    if body.headers:
        out["headers"] = {name: {"schema": TEXT, "required": True} for name in body.headers}
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
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [route.tag],
        "summary": route.summary,
    }
    if route.params:
        op["parameters"] = [_parameter(p) for p in route.params]
    if route.body is not None:
        op["requestBody"] = {"required": True, **_answer(route.body)}
    if not route.path.startswith((API_PREFIX, REPO_PREFIX)):
        op["security"] = []  # answers without a token
    else:
        answers.setdefault(401, _UNAUTHORIZED)
        if route.path.startswith(REPO_PREFIX):
            # pacman cannot set headers: it sends the token as its Server URL's password.
            op["security"] = [{"bearer": []}, {"basic": []}]
        elif route.path.endswith(STREAM_SUFFIX):
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
        if route.body is not None and (model := route.body.json_model()) is not None:
            found[model] = "validation"
        for answer in route.answers.values():
            if isinstance(answer, Body) and (model := answer.json_model()) is not None:
                found[model] = "serialization"
    return list(found.items())


@functools.cache
def document() -> dict[str, Any]:
    """The document (built once; callers must not change it)."""
    _, schemas = models_json_schema(
        _models(),
        ref_template=SCHEMA_REF,
        union_format="primitive_type_array",
        schema_generator=_Schemas,
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "orchestrator", "version": __version__},
        "tags": [{"name": name, "description": text} for name, text in _TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "the token as the password, any user (pacman's Server URL)",
                },
                TOKEN_PARAM: {"type": "apiKey", "in": "query", "name": TOKEN_PARAM},
            },
        },
        "security": [{"bearer": []}],
    }
