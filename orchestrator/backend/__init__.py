"""The container engine behind a small interface, so Docker can be swapped for another engine.

A build is: ``create`` → ``copy_in`` → ``attach`` → ``start`` → read the output → ``wait`` →
``copy_out`` → ``remove``; ``kill`` may come at any point, and ``remove`` is always safe to call
again. Only the runner sequences these calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Literal, Protocol

Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    image: str
    command: tuple[str, ...]
    labels: Mapping[str, str]
    user: str = "builder"
    workdir: str = "/build"
    env: Mapping[str, str] = field(default_factory=dict)
    network: str = "bridge"
    memory_bytes: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    log_max_bytes: int | None = None
    gpus: bool = False
    disk_bytes: int | None = None  # what the build may write to its own filesystem
    read_only: bool = False  # the root filesystem; then only tmpfs and scratch are writable
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # path → mount options
    scratch: tuple[str, ...] = ()  # empty writable folders, gone with the container
    volumes: Mapping[str, str] = field(default_factory=dict)  # named volume → mount path


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """Whole lines the container wrote to one stream, joined by ``\n`` (no trailing newline).

    Output travels in runs of lines, not line by line: a build can print close to a million
    lines a second, and per-line objects would cost more than everything else on the path.
    """

    stream: Stream
    text: str
    ts: float  # when the first of these lines was read


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a container ended: its exit code, and whether the kernel killed a process in it for
    going over the memory limit (whatever the exit code then says)."""

    code: int
    oom_killed: bool = False


class OutputStream(Protocol):
    """Batches of chunks in the order the container wrote them; ends when the container exits."""

    def __aiter__(self) -> AsyncIterator[list[OutputChunk]]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` when the engine cannot be reached."""
        ...

    async def image_present(self, image: str) -> bool: ...

    async def image_labels(self, image: str) -> Mapping[str, str]:
        """The image's labels (what it provides, its recipe); raises ``ImageNotFound``."""
        ...

    async def gpu_runtime(self) -> bool:
        """Whether containers can be given GPUs here."""
        ...

    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container from a local image; return its id. Never pulls."""
        ...

    async def copy_in(self, container_id: str, path: str, tar: IO[bytes]) -> None: ...

    async def attach(self, container_id: str) -> OutputStream:
        """Attach to the output; called before ``start`` so not a line is missed."""
        ...

    async def start(self, container_id: str) -> None: ...

    async def wait(self, container_id: str) -> ExitStatus:
        """Wait for the container to exit; say how it ended."""
        ...

    async def disk_usage(self, container_id: str) -> int | None:
        """Bytes the container has written to its own filesystem; None when this engine cannot
        tell. May be slow (a walk of the container's files): the caller paces itself."""
        ...

    async def path_usage(self, container_id: str, path: str) -> int | None:
        """Bytes under ``path`` in the running container (a volume), as its user sees them;
        None when this engine cannot tell or the container has stopped."""
        ...

    @property
    def enforces_disk_limit(self) -> bool:
        """Whether ``ContainerSpec.disk_bytes`` is a hard quota here (writes past it fail);
        otherwise only ``disk_usage`` can tell, after the fact."""
        ...

    @property
    def supports_volumes(self) -> bool:
        """Whether named volumes (build caches) can be made and mounted here."""
        ...

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        """Make the named volume unless it exists; say whether it was made now."""
        ...

    async def remove_volume(self, name: str) -> None:
        """Remove the named volume; gone already is fine, in use is ``VolumeInUse``."""
        ...

    async def volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        """Bytes in the named volume, counted by root (so nothing in it is hidden), with
        ``image`` as the tool; None when this engine cannot tell."""
        ...

    async def list_volumes(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        """The named volumes carrying all of ``labels``: name → its labels."""
        ...

    async def kill(self, container_id: str, grace_s: float = 0.0) -> None:
        """Stop the container and everything in it; a container that already exited is fine."""
        ...

    async def copy_out(
        self, container_id: str, path: str, max_bytes: int | None = None
    ) -> IO[bytes]:
        """A tar of ``path``, spooled on our side, of at most ``max_bytes`` (default: the
        artifact cap; past it ``ArchiveTooLarge``); the caller closes it."""
        ...

    async def remove(self, container_id: str) -> None:
        """Remove the container and its anonymous volumes; idempotent."""
        ...

    async def reap(self, labels: Mapping[str, str]) -> list[str]:
        """Remove every container carrying all of ``labels``; return their ids."""
        ...

    async def close(self) -> None: ...


__all__ = ["Backend", "ContainerSpec", "ExitStatus", "OutputChunk", "OutputStream", "Stream"]
