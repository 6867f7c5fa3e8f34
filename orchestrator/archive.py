"""Tar in and out, safely.

Everything that crosses into or out of a container, or arrives in an upload, is a tar stream. Each
one is checked member by member before anything touches the disk: no absolute paths, no ``..``, no
links that point outside, no devices, and a size cap, so a hostile archive fails with a clear
``ArchiveError`` and writes nothing.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import ArchiveError, ArchiveTooLarge

# Spool small tars in memory; bigger ones go to an unnamed temp file that vanishes with us.
_SPOOL_BYTES = 8 * 1024 * 1024
# Python 3.11.4 added extraction filters; Debian bookworm's 3.11.2 lacks them, and the checks in
# check_members() are what keep an archive inside its folder either way.
_HAS_FILTERS = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if _HAS_FILTERS else ()  # type: ignore[attr-defined,unused-ignore]
)
PACKAGE_SUFFIXES = (".pkg.tar", ".pkg.tar.zst", ".pkg.tar.xz", ".pkg.tar.gz", ".pkg.tar.bz2")


def spooled() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)


def _check_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in path.parts:
        raise ArchiveError(f"archive member {name!r} escapes the directory with '..'")
    return path


def _check_link(member: tarfile.TarInfo, path: PurePosixPath) -> None:
    target = PurePosixPath(member.linkname)
    # A symlink's target is resolved from its own folder; a hard link's from the archive root.
    joined = path.parent / target if member.issym() else target
    if target.is_absolute() or _escapes(joined):
        raise ArchiveError(
            f"archive member {member.name!r} links to {member.linkname!r}, outside the directory"
        )


def _escapes(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def check_members(
    members: Iterable[tarfile.TarInfo], *, max_bytes: int, max_members: int = 100_000
) -> list[tarfile.TarInfo]:
    """Vet every member; return them in order. Raises ``ArchiveError``/``ArchiveTooLarge``."""
    total = 0
    vetted: list[tarfile.TarInfo] = []
    for member in members:
        path = _check_name(member.name)
        if member.issym() or member.islnk():
            _check_link(member, path)
        elif not (member.isfile() or member.isdir()):
            raise ArchiveError(f"archive member {member.name!r} is a device, fifo or other special")
        total += member.size
        if total > max_bytes:
            raise ArchiveTooLarge(
                f"archive unpacks to more than {max_bytes} bytes", limit_bytes=max_bytes
            )
        vetted.append(member)
        if len(vetted) > max_members:
            raise ArchiveError(f"archive has more than {max_members} members")
    return vetted


def extract(fileobj: IO[bytes], dest: Path, *, max_bytes: int) -> list[str]:
    """Unpack a tar (plain, gzip, xz or bzip2) into ``dest``; return the member names."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            members = check_members(tar, max_bytes=max_bytes)
            if _HAS_FILTERS:
                # The "data" filter repeats our checks and also drops setuid bits.
                tar.extractall(dest, members=members, filter="data")
            else:
                for member in members:
                    member.mode &= 0o755  # no setuid/setgid/sticky, no group/other write
                tar.extractall(dest, members=members)
    except _FILTER_ERRORS as exc:
        raise ArchiveError(f"unsafe archive: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"not a readable tar archive: {exc}") from exc
    return [m.name for m in members]


def pack_dir(src: Path, *, uid: int, gid: int, max_bytes: int) -> IO[bytes]:
    """Tar ``src``'s contents (not the folder itself) with owner ``uid:gid``, for put_archive.

    Symlinks are kept only when they stay inside ``src``; anything else that is not a regular
    file or directory is refused.
    """
    out = spooled()
    root = src.resolve()
    total = 0
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root).as_posix()
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    target = path.resolve()
                    if not target.is_relative_to(root):
                        raise ArchiveError(
                            f"{rel!r} is a symlink that points outside the directory"
                        )
                elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                    raise ArchiveError(f"{rel!r} is not a regular file or directory")
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                total += info.size
                if total > max_bytes:
                    raise ArchiveTooLarge(
                        f"build directory is larger than {max_bytes} bytes", limit_bytes=max_bytes
                    )
                if info.isfile():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def is_package_name(name: str) -> bool:
    return any(name.endswith(suffix) for suffix in PACKAGE_SUFFIXES) and "/" not in name


def extract_packages(fileobj: IO[bytes], dest: Path, *, max_bytes: int) -> list[Path]:
    """Take the package files out of a ``get_archive`` tar into ``dest``.

    Only regular files named like packages are kept, flattened to their base name. They are
    written to a staging folder inside ``dest`` and renamed into place, so an interrupted copy
    leaves no half-written package.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
    stored: list[Path] = []
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            total = 0
            for member in tar:
                _check_name(member.name)
                base = PurePosixPath(member.name).name
                if not member.isfile() or not is_package_name(base):
                    continue
                total += member.size
                if total > max_bytes:
                    raise ArchiveTooLarge(
                        f"packages are larger than {max_bytes} bytes", limit_bytes=max_bytes
                    )
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, (staging / base).open("wb") as fh:
                    shutil.copyfileobj(source, fh, 1024 * 1024)
                stored.append(dest / base)
        for path in stored:
            os.replace(staging / path.name, path)
    except tarfile.TarError as exc:
        raise ArchiveError(f"could not read the packages out of the container: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stored
