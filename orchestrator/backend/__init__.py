"""The seam between a build and the engine that runs it: one step at a time.

Modelled on Woodpecker CI's backends. A ``Step`` says what a build needs (image, command, its
input files, limits as plain numbers), never an engine's options; each engine maps it onto its
own. For one step: ``setup`` → ``start`` (its output, from the first byte) → ``wait`` →
``collect`` → ``destroy``. ``kill`` may come at any point after ``setup``; ``destroy`` is always
safe to call again. Only the runner and the inspector sequence these calls. A step outlives the
service that set it up: a new one ``find``s it again by its labels and ``reattach``es its output
(where ``supports_adopt``), then goes on with ``wait`` → ``collect`` → ``destroy``.

``Steps`` is that protocol; what only some engines can do is a capability protocol of its own
(``Images``, ``Adoption``, ``Exec``, ``DiskWatch``, ``Volumes``), each with a flag or a None for
"not here". ``Backend`` is all of them together, as the service holds an engine.
``docs/backends.md`` says how Docker, Docker Swarm and Kubernetes map onto it; ``engines.py``
picks one by the ``backend`` setting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Literal, Protocol, runtime_checkable

from ._usage import Usage

Stream = Literal["stdout", "stderr"]
StepState = Literal["created", "running", "exited"]

# What identifies a step to its engine once it is set up: Docker's container id, a Swarm
# service's id, a pod's name. Opaque to the caller, which only passes it back.
Handle = str


@dataclass(frozen=True, slots=True)
class Step:
    """One command in a fresh sandbox from a local image: what a build needs, no engine's terms.

    Limits left at None are the engine's defaults. ``labels`` find the step again (``reap``).
    """

    image: str
    command: tuple[str, ...]
    labels: Mapping[str, str]
    user: str = "builder"
    workdir: str = "/build"
    env: Mapping[str, str] = field(default_factory=dict)
    inputs: IO[bytes] | None = None  # a tar, there at ``workdir`` before the command starts
    # The folders ``collect`` may ask for once the step has exited: an engine that cannot copy
    # out of an exited sandbox (Swarm) has the step send them back as it ends.
    outputs: tuple[str, ...] = ()
    network: bool = True  # off: no interface but loopback
    memory_bytes: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    disk_bytes: int | None = None  # what the step may write to its own filesystem
    log_max_bytes: int | None = None  # what the engine may keep of the output beside the stream
    gpus: bool = False  # every GPU of the host (only asked where ``gpu_runtime`` says yes)
    volumes: Mapping[str, str] = field(default_factory=dict)  # cache volume name → mount path
    # A sandbox that can write almost nowhere: a read-only root, with only ``workdir`` (the
    # inputs) and an in-memory ``/tmp`` of ``tmp_bytes`` writable; both gone with the step.
    read_only: bool = False
    tmp_bytes: int = 16 * 1024 * 1024
    # Ends by itself once this process is gone, however it went (kill -9 included): for a
    # warm sandbox that only serves this process, never for a build, which outlives it.
    tied: bool = False


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
    """How a step ended: its exit code, and whether the kernel killed a process in it for
    going over the memory limit (whatever the exit code then says)."""

    code: int
    oom_killed: bool = False


@dataclass(frozen=True, slots=True)
class Ran:
    """How a command run inside a running step ended, and the last bytes of what it printed
    (each stream is cut from its start to at most the ``keep_bytes`` asked for)."""

    code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True, slots=True)
class PathUsage:
    """Bytes under each path asked about. Not ``complete`` when something there could not be
    read (makepkg makes its package folder unlistable): that much more is not counted."""

    sizes: Mapping[str, int]
    complete: bool = True


@dataclass(frozen=True, slots=True)
class FoundStep:
    """A step found again by its labels (``find``), as the engine holds it now."""

    handle: Handle
    labels: Mapping[str, str]
    image: str
    state: StepState
    started_at: float | None = None  # when its command started (engine's clock); None: never
    exit: ExitStatus | None = None  # how it ended, once ``state`` is "exited"


class OutputStream(Protocol):
    """Batches of chunks in the order the step wrote them; ends when the step exits.
    ``lines.LineSplitter`` turns an engine's bytes into these."""

    def __aiter__(self) -> AsyncIterator[list[OutputChunk]]: ...

    async def aclose(self) -> None: ...


