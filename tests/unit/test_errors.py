"""The exception tree is one tree: every class is in errors.py, old import paths still work,
and the API maps the moved classes to the statuses it always did."""

from __future__ import annotations

import json

import pytest

from orchestrator import catalog, errors, installed, store
from orchestrator.api import InsecureBind, app
from orchestrator.api.errors import translate


def test_moved_classes_live_in_errors_and_keep_their_old_paths() -> None:
    assert store.StoreError is errors.StoreError
    assert store.JobNotFound is errors.JobNotFound
    assert installed.InstallError is errors.InstallError
    assert catalog.WorkerNotFound is errors.WorkerNotFound
    assert InsecureBind is errors.InsecureBind is app.InsecureBind
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
