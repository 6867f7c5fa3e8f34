"""One exception tree for the whole project.

Docker, SQLite and HTTP-client errors are translated into these where they are caught, so callers
handle one family. Each class carries the HTTP status and error code the API answers it with
(``http_status``, ``code``) and the fields its answer adds (``details``): the API's one
translation reads them, so a new error is one class here.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OrchestratorError(Exception):
    """Base of every error this project raises on purpose."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, Any]:
        """What the error's answer says beside its code and message."""
        return {}


class InvalidInput(OrchestratorError):
    """The request itself is wrong; retrying it unchanged fails again."""

    http_status = 400
    code = "bad_request"


class PkgbuildError(InvalidInput):
    """A PKGBUILD that cannot be built: makepkg refused it, or what it read shows a problem."""

    http_status = 422
    code = "bad_pkgbuild"

    def __init__(
        self, message: str, line: int | None = None, problems: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.line = line
        self.problems = problems or [message]

    def details(self) -> dict[str, Any]:
        return {"line": self.line, "problems": list(self.problems)}

    def __str__(self) -> str:
        return self.message if self.line is None else f"PKGBUILD line {self.line}: {self.message}"


class InspectTimeout(PkgbuildError):
    """makepkg did not finish reading the PKGBUILD in time (its top level hangs, or the host is
    too busy)."""


class ArchiveError(InvalidInput):
    """An archive that is unsafe to unpack (absolute paths, `..`, links out, devices)."""

    http_status = 400
    code = "bad_archive"


class ArchiveTooLarge(ArchiveError):
    """An archive over the configured size limit."""

    http_status = 413
    code = "too_large"

    def __init__(self, message: str, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes

    def details(self) -> dict[str, Any]:
        return {"limit_bytes": self.limit_bytes}


class VariantError(InvalidInput):
    """A variant that is unknown."""

    http_status = 422
    code = "bad_variant"


class VariantRefused(VariantError):
    """A known variant that cannot run here (metal in a Linux container)."""

    http_status = 422
    code = "variant_refused"

    def __init__(self, variant: str, reason: str, suggestion: str | None = None) -> None:
        message = f"variant {variant!r} cannot be built here: {reason}"
        if suggestion:
            message += f"; {suggestion}"
        super().__init__(message)
        self.variant = variant
        self.reason = reason
        self.suggestion = suggestion

    def details(self) -> dict[str, Any]:
        return {"variant": self.variant, "reason": self.reason, "suggestion": self.suggestion}


class NotFound(OrchestratorError):
    """A named thing (job, worker, model) does not exist."""

    http_status = 404
    code = "not_found"


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id '{job_id}'")
        self.job_id = job_id


class WorkerNotFound(NotFound):
    """The catalog names no such worker."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"no worker with id {worker_id!r} in the catalog")
        self.worker_id = worker_id


class UnknownOperation(InvalidInput):
    http_status = 422
    code = "unknown_operation"

    def __init__(self, operation: object, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown operation {operation!r}; known operations: {', '.join(known)}")
        self.known = known

    def details(self) -> dict[str, Any]:
        return {"operations": list(self.known)}


class NotReproducible(InvalidInput):
    """A job to reproduce that is not a build: only an uploaded build's inputs are kept."""

    http_status = 422
    code = "not_reproducible"


class BackendError(OrchestratorError):
    """The container engine failed us."""

    http_status = 502
    code = "backend_error"


class BackendUnavailable(BackendError):
    """The engine cannot be reached (socket missing, daemon down)."""

    http_status = 503
    code = "unavailable"


class UnknownBackend(BackendError):
    """The ``backend`` setting names no engine this service knows."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(
            f"unknown backend {name!r} (ORCHESTRATOR_BACKEND); known backends: {', '.join(known)}"
        )
        self.known = known


class ImageNotFound(BackendError):
    """A build image is not present locally; we never pull."""


class ContainerGone(BackendError):
    """The container no longer exists (removed behind our back, or already reaped)."""


class StepLost(BackendError):
    """The step ended without its command ending it: its node was drained or went down, or
    the engine stopped or refused its task. The message says which."""


class StepGone(ContainerGone):
    """A build's step that should still be there (its job was running when the service
    stopped) is not: the daemon restarted, a node was lost, or it was removed by hand."""


class StepNotStarted(BackendError):
    """A build's step was set up but never started (the service stopped in between): its
    inputs may be incomplete, so it is removed and the job runs again from its sources."""


class NoPlacement(BackendError):
    """No node of the cluster can take the step (none active, none with a GPU)."""


class Conflict(OrchestratorError):
    """The thing asked for is busy or in a state that does not allow this now."""

    http_status = 409
    code = "conflict"


class CacheBusy(Conflict):
    """A build cache is lent to a running build."""


class VolumeInUse(Conflict):
    """The engine will not remove a volume a container still has mounted."""


class NoStoredInputs(Conflict):
    """A build to reproduce whose inputs were not kept (it finished before they were)."""

    code = "no_inputs"


class JobStateConflict(Conflict):
    """The job is in a state that does not allow this (e.g. cancelling a finished job)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status

    def details(self) -> dict[str, Any]:
        return {"status": self.status}


class InsufficientStorage(OrchestratorError):
    """The data disk (or the queue's share of it) has no room for this now; try again later."""

    http_status = 507
    code = "insufficient_storage"


class ShuttingDown(OrchestratorError):
    """The service is stopping and takes no new work."""

    http_status = 503
    code = "unavailable"


class StoreError(OrchestratorError):
    """SQLite failed, or the store is closed; the sqlite3 error, if any, is the ``__cause__``."""


class InstallError(OrchestratorError):
    """A worker package does not hold what the catalog promised."""


class RepoError(OrchestratorError):
    """A package repository could not be changed (repo-add, gpg, the disk); the database
    served before is whole and still served."""


class ProvenanceError(OrchestratorError):
    """A build's provenance could not be made, or does not check out (its signature, or the
    package is not among its subjects)."""


class InsecureBind(OrchestratorError):
    """Binding beyond loopback without a token would hand the Docker socket to the network."""


class AlreadyRunning(OrchestratorError):
    """Another service holds this data directory (and instance): two would both adopt, reap
    and write the same jobs."""


class Detached(OrchestratorError):
    """The service is stopping and leaves the job's build running (``on_stop=leave``): not an
    ending. ``left`` says whether a step was left running; if not, nothing had started."""

    def __init__(self, message: str, *, left: bool) -> None:
        super().__init__(message)
        self.left = left
