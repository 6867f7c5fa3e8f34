"""One place where exceptions become HTTP answers: JSON with a code and a message, never HTML."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import (
    ArchiveError,
    ArchiveTooLarge,
    BackendError,
    BackendUnavailable,
    Conflict,
    InsufficientStorage,
    InvalidInput,
    JobStateConflict,
    NotFound,
    OrchestratorError,
    PkgbuildError,
    ShuttingDown,
    UnknownOperation,
    VariantError,
    VariantRefused,
)
from .keys import METRICS
from .wire import Error, respond

log = logging.getLogger(__name__)
ERROR_CODE = web.ResponseKey("error_code", str)


def error_response(http_status: int, code: str, message: str, **extra: Any) -> web.Response:
    response = respond(Error(error=code, message=message, **extra), status=http_status)
    response[ERROR_CODE] = code  # for the middleware's count, without reading the body back
    return response


def translate(exc: OrchestratorError) -> web.Response:
    """Our exception tree → status; the most specific class first."""
    if isinstance(exc, NotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, UnknownOperation):
        return error_response(422, "unknown_operation", str(exc), operations=list(exc.known))
    if isinstance(exc, JobStateConflict):
        return error_response(409, "conflict", str(exc), status=exc.status)
    if isinstance(exc, Conflict):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, ArchiveTooLarge):
        return error_response(413, "too_large", str(exc), limit_bytes=exc.limit_bytes)
    if isinstance(exc, ArchiveError):
        return error_response(400, "bad_archive", str(exc))
    if isinstance(exc, PkgbuildError):
        return error_response(
            422, "bad_pkgbuild", str(exc), line=exc.line, problems=list(exc.problems)
        )
    if isinstance(exc, VariantRefused):
        return error_response(
            422,
            "variant_refused",
            str(exc),
            variant=exc.variant,
            reason=exc.reason,
            suggestion=exc.suggestion,
        )
    if isinstance(exc, VariantError):
        return error_response(422, "bad_variant", str(exc))
    if isinstance(exc, InvalidInput):
        return error_response(400, "bad_request", str(exc))
    if isinstance(exc, InsufficientStorage):
        return error_response(507, "insufficient_storage", str(exc))
    if isinstance(exc, ShuttingDown | BackendUnavailable):
        return error_response(503, "unavailable", str(exc))
    if isinstance(exc, BackendError):
        return error_response(502, "backend_error", str(exc))
    log.error("unexpected error: %s", exc, exc_info=exc)
    return error_response(500, "internal_error", str(exc))


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
