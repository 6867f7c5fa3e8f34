"""The exception tree is one tree: every class is in errors.py, and the API maps each class to
its status and code."""

from __future__ import annotations

import json

import pytest

from orchestrator import errors
from orchestrator.api.errors import translate


def test_every_error_class_lives_in_errors() -> None:
    for cls in (
        errors.StoreError,
        errors.JobNotFound,
        errors.InstallError,
        errors.WorkerNotFound,
        errors.InsecureBind,
    ):
        assert cls.__module__ == "orchestrator.errors"
        assert issubclass(cls, errors.OrchestratorError)
    assert issubclass(errors.JobNotFound, errors.NotFound)
    assert issubclass(errors.WorkerNotFound, errors.NotFound)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.JobNotFound("ghost"), 404, "not_found"),
        (errors.WorkerNotFound("ghost"), 404, "not_found"),
        (errors.StoreError("disk full"), 500, "internal_error"),
        (errors.InstallError("no binary"), 500, "internal_error"),
    ],
)
def test_moved_classes_keep_their_http_status(
    exc: errors.OrchestratorError, status: int, code: str
) -> None:
    response = translate(exc)
    assert response.status == status
    assert isinstance(response.body, bytes)
    assert json.loads(response.body)["error"] == code


# What each class of the tree answers, as the API's old chain of isinstance checks did: a new
# class must be placed here, so its answer is a decision.
ANSWERS = {
    "OrchestratorError": (500, "internal_error"),
    "InvalidInput": (400, "bad_request"),
    "PkgbuildError": (422, "bad_pkgbuild"),
    "InspectTimeout": (422, "bad_pkgbuild"),
    "ArchiveError": (400, "bad_archive"),
    "ArchiveTooLarge": (413, "too_large"),
    "VariantError": (422, "bad_variant"),
    "VariantRefused": (422, "variant_refused"),
    "NotFound": (404, "not_found"),
    "JobNotFound": (404, "not_found"),
    "WorkerNotFound": (404, "not_found"),
    "UnknownOperation": (422, "unknown_operation"),
    "NotReproducible": (422, "not_reproducible"),
    "BackendError": (502, "backend_error"),
    "BackendUnavailable": (503, "unavailable"),
    "UnknownBackend": (502, "backend_error"),
    "ImageNotFound": (502, "backend_error"),
    "ContainerGone": (502, "backend_error"),
    "StepLost": (502, "backend_error"),
    "StepGone": (502, "backend_error"),
    "StepNotStarted": (502, "backend_error"),
    "NoPlacement": (502, "backend_error"),
    "Conflict": (409, "conflict"),
    "CacheBusy": (409, "conflict"),
    "VolumeInUse": (409, "conflict"),
    "JobStateConflict": (409, "conflict"),
    "NoStoredInputs": (409, "no_inputs"),
    "InsufficientStorage": (507, "insufficient_storage"),
    "ShuttingDown": (503, "unavailable"),
    "StoreError": (500, "internal_error"),
    "InstallError": (500, "internal_error"),
    "RepoError": (500, "internal_error"),
    "ProvenanceError": (500, "internal_error"),
    "InsecureBind": (500, "internal_error"),
    "AlreadyRunning": (500, "internal_error"),
    "Detached": (500, "internal_error"),
}


def tree(cls: type[errors.OrchestratorError]) -> list[type[errors.OrchestratorError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in tree(sub))]


def test_every_class_of_the_tree_says_its_answer() -> None:
    classes = tree(errors.OrchestratorError)
    assert {c.__name__ for c in classes} == set(ANSWERS)
    for cls in classes:
        assert (cls.http_status, cls.code) == ANSWERS[cls.__name__], cls.__name__


@pytest.mark.parametrize(
    ("exc", "fields"),
    [
        (errors.PkgbuildError("bad", line=3), {"line": 3, "problems": ["bad"]}),
        (errors.ArchiveTooLarge("big", limit_bytes=10), {"limit_bytes": 10}),
        (errors.VariantRefused("metal", "no Metal here", "use cpu"), {"variant": "metal"}),
        (errors.UnknownOperation("x", ("build",)), {"operations": ["build"]}),
        (errors.JobStateConflict("ended", "succeeded"), {"status": "succeeded"}),
    ],
)
def test_an_answer_carries_the_fields_its_class_adds(
    exc: errors.OrchestratorError, fields: dict[str, object]
) -> None:
    body = json.loads(translate(exc).body)  # type: ignore[arg-type]
    assert fields.items() <= body.items()
