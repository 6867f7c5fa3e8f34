"""The OpenAPI 3 document of the HTTP API; a test checks it against the app's routes.

Over the ~400 lines a module should have, because it is one literal written by hand: it is to be
generated from the API's pydantic models instead (the redesign's "one wire format"), which
removes this file.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__

_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_WORKER_ID = {"name": "worker_id", "in": "path", "required": True, "schema": {"type": "string"}}
_STATUS_REF = {"$ref": "#/components/schemas/Status"}
_UNAUTHORIZED = _error("Missing or wrong bearer token (when a token is configured)")
_CROSS_ORIGIN = _error(
    "A browser request from another origin (Sec-Fetch-Site, or Origin not this Host); "
    "error `cross_origin`"
)
# /health, /metrics and /openapi.json answer without a token.
_OPEN: list[dict[str, list[str]]] = []
_NOT_FOUND = _error("No such job")
_CACHE_PARAM = {
    "name": "cache",
    "in": "query",
    "description": "off: build without the package's cache (it is neither read nor filled)",
    "schema": {"type": "string", "enum": ["on", "off"], "default": "on"},
}
_CACHE_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "pkgbase:variant",
    "schema": {"type": "string"},
}

_PATHS: dict[str, Any] = {
    "/v1/builds": {
        "post": {
            "summary": "Submit a build directory (a tar of the PKGBUILD and its local sources)",
            "parameters": [
                {
                    "name": "variant",
                    "in": "query",
                    "schema": {
                        "type": "string",
                        "enum": ["cpu", "cuda", "metal"],
                        "default": "cpu",
                    },
                },
                {"name": "timeout_s", "in": "query", "schema": {"type": "number"}},
                {
                    "name": "dry_run",
                    "in": "query",
                    "description": "Only have makepkg read the PKGBUILD: 200, no job",
                    "schema": {"type": "boolean", "default": False},
                },
                _CACHE_PARAM,
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                    "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": _json("dry_run: what makepkg read, and what would stop a build", "DryRun"),
                "201": _json("Queued; Location names the job", "Submitted"),
                "400": _error("Unsafe or unreadable archive, or a bad parameter"),
                "401": _UNAUTHORIZED,
                "403": _CROSS_ORIGIN,
                "413": _error("Upload or unpacked build directory over the limit"),
                "415": _error("No Content-Type, or not a tar type"),
                "422": _error(
                    "makepkg refused the PKGBUILD (its message), a problem it would stop at "
                    "(problems), an unknown variant, or a variant refused here"
                ),
                "503": _error("Shutting down, or the Docker daemon is unreachable"),
                "507": _error("The data disk is full, or the queue's share of it is used up"),
            },
        }
    },
    "/v1/jobs": {
        "post": {
            "summary": "Start an operation as a job: worker_install or model_download",
            "parameters": [_CACHE_PARAM],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Operation"}}
                },
            },
            "responses": {
                "201": _json("Queued; Location names the job", "Submitted"),
                "400": _error("Missing or malformed field"),
                "401": _UNAUTHORIZED,
                "403": _CROSS_ORIGIN,
                "404": _error("No such worker in the catalog"),
                "409": _error("The same worker or model is already being worked on"),
                "415": _error("Content-Type is not application/json"),
                "422": _error(
                    "Unknown operation (the answer lists the known ones), or a worker "
                    "that cannot run here (metal)"
                ),
                "503": _error("Shutting down"),
            },
        },
        "get": {
            "summary": "Jobs, newest first",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"$ref": "#/components/schemas/Status"},
                },
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 50}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "default": 0}},
            ],
            "responses": {
                "200": _json("A page of jobs", "JobList"),
                "400": _error("Bad filter or page"),
                "401": _UNAUTHORIZED,
            },
        },
    },
    "/v1/catalog/workers": {
        "get": {
            "summary": "Workers that can be installed, and catalog entries that were skipped",
            "responses": {"200": _json("The catalog", "Catalog"), "401": _UNAUTHORIZED},
        }
    },
    "/v1/catalog/workers/{worker_id}": {
        "get": {
            "summary": "One catalog entry",
            "parameters": [_WORKER_ID],
            "responses": {
                "200": _json("The entry", "CatalogWorker"),
                "401": _UNAUTHORIZED,
                "404": _error("No such worker in the catalog"),
            },
        }
    },
    "/v1/catalog/workers/{worker_id}/pkgbuild": {
        "get": {
            "summary": "The entry's PKGBUILD",
            "parameters": [_WORKER_ID],
            "responses": {
                "200": {
                    "description": "PKGBUILD text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": _UNAUTHORIZED,
                "404": _error("No such worker in the catalog"),
            },
        }
    },
    "/v1/workers": {
        "get": {
            "summary": "Installed workers",
            "responses": {"200": _json("Installed workers", "WorkerList"), "401": _UNAUTHORIZED},
        }
    },
    "/v1/workers/{worker_id}": {
        "get": {
            "summary": "One installed worker",
            "parameters": [_WORKER_ID],
            "responses": {
                "200": _json("The worker", "InstalledWorker"),
                "401": _UNAUTHORIZED,
                "404": _error("Not installed"),
            },
        },
        "delete": {
            "summary": "Uninstall a worker",
            "parameters": [_WORKER_ID],
            "responses": {
                "200": {"description": "Removed"},
                "401": _UNAUTHORIZED,
                "403": _CROSS_ORIGIN,
                "404": _error("Not installed"),
                "409": _error("An install of this worker is running"),
            },
        },
    },
    "/v1/models": {
        "get": {
            "summary": "Downloaded models",
            "responses": {"200": _json("Models", "ModelList"), "401": _UNAUTHORIZED},
        }
    },
    "/v1/models/{name}": {
        "delete": {
            "summary": "Delete a downloaded model",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "Removed"},
                "400": _error("Not a valid model name"),
                "401": _UNAUTHORIZED,
                "403": _CROSS_ORIGIN,
                "404": _error("No such model"),
                "409": _error("A download of this model is running"),
            },
        }
    },
    "/v1/caches": {
        "get": {
            "summary": "Build caches, most recently used first",
            "responses": {"200": _json("Caches", "CacheList"), "401": _UNAUTHORIZED},
        }
    },
    "/v1/caches/{key}": {
        "get": {
            "summary": "One build cache",
            "parameters": [_CACHE_KEY],
            "responses": {
                "200": _json("The cache", "Cache"),
                "401": _UNAUTHORIZED,
                "404": _error("No such cache"),
            },
        },
        "delete": {
            "summary": "Remove a build cache (its volume); the next build of it starts cold",
            "parameters": [_CACHE_KEY],
            "responses": {
                "204": {"description": "Removed"},
                "401": _UNAUTHORIZED,
                "403": _CROSS_ORIGIN,
                "404": _error("No such cache"),
                "409": _error("A running build is using it"),
            },
        },
    },
    "/v1/jobs/{job_id}": {
        "get": {
            "summary": "One job",
            "parameters": [_JOB_ID],
            "responses": {"200": _json("The job", "Job"), "401": _UNAUTHORIZED, "404": _NOT_FOUND},
        }
    },
    "/v1/jobs/{job_id}/cancel": {
        "post": {
            "summary": "Cancel a job; answers once its container is gone",
            "parameters": [_JOB_ID],
            "responses": {
                "200": _json("The job, now ended", "Job"),
                "401": _UNAUTHORIZED,
                "403": _CROSS_ORIGIN,
                "404": _NOT_FOUND,
                "409": _error("The job has already ended"),
            },
        }
    },
    "/v1/jobs/{job_id}/stream": {
        "get": {
            "summary": "The job's narration as Server-Sent Events (replay, then live)",
            "parameters": [
                _JOB_ID,
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}},
                {"name": "last_event_id", "in": "query", "schema": {"type": "integer"}},
            ],
            # EventSource cannot set headers, so the stream also takes the token in the query.
            "security": [{"bearer": []}, {"access_token": []}],
            "responses": {
                "200": {
                    "description": "id: seq, data: an Event as JSON; at the end `event: end` "
                    "with the final status, then `data: [DONE]`",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _error("Bad Last-Event-ID"),
                "401": _UNAUTHORIZED,
                "404": _NOT_FOUND,
            },
        }
    },
    "/v1/jobs/{job_id}/artifacts": {
        "get": {
            "summary": "The packages a job made",
            "parameters": [_JOB_ID],
            "responses": {
                "200": _json("Artifacts", "ArtifactList"),
                "401": _UNAUTHORIZED,
                "404": _NOT_FOUND,
            },
        }
    },
    "/v1/jobs/{job_id}/artifacts/{name}": {
        "get": {
            "summary": "Download one package",
            "parameters": [
                _JOB_ID,
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "The package file",
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "401": _UNAUTHORIZED,
                "404": _error("No such job or artifact"),
            },
        }
    },
    "/health": {
        "get": {
            "summary": "Daemon reachable and build images present",
            "security": _OPEN,
            "responses": {"200": _json("Healthy", "Health"), "503": _json("Not ready", "Health")},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "security": _OPEN,
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "security": _OPEN,
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}

_STATUS = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out", "interrupted"]
_TIME = {"type": ["string", "null"], "format": "date-time"}

_SCHEMAS: dict[str, Any] = {
    "Status": {"type": "string", "enum": _STATUS},
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "Submitted": {
        "type": "object",
        "required": ["job_id", "status", "sse_url"],
        "properties": {
            "job_id": {"type": "string"},
            "status": {"$ref": "#/components/schemas/Status"},
            "sse_url": {"type": "string"},
            "job_url": {"type": "string"},
            "pkgname": {"type": "string"},
            "pkgver": {"type": "string"},
            "variant": {"type": "string"},
            "cache": {"type": "boolean", "description": "whether the build may use its cache"},
            "pkgnames": {"type": "array", "items": {"type": "string"}},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    },
    "DryRun": {
        "type": "object",
        "required": ["srcinfo", "problems", "warnings"],
        "properties": {
            "srcinfo": {"type": "string", "description": "exactly as makepkg printed it"},
            "pkgbase": {"type": "string"},
            "pkgnames": {"type": "array", "items": {"type": "string"}},
            "version": {"type": "string"},
            "arch": {"type": "array", "items": {"type": "string"}},
            "sources": {"type": "array", "items": {"type": "string"}},
            "depends": {"type": "array", "items": {"type": "string"}},
            "makedepends": {"type": "array", "items": {"type": "string"}},
            "variant": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "string"}},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Job": {
        "type": "object",
        "required": ["job_id", "status", "created_at"],
        "properties": {
            "job_id": {"type": "string"},
            "operation": {"type": "string"},
            "status": {"$ref": "#/components/schemas/Status"},
            "variant": {"type": ["string", "null"]},
            "pkgname": {"type": ["string", "null"]},
            "pkgver": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _TIME,
            "finished_at": _TIME,
            "timeout_s": {"type": ["number", "null"]},
            "exit_code": {"type": ["integer", "null"]},
            "reason": {"type": ["string", "null"]},
            "cancel_reason": {
                "type": ["string", "null"],
                "enum": ["user", "timeout", "shutdown", "disk_full", None],
            },
            "srcinfo": {
                "type": ["string", "null"],
                "description": "the .SRCINFO makepkg printed for the PKGBUILD",
            },
            "cache": {
                "type": ["object", "null"],
                "description": "whether the build had its package's cache (used, why not), and "
                "what hit: sources reused, sccache and ccache hits and misses",
            },
            "last_seq": {"type": "integer", "description": "the seq of its newest event"},
            "artifacts": {"type": "array", "items": {"type": "object"}},
            "sse_url": {"type": "string"},
        },
    },
    "Cache": {
        "type": "object",
        "required": ["key", "package", "variant", "builds", "hits", "in_use"],
        "properties": {
            "key": {"type": "string", "description": "pkgbase:variant"},
            "package": {"type": "string"},
            "variant": {"type": "string"},
            "volume": {"type": "string", "description": "the engine's volume holding it"},
            "size_bytes": {"type": ["integer", "null"], "description": "after its last build"},
            "created_at": {"type": "string", "format": "date-time"},
            "last_used_at": {"type": "string", "format": "date-time"},
            "builds": {"type": "integer", "description": "builds that used it"},
            "hits": {"type": "integer", "description": "builds that found it already filled"},
            "last_build": {"type": ["object", "null"], "description": "its last build's report"},
            "last_job": {"type": ["string", "null"]},
            "in_use": {"type": "boolean"},
        },
    },
    "CacheList": {
        "type": "object",
        "properties": {
            "caches": {"type": "array", "items": {"$ref": "#/components/schemas/Cache"}},
            "enabled": {"type": "boolean"},
            "total_bytes": {"type": "integer"},
            "max_bytes": {"type": "integer"},
        },
    },
    "JobList": {
        "type": "object",
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "ArtifactList": {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "artifacts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "size_bytes": {"type": "integer"},
                        "url": {"type": "string"},
                    },
                },
            },
        },
    },
    "Event": {
        "type": "object",
        "required": ["seq", "ts", "job_id", "action", "level", "message"],
        "properties": {
            "seq": {"type": "integer"},
            "ts": {"type": "number"},
            "job_id": {"type": "string"},
            "action": {"type": "string"},
            "level": {"type": "string", "enum": ["debug", "info", "warning", "error"]},
            "message": {
                "type": "string",
                "description": "For `output` events: a run of consecutive lines of one stream, "
                "joined by \\n (no trailing newline)",
            },
            "stream": {"type": "string", "enum": ["stdout", "stderr"]},
            "lines": {
                "type": "integer",
                "description": "`output` events only: how many lines `message` holds",
            },
        },
    },
    "Operation": {
        "type": "object",
        "required": ["operation"],
        "properties": {
            "operation": {"type": "string", "enum": ["worker_install", "model_download"]},
            "worker_id": {"type": "string"},
            "url": {"type": "string", "description": "http(s) URL, or hf://REPO/FILE[@REV]"},
            "name": {"type": "string"},
            "sha256": {"type": "string"},
            "timeout_s": {"type": "number"},
        },
    },
    "CatalogWorker": {
        "type": "object",
        "properties": {
            k: {"type": "string"}
            for k in (
                "id",
                "name",
                "version",
                "description",
                "license",
                "worker_type",
                "binary_name",
            )
        },
    },
    "Catalog": {
        "type": "object",
        "properties": {
            "workers": {"type": "array", "items": {"$ref": "#/components/schemas/CatalogWorker"}},
            "problems": {"type": "array", "items": {"type": "string"}},
        },
    },
    "InstalledWorker": {
        "type": "object",
        "properties": {
            k: {"type": "string"}
            for k in ("id", "version", "binary", "path", "sha256", "installed_at")
        },
    },
    "WorkerList": {
        "type": "object",
        "properties": {
            "workers": {"type": "array", "items": {"$ref": "#/components/schemas/InstalledWorker"}}
        },
    },
    "ModelList": {
        "type": "object",
        "properties": {"models": {"type": "array", "items": {"type": "object"}}},
    },
    "Health": {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "docker": {"type": "boolean"},
            "images": {"type": "object"},
        },
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "orchestrator", "version": __version__},
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "access_token": {"type": "apiKey", "in": "query", "name": "access_token"},
            },
        },
        "security": [{"bearer": []}],
    }
