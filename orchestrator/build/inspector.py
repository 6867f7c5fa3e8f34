"""``makepkg --printsrcinfo`` in a sandbox: how the service reads a PKGBUILD.

Sourcing a PKGBUILD runs its top level (``$(...)``, ``if``, functions that set variables), so
it happens where a build would: in the build image, but in a sandbox that can do even less (no
network, no capabilities, a read-only root, small memory, process and time limits). On an
engine that can run commands in a running container it is a warm reader (``readers.py``);
elsewhere (Swarm) a step of its own, removed after. Only the PKGBUILD's text goes in; every
other file of the upload goes in empty (``skeleton.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from ..backend import Backend, Ran, Step
from ..errors import InspectTimeout, OrchestratorError, PkgbuildError
from ..metrics import Metrics
from ..settings import MiB, Settings
from ..timeouts import INSPECTION_REMEMBER_S
from .readers import ReaderPool
from .skeleton import Skeleton
from .srcinfo import SrcInfo, read_output

SOURCE_DIR = "/src"
PROVIDES_LABEL = "org.orchestrator.provides"
# What is kept of each stream: the .SRCINFO is the end of stdout, a few KiB, whatever the top
# level printed before it; makepkg's refusal is the end of stderr.
_KEEP_BYTES = 256 * 1024
_MAX_MESSAGE_CHARS = 4096
_REMEMBERED = 256


class Inspector:
    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        labels: Mapping[str, str],
        metrics: Metrics | None = None,
    ) -> None:
        self._backend = backend
        self._settings = settings
        metrics = metrics or Metrics()
        self.pool = (
            ReaderPool(backend, settings, labels, metrics) if backend.supports_exec else None
        )
        # makepkg's answers by (image, what went in): CI sends the same PKGBUILD again and
        # again. Kept briefly: a top level that reads the clock may say something else later.
        self._answers: OrderedDict[bytes, tuple[float, SrcInfo | PkgbuildError]] = OrderedDict()
        # A reading as a step of its own holds engine threads for up to the deadline.
        self._slots = asyncio.Semaphore(4)

    async def read(self, build_dir: Path, image: str, labels: dict[str, str]) -> SrcInfo:
        """makepkg's ``.SRCINFO`` for ``build_dir``; raises ``PkgbuildError`` with makepkg's
        own words when it refuses the PKGBUILD. ``labels`` mark a reading made as a step."""
        skeleton = await asyncio.to_thread(Skeleton.of, build_dir)
        key = image.encode() + b"\0" + skeleton.digest()
        now = time.monotonic()
        known = self._answers.get(key)
        if known is not None and now - known[0] < INSPECTION_REMEMBER_S:
            self._answers.move_to_end(key)
            if isinstance(known[1], PkgbuildError):
                raise known[1]
            return known[1]
        try:
            if self.pool is not None:
                ran = await self.pool.read(image, skeleton, _KEEP_BYTES)
            else:
                async with self._slots:
                    ran = await self._read_in_step(skeleton, image, labels)
            answer = _answer(ran)
        except InspectTimeout:
            raise  # how long it took is no answer to remember
        except PkgbuildError as exc:
            self._remember(key, now, exc)
            raise
        self._remember(key, now, answer)
        return answer

    def _remember(self, key: bytes, now: float, answer: SrcInfo | PkgbuildError) -> None:
        self._answers[key] = (now, answer)
        while len(self._answers) > _REMEMBERED:
            self._answers.popitem(last=False)

    async def _read_in_step(self, skeleton: Skeleton, image: str, labels: dict[str, str]) -> Ran:
        step = Step(
            image=image,
            command=("makepkg", "--printsrcinfo"),
            labels=labels,
            workdir=SOURCE_DIR,
            # Everything makepkg insists on being able to write, in the in-memory /tmp.
            env={"BUILDDIR": "/tmp", "SRCDEST": "/tmp", "PKGDEST": "/tmp", "LOGDEST": "/tmp"},
            inputs=skeleton.tar(),
            network=False,
            memory_bytes=256 * MiB,
            cpus=1.0,
            pids_limit=64,
            log_max_bytes=1 * MiB,
            read_only=True,
            tmp_bytes=16 * MiB,
        )
        handle = await self._backend.setup(step)
        try:
            kept = {"stdout": _Tail(), "stderr": _Tail()}
            stream = await self._backend.start(handle)

            async def collect() -> int:
                async for batch in stream:
                    for chunk in batch:
                        kept[chunk.stream].add(chunk.text.encode() + b"\n")
                return (await self._backend.wait(handle)).code

            wall_s = self._settings.inspect_wall_timeout_s
            try:
                code = await asyncio.wait_for(collect(), wall_s)
            except TimeoutError:
                raise InspectTimeout(
                    f"makepkg took more than {wall_s:g} s to read the PKGBUILD (its top level "
                    "runs when it is read: does it wait for something?)"
                ) from None
            finally:
                await stream.aclose()
        finally:
            # Should this fail, start-up reaping removes it by its label.
            with contextlib.suppress(OrchestratorError):
                await asyncio.shield(self._backend.destroy(handle))
        return Ran(code, kept["stdout"].value(), kept["stderr"].value())

    async def provides(self, image: str) -> frozenset[str] | None:
        """What the image says it provides (Arch package names), or None if it does not say."""
        labels = await self._backend.image_labels(image)
        value = labels.get(PROVIDES_LABEL)
        return None if value is None else frozenset(value.split())

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class _Tail:
    """The last ``_KEEP_BYTES`` of a stream, as chunks."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._bytes = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._bytes += len(data)
        while self._bytes - len(self._chunks[0]) >= _KEEP_BYTES:
            self._bytes -= len(self._chunks.popleft())

    def value(self) -> bytes:
        return b"".join(self._chunks)[-_KEEP_BYTES:]


def _answer(ran: Ran) -> SrcInfo:
    """makepkg's answer: its .SRCINFO, or its refusal in its own words."""
    out = ran.stdout.decode(errors="replace")
    err = ran.stderr.decode(errors="replace")
    if ran.code != 0:
        said = (err.strip() or out.strip())[-_MAX_MESSAGE_CHARS:]
        raise PkgbuildError(f"makepkg refused the PKGBUILD: {said or f'exit code {ran.code}'}")
    return read_output(out, err)