class Steps(Protocol):
    """The step protocol every engine speaks: what the runner and the inspector sequence."""

    @property
    def name(self) -> str:
        """What the ``backend`` setting calls this engine."""
        ...

    @property
    def sandbox(self) -> str:
        """What the narration calls one step here, capitalised: "Container", "Service"."""
        ...

    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` when the engine cannot be reached."""
        ...

    async def setup(self, step: Step) -> Handle:
        """Make the step's sandbox with its inputs in place, not yet running; never pulls an
        image (``ImageNotFound``). On failure nothing is left that ``reap`` would not find."""
        ...

    async def start(self, handle: Handle) -> OutputStream:
        """Start the step; its output from the first byte (not a line may be missed, however
        fast the step exits). The caller closes the stream."""
        ...

    async def wait(self, handle: Handle) -> ExitStatus:
        """Wait for the step to exit; say how it ended."""
        ...

    async def collect(self, handle: Handle, path: str, max_bytes: int | None = None) -> IO[bytes]:
        """A tar of ``path`` in the exited step, spooled on our side, of at most ``max_bytes``
        (default: the artifact cap; past it ``ArchiveTooLarge``); the caller closes it."""
        ...

    async def kill(self, handle: Handle, grace_s: float = 0.0) -> None:
        """Stop the step and every process in it (SIGTERM, SIGKILL after ``grace_s``); a step
        that already exited is fine."""
        ...

    async def destroy(self, handle: Handle) -> None:
        """Remove the step and whatever it wrote (not its cache volume); idempotent."""
        ...

    async def reap(self, labels: Mapping[str, str]) -> list[Handle]:
        """Destroy every step carrying all of ``labels``, in any state; return them."""
        ...

    async def list_steps(self, labels: Mapping[str, str]) -> dict[Handle, Mapping[str, str]]:
        """Every step carrying all of ``labels``, in any state: its handle → its labels."""
        ...

    async def close(self) -> None: ...


class Images(Protocol):
    """What the runner asks of the engine's local images (never pulled)."""

    async def image_present(self, image: str) -> bool: ...

    async def image_labels(self, image: str) -> Mapping[str, str]:
        """The image's labels (what it provides, its recipe); raises ``ImageNotFound``."""
        ...

    async def gpu_runtime(self) -> bool:
        """Whether steps can be given GPUs here."""
        ...


class Adoption(Protocol):
    """A step set up by an earlier process, found again and its output read back."""

    @property
    def supports_adopt(self) -> bool:
        """Whether ``find`` and ``reattach`` work here; otherwise a stopping service must end
        its steps, as no later one can pick them up."""
        ...

    async def find(self, labels: Mapping[str, str]) -> list[FoundStep]:
        """Every step carrying all of ``labels``, with its state (running, exited and how)."""
        ...

    async def reattach(
        self,
        handle: Handle,
        skip: Mapping[Stream, int],
        *,
        follow: bool,
        ends: Mapping[Stream, tuple[str, str]] | None = None,
    ) -> OutputStream:
        """The step's output from its first line, less the first ``skip[stream]`` lines of
        each stream (what an earlier reader already has), each line once, in order. With
        ``follow`` it ends when the step exits, with every line it printed (an engine whose
        follow ends early completes it with a read after the exit); without, it is what the
        engine holds now. Lines are counted as ``lines.LineSplitter`` cuts them. ``ends``:
        the first and last line the reader has of each stream, which an engine whose log
        rotates compares to tell a log that lost its head (``Lossy``)."""
        ...


@runtime_checkable
class Lossy(Protocol):
    """An output read back that knows which streams lost lines: its log was rotated past
    the last line the reader had, so it was handed on from its first line."""

    @property
    def lost(self) -> frozenset[Stream]: ...


class Exec(Protocol):
    """Commands in a running step (warm sandboxes: the PKGBUILD readers)."""

    @property
    def supports_exec(self) -> bool:
        """Whether ``put``, ``exec`` and ``cpu_seconds`` work here; otherwise every reading is
        a step of its own."""
        ...

    async def put(self, handle: Handle, path: str, tar: IO[bytes]) -> None:
        """Unpack ``tar`` at ``path`` (an existing folder) in the running step, owners and
        modes as the tar has them."""
        ...

    async def exec(
        self,
        handle: Handle,
        command: tuple[str, ...],
        *,
        user: str,
        workdir: str,
        keep_bytes: int,
    ) -> Ran:
        """Run ``command`` in the running step as ``user`` until it and whatever holds its
        output ends, or the step is destroyed (``ContainerGone``)."""
        ...

    async def cpu_seconds(self, handle: Handle) -> float | None:
        """CPU time every process of the step has used so far; None when unknown."""
        ...


class DiskWatch(Protocol):
    """What a step writes to its own filesystem (the runner's disk limit)."""

    @property
    def enforces_disk_limit(self) -> bool:
        """Whether ``Step.disk_bytes`` is a hard quota here (writes past it fail); otherwise
        only ``disk_usage`` can tell, after the fact."""
        ...

    async def disk_usage(self, handle: Handle) -> int | None:
        """Bytes the step has written to its own filesystem; None when this engine cannot
        tell. May be slow (a walk of the step's files): the caller paces itself."""
        ...

    async def path_usage(self, handle: Handle, paths: Sequence[str]) -> PathUsage | None:
        """Bytes under each of ``paths`` in the running step, each counted on its own
        filesystem, as the step's user sees them: cheap enough to ask every second. None when
        this engine cannot tell or the step has stopped."""
        ...

    async def writable_places(self, handle: Handle) -> tuple[str, ...] | None:
        """Where on its own filesystem the running step's user can write (the topmost such
        folders and files, and what it owns, which it could make writable); None when this
        engine cannot tell. Walks the whole filesystem: asked once per image."""
        ...


class Volumes(Protocol):
    """Named volumes: the build caches."""

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


class Sampling(Protocol):
    """A running step's resource figures (a build's ``sample`` events)."""

    @property
    def supports_usage(self) -> bool:
        """Whether ``usage`` and ``busiest`` can tell anything here."""
        ...

    async def usage(self, handle: Handle) -> Usage | None:
        """What the running step uses now (CPU time, memory, pids, network); None when it is
        not running. Cheap: asked every few seconds of every build."""
        ...

    async def busiest(self, handle: Handle) -> tuple[str, ...]:
        """The commands using the most CPU in the running step, busiest first."""
        ...


class Backend(Steps, Images, Adoption, Exec, DiskWatch, Volumes, Sampling, Protocol):
    """An engine as the service holds it: the step protocol and every capability. One it lacks
    says so (``supports_*`` false, None for what it cannot tell: ``_lacking.py``), so a caller
    asks the flag, never the engine's name."""


__all__ = [
    "Adoption",
    "Backend",
    "DiskWatch",
    "Exec",
    "ExitStatus",
    "FoundStep",
    "Handle",
    "Images",
    "Lossy",
    "OutputChunk",
    "OutputStream",
    "PathUsage",
    "Ran",
    "Sampling",
    "Step",
    "StepState",
    "Steps",
    "Stream",
    "Usage",
    "Volumes",
]
