"""The ``Backend`` contract (``tests/contract.py``) kept by the in-memory fake every unit test
stands on: no Docker needed. The real engines run the same tests in
``tests/integration/test_backend_contract.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from orchestrator.backend.fake import FakeBackend
from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL

from ..contract import Contract, Subject

IMAGE = "orchestrator/build:cpu"


@pytest.fixture
async def subject() -> AsyncIterator[Subject]:
    fake = FakeBackend(images=(IMAGE,))
    yield Subject(fake, IMAGE, {INSTANCE_LABEL: "contract", JOB_LABEL: "job"}, fake=fake)
    await fake.close()


class TestFakeBackend(Contract):
    pass
