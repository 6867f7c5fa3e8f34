"""A client generated from our OpenAPI document (openapi-python-client, as a user would make
one) drives a real build: its functions are named by operationId and grouped by tag, and what
it sends and parses is what the service takes and answers."""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from orchestrator.api.openapi import document
from orchestrator.api.routes import ROUTES, TAR_TYPES

from .. import waiting
from ..conftest import PKGBUILDS
from .service import tar_dir

pytestmark = pytest.mark.docker

PACKAGE = "orchestrator_api_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    folder = tmp_path_factory.mktemp("generated")
    (folder / "openapi.json").write_text(json.dumps(document()))
    # Our other tar types are the same bytes: the generator knows octet-stream as a file.
    overrides = {media: "application/octet-stream" for media in TAR_TYPES[:-1]}
    config = {"post_hooks": [], "content_type_overrides": overrides}
    (folder / "config.json").write_text(json.dumps(config))
    generator = Path(sys.executable).with_name("openapi-python-client")
    arguments = ["--path", "openapi.json", "--config", "config.json", "--meta", "none"]
    done = subprocess.run(
        [str(generator), "generate", *arguments, "--output-path", PACKAGE],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout  # every operation was generated whole
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def operation(generated: ModuleType, tag: str, operation_id: str) -> Any:
    return importlib.import_module(f"{generated.__name__}.api.{tag}.{operation_id}")


def test_every_operation_is_a_function_named_by_its_id_in_its_tag(generated: ModuleType) -> None:
    for route in ROUTES:
        module = operation(generated, route.tag, route.operation_id)
        assert callable(module.asyncio_detailed), route.operation_id


async def test_a_build_driven_through_the_generated_client(
    generated: ModuleType, client: TestClient
) -> None:
    api = generated.Client(base_url=str(client.make_url("")).rstrip("/"), timeout=60)
    types = importlib.import_module(f"{generated.__name__}.types")
    submit = operation(generated, "builds", "submit_build")
    get_job = operation(generated, "jobs", "get_job")
    list_artifacts = operation(generated, "jobs", "list_artifacts")
    get_artifact = operation(generated, "jobs", "get_artifact")
    get_provenance = operation(generated, "jobs", "get_provenance")

    # Bytes, not a file object: httpx's AsyncClient cannot send a blocking stream.
    upload = types.File(payload=tar_dir(PKGBUILDS / "hello-c"))
    async with api:
        answer = await submit.asyncio_detailed(client=api, body=upload)
        assert answer.status_code == 201, answer.content
        submitted = answer.parsed
        assert submitted.pkgname == "hello-c" and submitted.job_url.endswith(submitted.job_id)
        job = await waiting.until(
            lambda: get_job.asyncio(submitted.job_id, client=api),
            lambda job: job.status.value not in ("queued", "running"),
            timeout_s=180,
            interval_s=0.2,
            what="the job's end",
        )
        assert job.status.value == "succeeded", job
        artifacts = await list_artifacts.asyncio(submitted.job_id, client=api)
        [artifact] = artifacts.artifacts
        got = await get_artifact.asyncio_detailed(submitted.job_id, artifact.name, client=api)
        provenance = await get_provenance.asyncio(submitted.job_id, client=api)
    assert got.status_code == 200 and len(got.content) == artifact.size_bytes
    # The provenance parses as the document says, and its subject is the served bytes.
    assert provenance.payload_type == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(provenance.payload))
    digest = hashlib.sha256(got.content).hexdigest()
    assert statement["subject"] == [{"name": artifact.name, "digest": {"sha256": digest}}]
    with tarfile.open(fileobj=io.BytesIO(got.content)) as package:
        assert ".PKGINFO" in package.getnames()
