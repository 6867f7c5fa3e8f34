"""An in-memory backend for unit tests of the runner and the registry (``backend=fake``).

Each step plays a script: lines to print (with optional pauses) and an exit code. It honours
the interface's contract (the output from the first line, destroy idempotent, kill of an exited
step is fine), sends its output through the same line splitter as a real engine, and records
every call, so tests can assert what the runner did and in which order.
"""

from __future__ import annotations

import asyncio
import io
import re
import shlex
import tarfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from ..build.cachescript import REPORT_DIR
from ..errors import BackendError, ContainerGone, ImageNotFound, VolumeInUse
from . import ExitStatus, FoundStep, OutputChunk, PathUsage, Ran, Step, StepState, Stream, Usage
from ._adopt import Skipper
from .lines import LineSplitter


@dataclass
class Script:
    """What a fake container does: ``(stream, text, pause_s)`` steps, then exit."""

    steps: list[tuple[Stream, str, float]] = field(default_factory=list)
    exit_code: int = 0
    oom_killed: bool = False
    disk_bytes: int | None = None  # what disk_usage reports once the container has started
    cache_bytes: int | None = None  # what path_usage reports while it runs
    packages: dict[str, bytes] = field(
        default_factory=lambda: {"demo-1.0-1-x86_64.pkg.tar.gz": b"pkg"}
    )


@dataclass
class FakeContainer:
    id: str
    step: Step
    script: Script
    files: dict[str, bytes] = field(default_factory=dict)
    state: StepState = "created"  # created → running → exited
    exit_code: int | None = None
    queue: asyncio.Queue[list[OutputChunk] | None] = field(default_factory=asyncio.Queue)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # Everything it printed, as an engine's log keeps it (``reattach``), and when it grew.
    log: list[OutputChunk] = field(default_factory=list)
    grew: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float | None = None


class FakeLog:
    """``reattach``: the container's log from its first line, less ``skip`` lines a stream."""

    def __init__(self, container: FakeContainer, skip: Mapping[Stream, int], follow: bool):
        self._container = container
        self._skipper = Skipper(skip)
        self._follow = follow

    async def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        container, pos = self._container, 0
        while True:
            batch = container.log[pos:]
            pos += len(batch)
            if out := self._skipper.take(batch):
                yield out
                continue
            if not self._follow or (container.exited.is_set() and pos == len(container.log)):
                if self._skipper.short:  # as an engine whose log was cut says
                    raise BackendError("the engine no longer holds the start of the output")
                return
            container.grew.clear()
            if pos == len(container.log) and not container.exited.is_set():
                await container.grew.wait()

    async def aclose(self) -> None:
        return None


class FakeOutput:
    def __init__(self, container: FakeContainer) -> None:
        self._container = container

    async def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        while (batch := await self._container.queue.get()) is not None:
            yield batch

    async def aclose(self) -> None:
        return None


