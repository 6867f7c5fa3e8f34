"""Reproducing a build, the logic of it: where a build's inputs are kept, the
``SOURCE_DATE_EPOCH`` its packages carry, and how two builds' packages compare.

As makerepropkg does it: the rebuild gets the first build's ``SOURCE_DATE_EPOCH``, read back
from its package (makepkg 7 sets it to the time the build starts when it is not given, and
writes it as ``builddate`` in ``.PKGINFO`` and ``.BUILDINFO``), so that every timestamp makepkg
puts in the package is the same; then the packages are compared byte for byte (reproducible-
builds.org's definition: bit-identical), by file name.

The report (``Reproduction``) is what the jobs' records keep and the API shows, on the rebuild
and on the original, in one shape.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import OrchestratorError
from ..timeouts import PKGINFO_READ_TIMEOUT_S

# Beside a build's packages (not a package name: never listed nor served as an artifact), so
# whatever removes a job's artifacts removes its inputs with them.
INPUTS_NAME = "inputs.tar"
# What a report keeps of diffoscope's text, per package.
MAX_DIFFERENCES_BYTES = 64 * 1024
# How many differing packages of one rebuild diffoscope looks into (a PKGBUILD may make
# hundreds, none reproducible): each is a container, and its text is in every read of the job.
MAX_DIFFOSCOPE_PACKAGES = 4

State = Literal["running", "identical", "differs", "failed"]
STATES: tuple[State, ...] = ("running", "identical", "differs", "failed")

# makepkg writes ``builddate = <seconds>``; a package's .PKGINFO is small.
_BUILDDATE = re.compile(rb"^builddate = ([0-9]{1,12})$", re.MULTILINE)
_MAX_PKGINFO_BYTES = 1024 * 1024


def inputs_path(artifact_dir: Path) -> Path:
    """Where a build's upload, as submitted, is kept (``artifact_dir``: the job's)."""
    return artifact_dir / INPUTS_NAME


def keep_inputs(body: IO[bytes], artifact_dir: Path) -> None:
    """Keep an upload as submitted (``body``, at most the upload limit) beside the packages its
    build will make: staged, then renamed, so a kill leaves none half-written."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    final = inputs_path(artifact_dir)
    staged = final.with_name(f".new-{final.name}")
    body.seek(0)
    with staged.open("wb") as out:
        shutil.copyfileobj(body, out, 1 << 20)
    os.replace(staged, final)


def build_date(package: Path) -> int:
    """The ``builddate`` a package's ``.PKGINFO`` says: the ``SOURCE_DATE_EPOCH`` its build had.

    The package came from an untrusted PKGBUILD: only a line of digits is taken from it, out of
    its first ``_MAX_PKGINFO_BYTES`` (bsdtar is stopped there: a .PKGINFO that unpacks to
    gigabytes from a small package is never held). ``OrchestratorError`` when it has no such
    line."""
    timeout_s = PKGINFO_READ_TIMEOUT_S
    try:
        head = _read_head(
            ["bsdtar", "-xOqf", str(package), ".PKGINFO"], _MAX_PKGINFO_BYTES, timeout_s
        )
    except OSError as exc:
        raise OrchestratorError(f"bsdtar could not read {package.name}: {exc}") from exc
    except subprocess.TimeoutExpired:
        raise OrchestratorError(
            f"bsdtar took more than {timeout_s:g} s to find {package.name}'s .PKGINFO"
        ) from None
    return parse_build_date(head, package.name)


def _read_head(command: list[str], max_bytes: int, timeout_s: float) -> bytes:
    """At most the first ``max_bytes`` that ``command`` prints: it is killed once they are
    read, or at ``timeout_s`` (``TimeoutExpired``)."""
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as child:
        assert child.stdout is not None
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            child.kill()

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        try:
            head = child.stdout.read(max_bytes)
        finally:
            timer.cancel()
            child.kill()  # no more is read: the rest, however big, is never made
        if expired.is_set():
            raise subprocess.TimeoutExpired(command, timeout_s)
        if child.wait() != 0 and not head:
            raise OrchestratorError(f"{command[0]} exited with {child.returncode}")
    return head


def parse_build_date(pkginfo: bytes, name: str) -> int:
    """The one ``builddate`` of a ``.PKGINFO``'s text."""
    found = _BUILDDATE.findall(pkginfo)
    if len(set(found)) != 1:
        raise OrchestratorError(f"{name} has no single builddate in its .PKGINFO")
    return int(found[0])


@dataclass(frozen=True, slots=True)
class PackageComparison:
    name: str  # the package's file name
    identical: bool
    original_sha256: str
    rebuilt_sha256: str | None  # None: the rebuild made no package of that name
    differences: str | None = None  # diffoscope's text, cut at MAX_DIFFERENCES_BYTES

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "identical": self.identical,
            "original_sha256": self.original_sha256,
            "rebuilt_sha256": self.rebuilt_sha256,
            "differences": self.differences,
        }


def compare(original: Mapping[str, str], rebuilt: Mapping[str, str]) -> list[PackageComparison]:
    """Each package by file name: ``original`` and ``rebuilt`` are sha256 by file name. A
    package only the rebuild made counts as a difference too (its original digest empty)."""
    found = [
        PackageComparison(name, rebuilt.get(name) == sha, sha, rebuilt.get(name))
        for name, sha in sorted(original.items())
    ]
    found += [
        PackageComparison(name, False, "", sha)
        for name, sha in sorted(rebuilt.items())
        if name not in original
    ]
    return found


def cut(text: str, max_bytes: int = MAX_DIFFERENCES_BYTES) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, saying so when it was."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    note = f"\n[… cut: {len(data)} bytes in all, the first {max_bytes} kept]\n"
    return data[: max_bytes - len(note.encode())].decode(errors="ignore") + note


@dataclass(frozen=True, slots=True)
class Reproduction:
    """A reproduction's report, as both jobs' records keep it."""

    original: str
    rebuild: str
    state: State
    packages: Sequence[PackageComparison] = field(default=())

    @classmethod
    def of(cls, original: str, rebuild: str, packages: Sequence[PackageComparison]) -> Reproduction:
        """The finished report: identical only when every package is."""
        same = bool(packages) and all(p.identical for p in packages)
        return cls(original, rebuild, "identical" if same else "differs", tuple(packages))

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "rebuild": self.rebuild,
            "state": self.state,
            "packages": [p.to_dict() for p in self.packages],
        }

    def summary(self) -> str:
        """For people: what was found."""
        if self.state != "differs":
            return self.state
        names = [p.name for p in self.packages if not p.identical]
        return f"differs ({', '.join(names)})"
