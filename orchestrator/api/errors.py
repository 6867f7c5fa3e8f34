"""One place where exceptions become HTTP answers: JSON with a code and a message, never HTML."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import OrchestratorError
from .keys import METRICS
from .wire import Error, respond

log = logging.getLogger(__name__)
ERROR_CODE = web.ResponseKey("error_code", str)


def error_response(http_status: int, code: str, message: str, **extra: Any) -> web.Response:
    response = respond(Error(error=code, message=message, **extra), status=http_status)
    response[ERROR_CODE] = code  # for the middleware's count, without reading the body back
    return response


def translate(exc: OrchestratorError) -> web.Response:
    """Our exception tree → its answer: each class says its status, code and fields."""
    if exc.http_status >= 500 and exc.code == "internal_error":
        log.error("unexpected error: %s", exc, exc_info=exc)
    return error_response(exc.http_status, exc.code, str(exc), **exc.details())


# The routes that take work: their refusals are counted, by code (a CI burst that meets 507s,
# a client that sends bad PKGBUILDs).
SUBMITS = frozenset({"submit_build", "create_job"})  # operationIds, as ``routes.py`` names them


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OrchestratorError as exc:
        response = translate(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = error_response(exc.status, code, exc.text or exc.reason)
        response.headers.update({k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(500, "internal_error", f"internal error: {type(exc).__name__}")
    if request.match_info.route.name in SUBMITS:
        request.app[METRICS].submits_refused.labels(reason=response[ERROR_CODE]).inc()
    return response