class FakeBackend:
    name = "fake"
    sandbox = "Container"

    def __init__(self, script: Script | None = None, *, images: tuple[str, ...] | None = None):
        self.script = script or Script()
        self.images = images
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, str]] = []
        self.gpu = False
        self.labels: dict[str, str] = {}
        self.steps: dict[str, Step] = {}  # every step ever set up, by its handle
        self.volumes: dict[str, dict[str, str]] = {}  # name → labels
        self.volume_bytes: dict[str, int] = {}  # what volume_usage says of each
        self.cache_files: dict[str, bytes] = {}  # what a cache wrapper would leave to copy out
        self.reading: Script | None = None  # what an exec'd reading plays instead of makepkg's
        self.tidy_code = 0  # what any other exec (a reader's tidying) exits with
        self.cpu: dict[str, float] = {}  # what cpu_seconds says of a step (0 by default)
        self.execs: list[tuple[str, tuple[str, ...], str]] = []  # (handle, command, user)
        # Where a step's user could write; None: this fake cannot tell (disk_usage then).
        self.writable: tuple[str, ...] | None = None
        self.usage_complete = True  # False: path_usage says something there was unreadable
        self.figures: Usage | None = None  # what usage says of a running step (None: nothing)
        self.running: tuple[str, ...] = ()  # what busiest says runs in a step
        self._next = 0

    def _get(self, container_id: str) -> FakeContainer:
        try:
            return self.containers[container_id]
        except KeyError:
            raise ContainerGone(f"no such container: {container_id}") from None

    async def ping(self) -> None:
        return None

    @property
    def supports_usage(self) -> bool:
        return True

    async def usage(self, handle: str) -> Usage | None:
        return self.figures if self._get(handle).state == "running" else None

    async def busiest(self, handle: str) -> tuple[str, ...]:
        self._get(handle)
        return self.running

    async def image_present(self, image: str) -> bool:
        return self.images is None or image in self.images

    async def gpu_runtime(self) -> bool:
        return self.gpu

    async def image_labels(self, image: str) -> Mapping[str, str]:
        if not await self.image_present(image):
            raise ImageNotFound(f"build image {image!r} is not on this Docker host")
        return dict(self.labels)

    async def setup(self, step: Step) -> str:
        if self.images is not None and step.image not in self.images:
            raise ImageNotFound(f"build image {step.image!r} is not on this Docker host")
        self._next += 1
        cid = f"fake{self._next:060d}"
        container = FakeContainer(cid, step, self.script)
        if step.inputs is not None:
            step.inputs.seek(0)
            with tarfile.open(fileobj=step.inputs) as archive:
                for member in archive.getmembers():
                    data = archive.extractfile(member)
                    if data is not None:
                        container.files[f"{step.workdir}/{member.name}"] = data.read()
        self.containers[cid] = container
        self.steps[cid] = step
        self.calls.append(("setup", cid))
        return cid

    async def start(self, handle: str) -> FakeOutput:
        container = self._get(handle)
        self.calls.append(("start", handle))
        container.state = "running"
        container.started_at = time.time()
        if container.step.command[:2] == ("makepkg", "--printsrcinfo"):
            pkgbuild = container.files.get(f"{container.step.workdir}/PKGBUILD", b"")
            container.script = printsrcinfo(pkgbuild.decode(errors="replace"))
        output = FakeOutput(container)
        if container.step.tied:  # a warm sandbox: it only waits
            container.queue.put_nowait(None)
            return output
        container.task = asyncio.create_task(self._play(container))
        # On the task's end, not in it: a task cancelled before it first ran runs none of its
        # code, and a kill right after ``start`` would wait for an exit never told.
        container.task.add_done_callback(lambda task: _ended(container, task))
        return output

    async def _play(self, container: FakeContainer) -> None:
        # Each script line leaves as bytes, as an engine's would, through the shared splitter.
        splitter = LineSplitter()
        try:
            for stream, text, pause_s in container.script.steps:
                if pause_s:
                    await asyncio.sleep(pause_s)
                data = text.encode() + b"\n"
                chunks = splitter.feed([(stream, data)], time.time())
                container.log.extend(chunks)
                container.grew.set()
                await container.queue.put(chunks)
            container.exit_code = container.script.exit_code
        except asyncio.CancelledError:
            container.exit_code = 137

    async def wait(self, container_id: str) -> ExitStatus:
        container = self._get(container_id)
        await container.exited.wait()
        assert container.exit_code is not None
        return ExitStatus(container.exit_code, container.script.oom_killed)

    async def disk_usage(self, container_id: str) -> int | None:
        container = self._get(container_id)
        return container.script.disk_bytes if container.state != "created" else 0

    async def path_usage(self, container_id: str, paths: Sequence[str]) -> PathUsage | None:
        # The cache is /cache; what the script says it wrote to its disk is in its build dir.
        container = self._get(container_id)
        if container.state != "running":
            return None
        script = container.script
        sizes = {"/cache": script.cache_bytes, "/build": script.disk_bytes}
        if any(sizes.get(path, 0) is None for path in paths):
            return None
        return PathUsage({path: sizes.get(path) or 0 for path in paths}, self.usage_complete)

    async def writable_places(self, container_id: str) -> tuple[str, ...] | None:
        return self.writable

    @property
    def enforces_disk_limit(self) -> bool:
        return False

    async def kill(self, container_id: str, grace_s: float = 0.0) -> None:
        self.calls.append(("kill", container_id))
        container = self.containers.get(container_id)
        if container is None or container.task is None:
            return
        container.task.cancel()
        await container.exited.wait()

    @property
    def supports_volumes(self) -> bool:
        return True

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        if name in self.volumes:
            return False
        self.volumes[name] = dict(labels)
        return True

    async def remove_volume(self, name: str) -> None:
        if any(name in c.step.volumes for c in self.containers.values()):
            raise VolumeInUse(f"volume {name} is in use by a container")
        self.volumes.pop(name, None)
        self.volume_bytes.pop(name, None)

    async def volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        return self.volume_bytes.get(name) if name in self.volumes else None

    async def list_volumes(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        return {
            name: dict(found)
            for name, found in self.volumes.items()
            if all(found.get(k) == v for k, v in labels.items())
        }

    async def collect(self, handle: str, path: str, max_bytes: int | None = None) -> IO[bytes]:
        container = self._get(handle)
        self.calls.append(("collect", handle))
        files = container.script.packages
        if path.startswith(REPORT_DIR):
            files = self.cache_files if container.step.volumes else {}
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        out.seek(0)
        return out

    @property
    def supports_exec(self) -> bool:
        return True

    async def put(self, handle: str, path: str, tar: IO[bytes]) -> None:
        container = self._get(handle)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as archive:
            for member in archive.getmembers():
                data = archive.extractfile(member)
                if data is not None:
                    container.files[f"{path}/{member.name}"] = data.read()

    async def exec(
        self, handle: str, command: tuple[str, ...], *, user: str, workdir: str, keep_bytes: int
    ) -> Ran:
        """A reading (a command that runs ``makepkg --printsrcinfo``) plays ``reading`` or
        what makepkg would print for the PKGBUILD at ``workdir``; anything else succeeds."""
        container = self._get(handle)
        if container.state != "running":  # as an engine says of a stopped container
            raise BackendError(f"container {handle[:12]} is not running")
        self.execs.append((handle, command, user))
        if "makepkg --printsrcinfo" not in " ".join(command):
            return Ran(self.tidy_code, b"", b"")
        pkgbuild = container.files.get(f"{workdir}/PKGBUILD", b"").decode(errors="replace")
        script = self.reading or printsrcinfo(pkgbuild)
        printed: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        for stream, text, pause_s in script.steps:
            if pause_s:
                await asyncio.sleep(pause_s)
            if handle not in self.containers:
                raise ContainerGone(f"no such container: {handle}")
            printed[stream] += text.encode() + b"\n"
        tail = {name: data[-keep_bytes:] for name, data in printed.items()}
        return Ran(script.exit_code, tail["stdout"], tail["stderr"])

    async def cpu_seconds(self, handle: str) -> float | None:
        self._get(handle)
        return self.cpu.get(handle, 0.0)

    async def destroy(self, handle: str) -> None:
        self.calls.append(("destroy", handle))
        container = self.containers.pop(handle, None)
        if container is not None and container.task is not None:
            container.task.cancel()

    async def reap(self, labels: Mapping[str, str]) -> list[str]:
        ids = [
            cid
            for cid, c in self.containers.items()
            if all(c.step.labels.get(k) == v for k, v in labels.items())
        ]
        for cid in ids:
            await self.destroy(cid)
        return ids

    async def list_steps(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        return {
            cid: dict(c.step.labels)
            for cid, c in self.containers.items()
            if all(c.step.labels.get(k) == v for k, v in labels.items())
        }

    supports_adopt = True

    async def find(self, labels: Mapping[str, str]) -> list[FoundStep]:
        found = []
        for cid, c in self.containers.items():
            if all(c.step.labels.get(k) == v for k, v in labels.items()):
                ended = None
                if c.state == "exited" and c.exit_code is not None:
                    ended = ExitStatus(c.exit_code, c.script.oom_killed)
                found.append(
                    FoundStep(cid, dict(c.step.labels), c.step.image, c.state, c.started_at, ended)
                )
        return found

    async def reattach(
        self,
        handle: str,
        skip: Mapping[Stream, int],
        *,
        follow: bool,
        ends: Mapping[Stream, tuple[str, str]] | None = None,
    ) -> FakeLog:
        # ``ends`` goes unused: this log never rotates.
        self.calls.append(("reattach", handle))
        return FakeLog(self._get(handle), skip, follow)

    async def close(self) -> None:
        for cid in list(self.containers):
            await self.destroy(cid)


def _ended(container: FakeContainer, task: asyncio.Task[None]) -> None:
    if container.exit_code is None:  # cancelled before it ran
        container.exit_code = 137
    container.state = "exited"
    container.queue.put_nowait(None)
    container.exited.set()
    container.grew.set()


_ASSIGN = re.compile(r"^(pkgname|pkgbase|pkgver|pkgrel|epoch|arch)=(.*)$", re.MULTILINE)


def printsrcinfo(pkgbuild: str) -> Script:
    """What ``makepkg --printsrcinfo`` would print for a plain PKGBUILD (top-level assignments
    of literal values only): enough for unit tests of what uses it, never a PKGBUILD reader."""
    if not re.search(r"^package(_[\w.+-]+)?\s*\(\)", pkgbuild, re.MULTILINE):
        error = "==> ERROR: Missing package() function in /src/PKGBUILD"
        return Script([("stderr", error, 0)], exit_code=1, packages={})
    values: dict[str, list[str]] = {}
    for key, raw in _ASSIGN.findall(pkgbuild):
        words = shlex.split(raw.strip("()"), comments=True)
        values[key] = words
    names = values.get("pkgname", ["demo"])
    lines = [f"pkgbase = {values.get('pkgbase', names)[0]}"]
    for key in ("pkgver", "pkgrel", "epoch", "arch"):
        lines += [f"\t{key} = {word}" for word in values.get(key, [])]
    for name in names:
        lines += ["", f"pkgname = {name}"]
    return Script([("stdout", "\n".join(lines), 0)], packages={})
