"""schemathesis against the app: requests generated from the OpenAPI document, for every route.

No answer may be a 5xx, and each must conform to the document: a documented status, its
Content-Type, its headers, its schema. The whole app runs on the fake backend, served on
127.0.0.1 from a thread of its own (schemathesis calls it over real HTTP, with requests).
Generation is derandomized and small, so the run is the same every time and takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from aiohttp import web
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.api.openapi import document
from orchestrator.api.routes import TAR_TYPES
from orchestrator.backend.fake import FakeBackend

schema = schemathesis.openapi.from_dict(json.loads(json.dumps(document())))
# A build directory's tar is bytes like any other: send them as they were generated.
schemathesis.serializer.alias(list(TAR_TYPES[:-1]), "application/octet-stream")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    settings = Settings(data_dir=data_dir, instance_id="unit-schemathesis")
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings, backend=FakeBackend()))

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@schema.parametrize()
@hypothesis.settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_the_api_answers_as_its_document_says(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
