"""What the repository tests share (unit and integration): minimal packages, and a folder
short enough to hold a gpg home."""

from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path


def make_package(folder: Path, name: str, version: str = "1.0-1", info: str | None = None) -> Path:
    """A minimal package (its .PKGINFO, ``info`` if given, and one file): all repo-add and
    pacman read of it."""
    path = folder / f"{name}-{version}-x86_64.pkg.tar.gz"
    info = (
        info or f"pkgname = {name}\npkgbase = {name}\npkgver = {version}\narch = x86_64\nsize = 6\n"
    )
    with tarfile.open(path, "w:gz") as tar:
        for member, data in ((".PKGINFO", info.encode()), (f"usr/share/{name}", b"hello\n")):
            entry = tarfile.TarInfo(member)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return path


@contextlib.contextmanager
def short_folder(prefix: str) -> Iterator[Path]:
    """A new folder under /tmp, removed at the end."""
    # gpg-agent's socket lives in its home: a unix socket's path is at most 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
