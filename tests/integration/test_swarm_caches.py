"""Build caches on a swarm, where a named volume would be the node's: the cache travels as an
archive the manager keeps (``backend/_swarmvolumes.py``), so a build on any node starts as warm
as the last one left it, with no volume on the node; and cache=off uses none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from orchestrator import Action, Engine, Settings
from orchestrator.build.caches import volume_name

from .test_caches import cache_volumes, succeeded

pytestmark = [pytest.mark.docker, pytest.mark.swarm]


@pytest.fixture
def backend_name() -> str:
    return "swarm"


@pytest.mark.timeout(900)
async def test_a_swarm_build_finds_what_the_last_one_left_and_cache_off_uses_none(
    engine: Engine,
    build_dir: Callable[..., Path],
    settings: Settings,
    docker_client: docker.DockerClient,
) -> None:
    _, cached, _ = await succeeded(engine, build_dir("greeter"))
    assert cached["used"] is True and cached["warm"] is False
    archive = (
        settings.data_dir / "swarm-volumes" / f"{volume_name(settings.instance_id, 'greeter:cpu')}"
    ).with_suffix(".tar.zst")
    assert archive.stat().st_size > 0

    # The task has nothing of the first one's on its node: everything comes from the archive.
    _, cached, recorder = await succeeded(engine, build_dir("greeter"))
    assert cached["warm"] is True
    # Its prepare() copies the Rust files (new mtimes): the library comes from sccache, the C
    # object from ccache.
    assert cached["sccache"]["hits"] >= 1, cached
    assert cached["ccache"] == {"hits": 1, "misses": 0}, cached
    assert cache_volumes(docker_client, settings) == []
    said = [e.message for e in recorder.events if e.action is Action.CACHE]
    assert said[0] == "Cache greeter:cpu (warm) mounted at /cache"
    assert [c["key"] for c in engine.caches.listing()] == ["greeter:cpu"]

    kept = archive.read_bytes()
    _, cached, recorder = await succeeded(engine, build_dir("greeter"), cache=False)
    assert cached == {"used": False, "why": "cache=off was asked for"}
    assert not any("orchestrator: could not" in line for line in recorder.lines())
    assert archive.read_bytes() == kept  # neither read (nothing to tell) nor written
