"""The API's wire format: every JSON body it takes or answers, and the stream's events.

Handlers answer through these models (``respond``), and ``openapi.py`` builds the document from
their JSON schemas, so what is served and what is documented cannot disagree. Every model
forbids fields it does not name: a field added to a record reaches clients only once it is
added here. Timestamps are ISO 8601 strings in UTC, as the stores already write them.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from ..jobs.cancel import CancelReason
from ..jobs.estimate import progress
from ..jobs.status import JobStatus
from ..narration.schema import FIELDS, EventField
from ..storage.store import JobRecord

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Variant = Literal["cpu", "cuda", "metal"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


def respond(
    body: BaseModel, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``body`` as the JSON answer. Fields left unset stay out: the ones documented as present
    only sometimes (an error's details, a health problem)."""
    return web.json_response(
        body.model_dump(mode="json", exclude_unset=True), status=status, headers=headers
    )


# The route table imports this module's models, so its paths are looked up when first used.
def job_links(job_id: str) -> dict[str, str]:
    from .routes import url

    return {"job_url": url("get_job", job_id=job_id), "sse_url": url("stream_job", job_id=job_id)}


def artifact_url(job_id: str, name: str) -> str:
    from .routes import url

    # The build chose the name: a "#", "?" or "%" in it stays part of the path (``url`` quotes).
    return url("get_artifact", job_id=job_id, name=name)


# -- errors ------------------------------------------------------------------------------------


class Error(_Wire):
    """A refusal or failure. The fields after `message` come only with the codes they name."""

    error: str = Field(
        description="what went wrong, as a word: not_found, bad_request, conflict, too_large, "
        "bad_archive, bad_pkgbuild, bad_variant, variant_refused, unknown_operation, "
        "not_reproducible, no_inputs, "
        "insufficient_storage, unavailable, backend_error, unauthorized, cross_origin, "
        "host_not_allowed, internal_error, or the HTTP reason (unsupported_media_type, ...)"
    )
    message: str = Field(description="for people: what to do about it")
    operations: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="unknown_operation: the known ones"
    )
    status: str | SkipJsonSchema[None] = Field(
        default=None, description="conflict over a job's state: the state it is in"
    )
    limit_bytes: int | SkipJsonSchema[None] = Field(default=None, description="too_large")
    line: int | None = Field(
        default=None, description="bad_pkgbuild: the PKGBUILD's line, when makepkg named one"
    )
    problems: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="bad_pkgbuild: everything that would stop the build"
    )
    variant: str | SkipJsonSchema[None] = Field(default=None, description="variant_refused")
    reason: str | SkipJsonSchema[None] = Field(default=None, description="variant_refused")
    suggestion: str | None = Field(default=None, description="variant_refused")


# -- jobs --------------------------------------------------------------------------------------


class ArtifactLink(_Wire):
    name: str
    url: str


class Publication(_Wire):
    """Where a succeeded job asked to publish put its packages, and the key that signs them."""

    repository: str = Field(description="the repository's name, its section in pacman.conf")
    variant: str
    fingerprint: str = Field(
        description="the signing key's fingerprint (the key at /repo/key): the packages' and "
        "the database's signatures are its"
    )
    repo_url: str = Field(
        description="what the repository lists now (a later build or a removal may have "
        "replaced or taken out these packages)"
    )


class ReproducedPackage(_Wire):
    """One package of a reproduction, compared by file name and sha256."""

    name: str = Field(description="the package's file name")
    identical: bool = Field(description="bit-identical to the original's")
    original_sha256: str = Field(description="empty for a package only the rebuild made")
    rebuilt_sha256: str | None = Field(description="null: the rebuild made no package so named")
    differences: str | None = Field(
        description="where they differ: diffoscope's text report, its first 64 KiB (or why "
        "diffoscope could not say); null when identical"
    )


class Reproduction(_Wire):
    """A build rebuilt from its stored inputs (``POST /v1/jobs/{id}/reproduce``)."""

    original: str = Field(description="the build's job id")
    rebuild: str = Field(description="the reproduce job's id")
    state: Literal["running", "identical", "differs", "failed"] = Field(
        description="failed: the rebuild did not finish (it failed, was cancelled or "
        "interrupted); differs: at least one package is not bit-identical"
    )
    packages: list[ReproducedPackage]


