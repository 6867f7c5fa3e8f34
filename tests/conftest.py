"""Shared fixtures: test PKGBUILDs and a recorder that stands in for the job store's sink."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import docker
import pytest

from orchestrator import Settings
from orchestrator.build.runner import INSTANCE_LABEL
from orchestrator.narration.events import Action, Event

from . import waiting
from .leftovers import Leftovers

PKGBUILDS = Path(__file__).parent / "pkgbuilds"


@pytest.fixture
def build_dir(tmp_path: Path) -> Callable[..., Path]:
    """Copy ``tests/pkgbuilds/<name>`` to a temp dir, filling ``@KEY@`` placeholders."""

    made = itertools.count()

    def make(name: str, **placeholders: object) -> Path:
        dest = tmp_path / "src" / f"{name}-{next(made)}"
        shutil.copytree(PKGBUILDS / name, dest)
        pkgbuild = dest / "PKGBUILD"
        text = pkgbuild.read_text()
        for key, value in placeholders.items():
            text = text.replace(f"@{key.upper()}@", str(value))
        pkgbuild.write_text(text)
        return dest

    return make


class Recorder:
    """A sink that keeps every event with the monotonic time it arrived."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.arrived: list[float] = []
        self._changed = asyncio.Event()

    async def __call__(self, batch: Sequence[Event]) -> None:
        now = time.monotonic()
        self.events.extend(batch)
        self.arrived.extend(now for _ in batch)
        self._changed.set()

    def lines(self, stream: str | None = None) -> list[str]:
        """Every output line, in order (an OUTPUT event holds a run of them)."""
        return [
            line
            for e in self.events
            if e.action in (Action.OUTPUT, Action.PHASE) and (stream is None or e.stream == stream)
            for line in e.message.split("\n")
        ]

    def actions(self) -> list[Action]:
        return [e.action for e in self.events]

    def arrival_of(self, predicate: Callable[[Event], bool]) -> float:
        for event, at in zip(self.events, self.arrived, strict=True):
            if predicate(event):
                return at
        raise AssertionError("no such event")

    async def wait_for(self, predicate: Callable[[Event], bool], timeout_s: float = 60) -> Event:
        async def scan() -> Event:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout_s)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


# Every instance this test session makes starts with this, and only those are swept at its end:
# another suite on the same daemon (a second checkout, CI beside a developer) is left alone.
SESSION_PREFIX = f"test-{uuid.uuid4().hex[:8]}-"


def instance_id(kind: str = "") -> str:
    return f"{SESSION_PREFIX}{kind}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[Leftovers | None]:
    """Nothing of this session may outlive it: a container or volume of its own still there at
    its end fails the run, named (and is removed). Off without a daemon (the unit layer)."""
    LEFT_BEHIND.clear()
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        yield None
        return
    watch = Leftovers(client, SESSION_PREFIX)
    yield watch
    watch.stop()
    # A removal under way (a swarm task's container goes about a second after its service)
    # may finish: wait a little for that, no longer.
    containers = waiting.until_sync(
        watch.containers, lambda found: not found, timeout_s=15, interval_s=0.2, on_timeout="return"
    )
    left = [
        f"container {c.name} ({c.image.tags or c.attrs['Config']['Image']})" for c in containers
    ]
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for name in sorted({*watch.named_volumes(), *watch.mounted_volumes()}):
        left.append(f"volume {name}")
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(name).remove(force=True)
    client.close()
    LEFT_BEHIND.extend(left)


# What the session left behind, said once it has ended (pytest_sessionfinish): a fixture's
# teardown cannot fail a run that -x stopped early without crashing pytest.
LEFT_BEHIND: list[str] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if LEFT_BEHIND:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "this test session left behind: " + "; ".join(LEFT_BEHIND)
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def remove_instance_volumes(client: docker.DockerClient, instance: str) -> None:
    """The build caches a test's service made: the test owns them, so they go with it."""
    for volume in client.volumes.list(filters={"label": f"{INSTANCE_LABEL}={instance}"}):
        # One still in use (a container left behind has it) is named by nothing_left_behind.
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the Docker daemon is not reachable: {exc}")
    settings = Settings()
    for image in (settings.image_cpu,):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"build image {image} is missing: run images/bootstrap first")
    yield client  # what a test left behind, nothing_left_behind reports and removes
    client.close()


@pytest.fixture
def backend_name() -> str:
    """The engine a test's ``settings`` name; the acceptance tests parametrize it (``swarm``)."""
    return "docker"


@pytest.fixture
def settings(
    tmp_path: Path,
    backend_name: str,
    request: pytest.FixtureRequest,
    nothing_left_behind: Leftovers | None,
) -> Iterator[Settings]:
    if backend_name == "swarm":
        request.getfixturevalue("swarm_manager")  # this engine in a swarm, for the session
    settings = Settings(
        backend=backend_name,
        data_dir=tmp_path / "data",
        instance_id=instance_id(),
        build_cpus=1.0,
        build_memory_bytes=1024**3,
        # An in-process service a test closes with a build running stops it, as before: left
        # running (the default), it would outlive the test. test_adopt and test_shutdown
        # test the default.
        on_stop="cancel",
    )
    yield settings
    if nothing_left_behind is not None:
        remove_instance_volumes(nothing_left_behind.client, settings.instance_id)
