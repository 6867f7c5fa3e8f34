"""The route table: every operation, declared once. The router (``add_routes``), the OpenAPI
document (``openapi.py``), the links answers carry and the CLI's calls (``url``) all come from it.

A route names its operationId and tag, its handler, summary, parameters, request body and, per
status, the model that answers (a bare string is an ``Error`` with that description). Light on
purpose: handlers (and the request model made from the kinds) are named, not imported, so that
the CLI reads paths without loading the service; what a route is made of is in ``route.py``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..build.variants import Variant
from ..jobs.status import JobStatus
from .route import SCHEMA_REF, TEXT, Body, Param, Route, binary, json_body, resolve, text
from .wire import (
    ArtifactList,
    BuildSubmitted,
    Cache,
    CacheList,
    Catalog,
    CatalogWorkerDetail,
    DryRun,
    Envelope,
    Event,
    Health,
    InstalledWorker,
    Job,
    JobList,
    JobSubmitted,
    ModelList,
    Removed,
    RepoList,
    RepoPackages,
    StreamEnd,
    WorkerList,
)

# What ``POST /v1/builds`` takes as a tar (gzipped or not: the bytes tell).
TAR_TYPES = (
    "application/x-tar",
    "application/tar",
    "application/gzip",
    "application/x-gzip",
    "application/octet-stream",
)
MAX_PAGE = 500  # the most jobs one ``GET /v1/jobs`` answers

_JOB_ID = Param("job_id", "path")
_WORKER_ID = Param("worker_id", "path")
_CACHE_KEY = Param("key", "path", description="pkgbase:variant")
_CACHE = Param(
    "cache",
    "query",
    {"type": "string", "enum": ["on", "off"], "default": "on"},
    "off: build without the package's cache (it is neither read nor filled)",
)
_REPO_VARIANT = Param(
    "variant", "path", {"type": "string", "enum": ["cpu", "cuda"]}, "the repository's variant"
)
_NO_JOB = "No such job"
_QUEUED = "Queued; Location names the job"

ROUTES: tuple[Route, ...] = (
    Route(
        "submit_build",
        "builds",
        "POST",
        "/v1/builds",
        "builds.create_build",
        "Submit a build directory (a tar of the PKGBUILD and its local sources)",
        params=(
            Param(
                "variant",
                "query",
                {
                    "type": "string",
                    "enum": [v.value for v in Variant],
                    "default": Variant.CPU.value,
                },
            ),
            Param("timeout_s", "query", {"type": "number", "exclusiveMinimum": 0}),
            Param(
                "dry_run",
                "query",
                {"type": "boolean", "default": False},
                "Only have makepkg read the PKGBUILD: 200, no job",
            ),
            _CACHE,
            Param(
                "publish",
                "query",
                {"type": "boolean", "default": False},
                "Once it succeeds, add its package to the variant's signed pacman repository "
                "(orchestrator-{variant}, served at /repo/{variant}/{arch}/)",
            ),
        ),
        body=binary("The build directory as a tar, optionally gzipped", *TAR_TYPES),
        answers={
            200: json_body(DryRun, "dry_run: what makepkg read, and what would stop a build"),
            201: json_body(BuildSubmitted, _QUEUED, "Location"),
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
        "list_jobs",
        "jobs",
        "GET",
        "/v1/jobs",
        "jobs.list_jobs",
        "Jobs, newest first",
        params=(
            Param("status", "query", {"$ref": SCHEMA_REF.format(model=JobStatus.__name__)}),
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 0, "maximum": MAX_PAGE, "default": 50},
            ),
            Param("offset", "query", {"type": "integer", "minimum": 0, "default": 0}),
        ),
        answers={200: json_body(JobList, "A page of jobs"), 400: "Bad filter or page"},
    ),
    Route(
        "create_job",
        "jobs",
        "POST",
        "/v1/jobs",
        "jobs.create_job",
        "Start an operation as a job (its `operation` names its kind)",
        params=(_CACHE,),
        body=json_body("wire.Operation", "The operation"),
        answers={
            201: json_body(JobSubmitted, _QUEUED, "Location"),
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
        "reproduce_job",
        "jobs",
        "POST",
        "/v1/jobs/{job_id}/reproduce",
        "jobs.reproduce_job",
        "Rebuild a succeeded build from its stored inputs (same variant, fresh container, no "
        "cache, its SOURCE_DATE_EPOCH) and compare its packages: the new job's and the "
        "build's `reproduction` say whether they are bit-identical, and where not",
        params=(_JOB_ID,),
        answers={
            202: json_body(JobSubmitted, _QUEUED, "Location"),
            404: _NO_JOB,
            409: "The build did not succeed (or has not finished; `status` says), has no stored "
            "inputs (`no_inputs`: built before they were kept), or is being reproduced",
            422: "Not a build (`not_reproducible`): only uploaded builds keep their inputs",
            503: "Shutting down",
            507: "The data disk is full",
        },
    ),
    Route(
        "get_job",
        "jobs",
        "GET",
        "/v1/jobs/{job_id}",
        "jobs.get_job",
        "One job",
        params=(_JOB_ID,),
        answers={200: json_body(Job, "The job"), 404: _NO_JOB},
    ),
    Route(
        "cancel_job",
        "jobs",
        "POST",
        "/v1/jobs/{job_id}/cancel",
        "jobs.cancel_job",
        "Cancel a job; answers once its container is gone",
        params=(_JOB_ID,),
        answers={
            200: json_body(Job, "The job, now ended"),
            404: _NO_JOB,
            409: "The job has already ended",
        },
    ),
    Route(
        "stream_job",
        "jobs",
        "GET",
        "/v1/jobs/{job_id}/stream",
        "stream.stream_job",
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
                schema=TEXT,
                extra={
                    "x-events": {
                        "message": {"$ref": SCHEMA_REF.format(model=Event.__name__)},
                        "end": {"$ref": SCHEMA_REF.format(model=StreamEnd.__name__)},
                    }
                },
            ),
            400: "Bad Last-Event-ID",
            404: _NO_JOB,
        },
    ),
    Route(
        "list_artifacts",
        "jobs",
        "GET",
        "/v1/jobs/{job_id}/artifacts",
        "artifacts.list_artifacts",
        "The packages a job made",
        params=(_JOB_ID,),
        answers={200: json_body(ArtifactList, "Artifacts"), 404: _NO_JOB},
    ),
    Route(
        "get_artifact",
        "jobs",
        "GET",
        "/v1/jobs/{job_id}/artifacts/{name}",
        "artifacts.get_artifact",
        "Download one package",
        params=(_JOB_ID, Param("name", "path")),
        answers={
            200: binary("The package file", "application/octet-stream"),
            404: "No such job or artifact",
        },
    ),
    Route(
        "get_provenance",
        "jobs",
        "GET",
        "/v1/jobs/{job_id}/provenance",
        "artifacts.get_provenance",
        "A succeeded build's provenance: an in-toto statement (SLSA Provenance v1) of its "
        "packages, in a DSSE envelope signed with the repositories' key (OpenPGP, /repo/key)",
        params=(_JOB_ID,),
        answers={
            200: json_body(Envelope, "The signed provenance"),
            404: "No such job, or it has no provenance (not a succeeded build)",
        },
    ),
    Route(
        "list_catalog",
        "catalog",
        "GET",
        "/v1/catalog/workers",
        "catalog.list_catalog",
        "Workers that can be installed, and catalog entries that were skipped",
        answers={200: json_body(Catalog, "The catalog")},
    ),
    Route(
        "get_catalog_worker",
        "catalog",
        "GET",
        "/v1/catalog/workers/{worker_id}",
        "catalog.get_catalog_worker",
        "One catalog entry",
        params=(_WORKER_ID,),
        answers={
            200: json_body(CatalogWorkerDetail, "The entry"),
            404: "No such worker in the catalog",
        },
    ),
    Route(
        "get_catalog_pkgbuild",
        "catalog",
        "GET",
        "/v1/catalog/workers/{worker_id}/pkgbuild",
        "catalog.get_catalog_pkgbuild",
        "The entry's PKGBUILD",
        params=(_WORKER_ID,),
        answers={
            200: text("PKGBUILD text"),
            404: "No such worker in the catalog",
        },
    ),
    Route(
        "list_workers",
        "workers",
        "GET",
        "/v1/workers",
        "catalog.list_workers",
        "Installed workers",
        answers={200: json_body(WorkerList, "Workers")},
    ),
    Route(
        "get_worker",
        "workers",
        "GET",
        "/v1/workers/{worker_id}",
        "catalog.get_worker",
        "One installed worker",
        params=(_WORKER_ID,),
        answers={
            200: json_body(InstalledWorker, "The worker"),
            400: "Not a worker id",
            404: "Not installed",
        },
    ),
    Route(
        "uninstall_worker",
        "workers",
        "DELETE",
        "/v1/workers/{worker_id}",
        "catalog.delete_worker",
        "Uninstall a worker",
        params=(_WORKER_ID,),
        answers={
            200: json_body(Removed, "Removed"),
            400: "Not a worker id",
            404: "Not installed",
            409: "An install of this worker is running",
        },
    ),
    Route(
        "list_models",
        "models",
        "GET",
        "/v1/models",
        "catalog.list_models",
        "Downloaded models",
        answers={200: json_body(ModelList, "Models")},
    ),
    Route(
        "delete_model",
        "models",
        "DELETE",
        "/v1/models/{name}",
        "catalog.delete_model",
        "Delete a downloaded model",
        params=(Param("name", "path"),),
        answers={
            200: json_body(Removed, "Removed"),
            400: "Not a valid model name",
            404: "No such model",
            409: "A download of this model is running",
        },
    ),
    Route(
        "list_caches",
        "caches",
        "GET",
        "/v1/caches",
        "caches.list_caches",
        "Build caches, most recently used first",
        answers={200: json_body(CacheList, "Caches")},
    ),
    Route(
        "get_cache",
        "caches",
        "GET",
        "/v1/caches/{key}",
        "caches.get_cache",
        "One build cache",
        params=(_CACHE_KEY,),
        answers={200: json_body(Cache, "The cache"), 404: "No such cache"},
    ),
    Route(
        "delete_cache",
        "caches",
        "DELETE",
        "/v1/caches/{key}",
        "caches.delete_cache",
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
        "list_repos",
        "repo",
        "GET",
        "/v1/repo",
        "repo.list_repos",
        "The repositories: each one's pacman.conf section and Server, and the key that signs "
        "them (its fingerprint and where to fetch it)",
        answers={200: json_body(RepoList, "The repositories")},
    ),
    Route(
        "list_repo",
        "repo",
        "GET",
        "/v1/repo/{variant}",
        "repo.list_repo",
        "A variant's pacman repository: the packages its database lists",
        params=(_REPO_VARIANT,),
        answers={200: json_body(RepoPackages, "The repository"), 404: "No such repository"},
    ),
    Route(
        "remove_repo_package",
        "repo",
        "DELETE",
        "/v1/repo/{variant}/packages/{pkgname}",
        "repo.delete_repo_package",
        "Take a package out of a repository (its database, then its file and signature)",
        params=(_REPO_VARIANT, Param("pkgname", "path")),
        answers={
            200: json_body(Removed, "Removed: its file name"),
            404: "No such repository, or it holds no such package",
            500: "repo-remove or gpg failed; the database served before still is",
        },
    ),
    Route(
        "get_repo_key",
        "repo",
        "GET",
        "/repo/key",
        "repo.get_repo_key",
        "The repositories' signing key, public part, ASCII-armored (for pacman-key --add)",
        answers={200: Body("The key", media=("application/pgp-keys",), schema=TEXT)},
    ),
    Route(
        "get_repo_file",
        "repo",
        "GET",
        "/repo/{variant}/{arch}/{name}",
        "repo.get_repo_file",
        "A repository's file, as pacman fetches it: its database (NAME.db, NAME.files and "
        "their .sig), a package or a package's .sig",
        params=(_REPO_VARIANT, Param("arch", "path"), Param("name", "path")),
        answers={
            200: binary("The file", "application/octet-stream"),
            404: "No such repository or file",
        },
    ),
    Route(
        "health",
        "meta",
        "GET",
        "/health",
        "meta.health",
        "Daemon reachable, build images present, job store and data disk writable",
        answers={
            200: json_body(Health, "Healthy"),
            503: json_body(Health, "Not ready, saying why"),
        },
    ),
    Route(
        "metrics",
        "meta",
        "GET",
        "/metrics",
        "meta.metrics",
        "Prometheus metrics",
        answers={200: text("Prometheus text format")},
    ),
    Route(
        "openapi",
        "meta",
        "GET",
        "/openapi.json",
        "meta.openapi",
        "This document",
        answers={200: Body("OpenAPI 3.1", media=("application/json",), schema={"type": "object"})},
    ),
)


_BY_ID = {route.operation_id: route for route in ROUTES}


def url(operation_id: str, **params: str) -> str:
    """The path of an operation with its path parameters filled in (each quoted whole)."""
    return _BY_ID[operation_id].path.format_map({k: quote(v, safe="") for k, v in params.items()})


def add_routes(app: web.Application) -> None:
    """Serve every route, each by its handler, named by its operationId."""
    for route in ROUTES:
        handler: Any = resolve(route.handler)
        app.router.add_route(route.method, route.path, handler, name=route.operation_id)