class Job(_Wire):
    """A job: a build, or an operation (a worker install, a model download...)."""

    id: str
    operation: str = Field(description="its kind: build, or an Operation's")
    status: JobStatus
    variant: str | None
    pkgname: str | None = Field(description="a download's: the model's name")
    pkgver: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    timeout_s: float | None
    exit_code: int | None
    reason: str | None = Field(description="how it ended, for people")
    cancel_reason: CancelReason | None
    artifacts: list[ArtifactLink]
    last_seq: int = Field(description="the seq of its newest event")
    srcinfo: str | None = Field(description="the .SRCINFO makepkg printed for the PKGBUILD")
    cache: dict[str, Any] | None = Field(
        description="whether the build had its package's cache (used, why not), and what hit: "
        "sources reused, sccache and ccache hits and misses"
    )
    peak_memory_bytes: int | None = Field(
        default=None, description="a build's: the most memory its processes held at a sample"
    )
    cpu_seconds: float | None = Field(
        default=None, description="a build's: CPU time it used, all its processes"
    )
    peak_pids: int | None = Field(default=None, description="a build's: most processes at once")
    disk_bytes: int | None = Field(
        default=None, description="a build's: bytes it wrote to its disk and cache, last look"
    )
    phases_s: dict[str, float] | None = Field(
        default=None, description="a build's: wall time of each makepkg phase (prepare, build...)"
    )
    estimate_s: float | None = Field(
        default=None,
        description="how long it was expected to take when it started, from the last "
        "successful build of its package and variant (with a cache as warm, when there is one)",
    )
    progress: float | None = Field(
        default=None,
        description="while it runs: its elapsed time over its estimate, at most 0.99",
    )
    provenance_url: str | None = Field(
        default=None,
        description="a succeeded build's signed provenance (a DSSE envelope); null when it "
        "has none",
    )
    published: Publication | None = Field(
        default=None,
        description="a succeeded job asked to publish: the repository its packages went to "
        "and the key that signed them; null otherwise",
    )
    reproduction: Reproduction | None = Field(
        default=None,
        description="a build's latest reproduction, or a reproduce job's own; null when none",
    )
    job_id: str
    job_url: str
    sse_url: str

    @classmethod
    def of(
        cls, record: JobRecord, *, proven: bool = False, published: Publication | None = None
    ) -> Job:
        """The record as the API shows it; ``proven``: its provenance is on disk."""
        from .routes import url

        fields = record.to_dict()
        fields["progress"] = progress(record, time.time())
        artifacts = [{"name": n, "url": artifact_url(record.id, n)} for n in record.artifacts]
        fields.update(job_id=record.id, artifacts=artifacts, **job_links(record.id))
        fields["provenance_url"] = url("get_provenance", job_id=record.id) if proven else None
        fields["published"] = published
        return cls.model_validate(fields)


class JobList(_Wire):
    """A page of jobs, newest first."""

    jobs: list[Job]
    total: int = Field(description="jobs matching the filter, on every page")
    limit: int
    offset: int


class JobSubmitted(_Wire):
    """A queued job (`Location` names it)."""

    job_id: str
    status: JobStatus
    job_url: str
    sse_url: str


class BuildSubmitted(_Wire):
    """A queued build (`Location` names it)."""

    job_id: str
    status: JobStatus
    pkgname: str | None
    pkgver: str | None
    pkgnames: list[str]
    variant: str | None
    cache: bool = Field(description="whether the build may use its cache")
    warnings: list[str]
    job_url: str
    sse_url: str


class DryRun(_Wire):
    """What makepkg read from the PKGBUILD, and what would stop a build of it."""

    srcinfo: str = Field(description="exactly as makepkg printed it")
    pkgbase: str
    pkgnames: list[str]
    version: str
    arch: list[str]
    sources: list[str]
    depends: list[str]
    makedepends: list[str]
    variant: Variant
    problems: list[str]
    warnings: list[str]


# What ``POST /v1/jobs`` takes, ``Operation``, is built from the kinds' request models
# (``kinds.operation``) when first asked for (``__getattr__``), so that reading this module (the
# CLI reads the route table) loads none of them.
def __getattr__(name: str) -> Any:
    if name == "Operation":
        from ..kinds import operation

        return operation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the stream --------------------------------------------------------------------------------


_Absent = SkipJsonSchema[None]  # a field left out when None: never null on the wire


def _event_field(f: EventField) -> Any:
    if f.optional:
        return (f.type | _Absent, Field(default=None, description=f.meaning))
    return (f.type, Field(description=f.meaning))


# Made from the event's schema (``narration/schema.py``), like the frames ``sse`` writes.
Event = create_model(
    "Event",
    __base__=_Wire,
    __doc__="One event of a job's narration: an SSE message's `data`, its `id` the `seq`.",
    **{f.name: _event_field(f) for f in FIELDS},
)


class StreamEnd(_Wire):
    """The data of the stream's `event: end`, once the job has ended."""

    job_id: str
    status: JobStatus
    reason: str | None
    exit_code: int | None


# -- artifacts ---------------------------------------------------------------------------------


class Artifact(_Wire):
    name: str
    size_bytes: int
    url: str


class ArtifactList(_Wire):
    """The packages a job made that are still on disk."""

    job_id: str
    status: JobStatus
    artifacts: list[Artifact]


# -- catalog, workers, models ------------------------------------------------------------------


class CatalogWorker(_Wire):
    """A worker that can be installed."""

    id: str
    name: str
    version: str
    description: str
    license: str
    worker_type: Variant
    platforms: list[str]
    architectures: list[str]
    binary_name: str
    depends: list[str]
    makedepends: list[str]
    refused: str | None = Field(
        default=None,
        description="why installing it here is refused (what an install would answer); "
        "null when it can be installed",
    )


