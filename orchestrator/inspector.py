"""``makepkg --printsrcinfo`` in a throwaway sandbox: how the service reads a PKGBUILD.

Sourcing a PKGBUILD runs its top level (``$(...)``, ``if``, functions that set variables), so
it happens where a build would: in a container of the build image, but one that can do even less
(no network, no capabilities, a read-only root, small memory, process and time limits, removed
after). Only the PKGBUILD's text goes in; every other file of the upload goes in empty, since
makepkg only checks that ``install=`` and ``changelog=`` files exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tarfile
import time
from collections import OrderedDict
from pathlib import Path

from .backend import Backend, Step
from .errors import InspectTimeout, OrchestratorError, PkgbuildError
from .settings import MiB, Settings
from .srcinfo import SrcInfo, parse

SOURCE_DIR = "/src"
MAX_PKGBUILD_BYTES = 1 * MiB
_MAX_ENTRIES = 20_000
PROVIDES_LABEL = "org.orchestrator.provides"
_REMEMBER_S = 600.0
_MAX_OUTPUT_BYTES = 256 * 1024
_MAX_MESSAGE_CHARS = 4096
_REMEMBERED = 256


class Inspector:
    def __init__(self, backend: Backend, settings: Settings) -> None:
        self._backend = backend
        self._settings = settings
        # makepkg's answers by (image, what went in): its lint alone starts ~300 processes, over
        # a second on this engine, and CI sends the same PKGBUILD again and again. Kept briefly:
        # a top level that reads the clock may say something else a little later.
        self._answers: OrderedDict[str, tuple[float, SrcInfo | PkgbuildError]] = OrderedDict()
        # Each reading holds engine threads for up to the deadline: a few at a time.
        self._slots = asyncio.Semaphore(4)

    async def read(self, build_dir: Path, image: str, labels: dict[str, str]) -> SrcInfo:
        """makepkg's ``.SRCINFO`` for ``build_dir``; raises ``PkgbuildError`` with makepkg's
        own words when it refuses the PKGBUILD."""
        tar = await asyncio.to_thread(_skeleton, build_dir)
        key = hashlib.sha256(image.encode() + b"\0" + tar.getvalue()).hexdigest()
        now = time.monotonic()
        known = self._answers.get(key)
        if known is not None and now - known[0] < _REMEMBER_S:
            self._answers.move_to_end(key)
            if isinstance(known[1], PkgbuildError):
                raise known[1]
            return known[1]
        try:
            async with self._slots:
                answer = await self._read(tar, image, labels)
        except InspectTimeout:
            raise  # a busy machine's answer, not the PKGBUILD's
        except PkgbuildError as exc:
            self._remember(key, now, exc)
            raise
        self._remember(key, now, answer)
        return answer

    def _remember(self, key: str, now: float, answer: SrcInfo | PkgbuildError) -> None:
        self._answers[key] = (now, answer)
        while len(self._answers) > _REMEMBERED:
            self._answers.popitem(last=False)

    async def _read(self, tar: io.BytesIO, image: str, labels: dict[str, str]) -> SrcInfo:
        step = Step(
            image=image,
            command=("makepkg", "--printsrcinfo"),
            labels=labels,
            workdir=SOURCE_DIR,
            # Everything makepkg insists on being able to write, in the in-memory /tmp.
            env={"BUILDDIR": "/tmp", "SRCDEST": "/tmp", "PKGDEST": "/tmp", "LOGDEST": "/tmp"},
            inputs=tar,
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
            out: list[str] = []
            err: list[str] = []

            kept = {"stdout": 0, "stderr": 0}

            async def collect() -> int:
                # Only the first _MAX_OUTPUT_BYTES of each stream are kept: a top level can
                # print gigabytes, and a .SRCINFO is a few KiB.
                async for batch in stream:
                    for chunk in batch:
                        if kept[chunk.stream] < _MAX_OUTPUT_BYTES:
                            kept[chunk.stream] += len(chunk.text) + 1
                            (out if chunk.stream == "stdout" else err).append(chunk.text)
                return (await self._backend.wait(handle)).code

            stream = await self._backend.start(handle)
            try:
                code = await asyncio.wait_for(collect(), self._settings.inspect_timeout_s)
            except TimeoutError:
                raise InspectTimeout(
                    f"makepkg took more than {self._settings.inspect_timeout_s:g} s to read the "
                    "PKGBUILD "
                    "(its top level runs when it is read: does it wait for something?)"
                ) from None
            finally:
                await stream.aclose()
        finally:
            # Should this fail, start-up reaping removes it by its label.
            with contextlib.suppress(OrchestratorError):
                await asyncio.shield(self._backend.destroy(handle))
        if code != 0:
            said = ("\n".join(err).strip() or "\n".join(out).strip())[-_MAX_MESSAGE_CHARS:]
            raise PkgbuildError(f"makepkg refused the PKGBUILD: {said or f'exit code {code}'}")
        if kept["stdout"] >= _MAX_OUTPUT_BYTES:
            raise PkgbuildError(f"makepkg printed more than {_MAX_OUTPUT_BYTES} bytes for it")
        return parse("\n".join(out) + "\n")

    async def provides(self, image: str) -> frozenset[str] | None:
        """What the image says it provides (Arch package names), or None if it does not say."""
        labels = await self._backend.image_labels(image)
        value = labels.get(PROVIDES_LABEL)
        return None if value is None else frozenset(value.split())


def _skeleton(build_dir: Path) -> io.BytesIO:
    """A tar of the build dir with the PKGBUILD as it is and every other file empty."""
    pkgbuild = build_dir / "PKGBUILD"
    if not pkgbuild.is_file():
        raise PkgbuildError("the upload has no PKGBUILD at its top level")
    text = pkgbuild.read_bytes()
    if len(text) > MAX_PKGBUILD_BYTES:
        raise PkgbuildError(f"the PKGBUILD is larger than {MAX_PKGBUILD_BYTES // MiB} MiB")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for count, path in enumerate(sorted(build_dir.rglob("*"))):
            if count > _MAX_ENTRIES:
                break
            rel = path.relative_to(build_dir).as_posix()
            info = tarfile.TarInfo(rel)
            # Root's, so that the reader (uid 1000) can write nowhere in /src: the scratch
            # volume is on the engine's disk, with no size limit.
            info.uid = info.gid = 0
            if rel != "PKGBUILD" and (path.is_symlink() or not (path.is_dir() or path.is_file())):
                continue
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = text if rel == "PKGBUILD" else b""
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out
