"""Shared fixtures: test PKGBUILDs and a recorder that stands in for the job store's sink."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
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


# -- the cuda image, which scripts/test may still be making ---------------------------------


class CudaBuild:
    """The background build of the cuda image that scripts/test started: it ends by writing its
    exit status to ``status`` (whole, renamed into place). Waited for once, before the first
    test that needs the image; its outcome then holds for every such test."""

    def __init__(self, status: Path, log: Path | None, wait_s: float) -> None:
        self.status, self.log, self.wait_s = status, log, wait_s
        self.problem: str | None = None
        self._waited = False

    def wait(self, say: Callable[[str], None]) -> None:
        if self._waited:
            return
        self._waited = True
        if not self.status.exists():
            say(f"waiting for the cuda image's build to end ({self.status})")
        try:
            waiting.until_sync(
                self.status.exists,
                timeout_s=self.wait_s,
                interval_s=1,
                what=f"the cuda image's build writing {self.status}",
            )
        except AssertionError as exc:
            self.problem = str(exc)
            return
        code = self.status.read_text().strip()
        if code != "0":
            self.problem = f"making the cuda image failed (images/bootstrap --cuda: exit {code})"
            if self.log is not None and self.log.exists():
                end = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                self.problem += f"; the end of {self.log}:\n{end}"


def _cuda_build() -> CudaBuild | None:
    status = os.environ.get("ORCHESTRATOR_TEST_CUDA_BUILD")
    if not status:  # pytest run by hand: the image is there or its tests say how to make it
        return None
    log = os.environ.get("ORCHESTRATOR_TEST_CUDA_LOG")
    wait_s = float(os.environ.get("ORCHESTRATOR_TEST_CUDA_WAIT_S", "3600"))
    return CudaBuild(Path(status), Path(log) if log else None, wait_s)


CUDA_BUILD = _cuda_build()


def needs_cuda(item: pytest.Item) -> bool:
    return item.get_closest_marker("cuda") is not None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that need the cuda image run last (in their order), so that every other test
    runs while scripts/test still makes it."""
    items.sort(key=needs_cuda)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    # Here, not in a fixture: outside pytest-timeout's timer, since the build may take minutes.
    if CUDA_BUILD is not None and needs_cuda(item):
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        CUDA_BUILD.wait(lambda line: reporter.write_line(line) if reporter else None)
    yield


def pytest_runtest_setup(item: pytest.Item) -> None:
    if CUDA_BUILD is not None and CUDA_BUILD.problem is not None and needs_cuda(item):
        pytest.fail(CUDA_BUILD.problem, pytrace=False)


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


def compiling(settings: Settings) -> Settings:
    """``settings`` for a compile-bound test (cargo, autotools, CMake, nvcc), whose builds get
    the CPUs the service gives a build by default: such a test measures nothing about CPU, and
    its compile is most of the suite's time. Every other test's builds keep to one CPU, so that
    the test's own process always has a core of a 2-core machine."""
    default = Settings.model_fields["build_cpus"].default
    return settings.model_copy(update={"build_cpus": max(settings.build_cpus, default)})


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
