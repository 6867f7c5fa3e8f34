"""The session's guard sees what it must: a container of the session's still there, and a volume
one of them used that outlived it (an anonymous one, removed without its volumes); not what
another suite on this daemon made."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orchestrator import Settings
from orchestrator.build.runner import INSTANCE_LABEL

from .. import waiting
from ..leftovers import SESSION_LABEL, Leftovers

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def watch(docker_client: docker.DockerClient) -> Iterator[Leftovers]:
    # A session of its own, so that the real one's guard has nothing of this test to report.
    watch = Leftovers(docker_client, f"guard-{uuid.uuid4().hex[:8]}-")
    yield watch
    watch.stop()


def settle(watch: Leftovers, volume: str) -> None:
    """The daemon reports a mount a moment after the container starts: wait for its event."""
    waiting.until_sync(
        lambda: volume in watch.volumes, what="the daemon reporting the mount", interval_s=0.05
    )


def test_what_a_session_leaves_is_found_and_others_are_not(
    watch: Leftovers, docker_client: docker.DockerClient, settings: Settings
) -> None:
    prefix = watch.prefix
    image = settings.image_cpu
    kept = docker_client.containers.run(
        image, ["true"], labels={INSTANCE_LABEL: f"{prefix}svc"}, detach=True
    )
    # Removed without its volumes: its anonymous volume outlives it.
    dropped = docker_client.containers.run(
        image, ["true"], labels={SESSION_LABEL: prefix}, volumes=["/scratch"], detach=True
    )
    theirs = docker_client.containers.run(
        image, ["true"], labels={SESSION_LABEL: "someone-else-"}, volumes=["/x"], detach=True
    )
    dropped.reload()
    [anonymous] = [m["Name"] for m in dropped.attrs["Mounts"]]
    try:
        settle(watch, anonymous)
        dropped.wait()
        dropped.remove()
        assert [c.id for c in watch.containers()] == [kept.id]
        assert watch.mounted_volumes() == [anonymous]
    finally:
        for container in (kept, theirs):
            container.remove(force=True, v=True)
        docker_client.volumes.get(anonymous).remove(force=True)
    assert watch.containers() == []
    assert watch.mounted_volumes() == []


def test_a_session_that_leaves_a_container_fails_naming_it(
    tmp_path: Path, docker_client: docker.DockerClient, settings: Settings
) -> None:
    """The guard itself, in a session of its own (a pytest run in a subprocess)."""
    name = f"guard-{uuid.uuid4().hex[:12]}"
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import nothing_left_behind, pytest_sessionfinish\n"
    )
    (tmp_path / "test_leaves.py").write_text(
        "import docker\n"
        "from tests.conftest import SESSION_PREFIX\n"
        "from tests.leftovers import SESSION_LABEL\n"
        "def test_leaves_a_container():\n"
        "    docker.from_env().containers.create(\n"
        f"        {settings.image_cpu!r}, ['true'], name={name!r}, volumes=['/scratch'],\n"
        "        labels={SESSION_LABEL: SESSION_PREFIX},\n"
        "    )\n"
    )
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inner.returncode == 1, inner.stdout + inner.stderr
    assert "1 passed" in inner.stdout, inner.stdout
    assert f"this test session left behind: container {name} " in inner.stdout
    # ... and removed it, with its volume.
    assert (
        docker_client.containers.list(ignore_removed=True, all=True, filters={"name": name}) == []
    )