class CatalogWorkerDetail(CatalogWorker):
    """A catalog entry, with the names of its local sources and where its PKGBUILD is."""

    sources: list[str]
    pkgbuild_url: str


class Catalog(_Wire):
    workers: list[CatalogWorker]
    problems: list[str] = Field(description="entries that did not validate, and why")
    checked: bool = Field(
        description="false while makepkg is still reading the PKGBUILDs: more problems may appear"
    )


class InstalledWorker(_Wire):
    id: str
    version: str
    binary: str
    path: str
    sha256: str
    installed_at: Timestamp
    job_id: str | None = Field(description="the install job")


class WorkerList(_Wire):
    workers: list[InstalledWorker]


class DownloadedModel(_Wire):
    name: str
    path: str
    size_bytes: int
    sha256: str
    downloaded_at: Timestamp
    url: str


class ModelList(_Wire):
    models: list[DownloadedModel]


class Removed(_Wire):
    removed: str = Field(
        description="the worker's id, the model's name, or the package's file name"
    )


# -- repositories ------------------------------------------------------------------------------


class RepoPackage(_Wire):
    name: str = Field(description="its pkgname")
    filename: str = Field(description="its file in the repository (its signature: + .sig)")
    sha256: str = Field(description="its file's SHA-256, as the signed database lists it")


class RepoPackages(_Wire):
    """A variant's pacman repository: what its database lists."""

    repository: str = Field(description="its name, the section in pacman.conf")
    arch: str
    server: str = Field(
        description="its path on this service: pacman.conf's Server, after the host"
    )
    packages: list[RepoPackage]


class RepoSummary(_Wire):
    """One variant's repository, as pacman.conf names it."""

    variant: str
    repository: str = Field(description="its name, the section in pacman.conf")
    arch: str
    server: str = Field(
        description="pacman.conf's Server: an absolute URL, as this request reached the "
        "service (with a token, pacman sends it as the URL's password)"
    )
    packages_url: str = Field(description="what its database lists")


class RepoList(_Wire):
    """The signed pacman repositories and the one key that signs them all."""

    fingerprint: str = Field(description="the signing key's fingerprint (pacman-key --lsign-key)")
    key_url: str = Field(description="the key's public part, absolute (pacman-key --add)")
    repositories: list[RepoSummary]


class EnvelopeSignature(_Wire):
    keyid: str = Field(description="the fingerprint of the OpenPGP key (the one at /repo/key)")
    sig: str = Field(
        description="base64 of a detached OpenPGP signature over DSSE's PAE of the payload"
    )


class Envelope(_Wire):
    """A build's provenance: a DSSE envelope around an in-toto Statement (SLSA Provenance v1)
    whose subjects are the job's packages."""

    payloadType: str = Field(description="application/vnd.in-toto+json")
    payload: str = Field(description="base64 of the statement's JSON")
    signatures: list[EnvelopeSignature]


# -- caches ------------------------------------------------------------------------------------


class Cache(_Wire):
    """A build cache: one package's, for one variant."""

    key: str = Field(description="pkgbase:variant")
    package: str
    variant: str
    volume: str = Field(description="the engine's volume holding it")
    size_bytes: int | None = Field(description="after its last build")
    created_at: Timestamp
    last_used_at: Timestamp
    builds: int = Field(description="builds that used it")
    hits: int = Field(description="builds that found it already filled")
    last_build: dict[str, Any] | None = Field(description="its last build's report")
    last_job: str | None
    in_use: bool


class CacheList(_Wire):
    """Build caches, most recently used first."""

    caches: list[Cache]
    enabled: bool
    total_bytes: int
    max_bytes: int


# -- health ------------------------------------------------------------------------------------


class StoreHealth(_Wire):
    ok: bool
    error: str | None


class DiskHealth(_Wire):
    path: str
    free_bytes: int
    full: str | None = Field(description="while the disk counts as full: how full")


class Health(_Wire):
    """Whether the service can build: daemon, images, job store, data disk. Without the token
    (where the service has one) only ``status`` and, when not ok, ``error`` in words that name
    no path, address or image; the rest comes with the token."""

    status: Literal["ok", "unavailable"]
    docker: bool | SkipJsonSchema[None] = Field(default=None, description="with the token only")
    images: dict[str, bool] | SkipJsonSchema[None] = Field(
        default=None, description="variant → its build image is present (with the token only)"
    )
    store: StoreHealth | SkipJsonSchema[None] = Field(
        default=None, description="with the token only"
    )
    disk: DiskHealth | SkipJsonSchema[None] = Field(default=None, description="with the token only")
    queue_length: int | SkipJsonSchema[None] = Field(
        default=None, description="with the token only"
    )
    error: str | SkipJsonSchema[None] = Field(
        default=None, description="when unavailable: the first thing that is wrong"
    )
