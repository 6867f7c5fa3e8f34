"""Fixtures the unit modules share: the swarm engine's handoff listener on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from orchestrator.backend._handoff import Handoff
from orchestrator.backend._swarmvolumes import VolumeStore


@contextlib.asynccontextmanager
async def listening(volumes: VolumeStore | None = None) -> AsyncIterator[Handoff]:
    """A handoff listener on 127.0.0.1 (an ephemeral port), closed at the end."""
    exchange = Handoff("127.0.0.1", 0, None, max_bytes=1000, secret=b"s" * 32, volumes=volumes)
    await exchange.start()
    try:
        yield exchange
    finally:
        await exchange.close()


@pytest.fixture
async def handoff() -> AsyncIterator[Handoff]:
    async with listening() as exchange:
        yield exchange
