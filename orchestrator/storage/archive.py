"""Tar in and out, safely.

Everything that crosses into or out of a container, or arrives in an upload, is a tar stream.
An upload is checked as a whole before anything touches the disk: no absolute paths, no ``..``,
no names the filesystem cannot hold, no devices, a size cap, and no symlink that leads outside
however links are chained. It is then written by ``_unpack`` through directory descriptors that
never follow a link, so a hostile archive fails with a clear ``ArchiveError`` (the API's 400)
and writes nothing outside its folder. tarfile only parses; its extraction filters (missing from
Debian bookworm's Python 3.11.2) are not relied on.

Every tar that crosses the boundary (upload, copy-in, packages, a build's notes) is read or
written here, so the rules for hostile members are in one place to review; the limits on reading
the stream itself are ``_tarread``'s, the descriptor-level writing is ``_unpack``'s.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from ..errors import ArchiveError, ArchiveTooLarge
from . import _tarread, _unpack

# Spool small tars in memory; bigger ones go to an unnamed temp file that vanishes with us.
_SPOOL_BYTES = 8 * 1024 * 1024
PACKAGE_SUFFIXES = (".pkg.tar", ".pkg.tar.zst", ".pkg.tar.xz", ".pkg.tar.gz", ".pkg.tar.bz2")
MAX_MEMBERS = 100_000
_NAME_MAX_BYTES = 255  # NAME_MAX
_PATH_MAX_BYTES = 4095  # PATH_MAX, less its NUL
_MAX_DEPTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def spooled() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)


def _check_text(name: str, text: str, what: str) -> None:
    if _CONTROL.search(text):
        raise ArchiveError(f"archive member {name!r} has a control character in its {what}")
    if len(os.fsencode(text)) > _PATH_MAX_BYTES:
        raise ArchiveError(
            f"archive member {name!r} has a {what} longer than {_PATH_MAX_BYTES} bytes"
        )


def member_parts(name: str) -> tuple[str, ...]:
    """A member name as the path components it is written to; refused if it cannot be."""
    _check_text(name, name, "name")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in path.parts:
        raise ArchiveError(f"archive member {name!r} escapes the directory with '..'")
    parts = tuple(p for p in path.parts if p != ".")
    if any(len(os.fsencode(part)) > _NAME_MAX_BYTES for part in parts):
        raise ArchiveError(
            f"archive member {name!r} has a name component longer than {_NAME_MAX_BYTES} bytes"
        )
    if len(parts) > _MAX_DEPTH:
        raise ArchiveError(f"archive member {name!r} is nested more than {_MAX_DEPTH} deep")
    return parts


def _check_link(member: tarfile.TarInfo, path: PurePosixPath) -> None:
    if member.linkname == "":
        raise ArchiveError(f"archive member {member.name!r} is a link to nothing")
    _check_text(member.name, member.linkname, "link target")
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
    members: Iterable[tarfile.TarInfo], *, max_bytes: int, max_members: int = MAX_MEMBERS
) -> list[tarfile.TarInfo]:
    """Vet each member on its own; return them in order, or raise ``ArchiveError``.

    What members do together (links through links, a file below a file) is ``_unpack.Plan``'s.
    """
    total = 0
    vetted: list[tarfile.TarInfo] = []
    for member in members:
        member_parts(member.name)
        if member.issym() or member.islnk():
            _check_link(member, PurePosixPath(member.name))
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


def extract(
    fileobj: IO[bytes], dest: Path, *, max_bytes: int, max_members: int = MAX_MEMBERS
) -> list[str]:
    """Unpack a tar (plain, gzip, xz or bzip2) into ``dest``; return the member names.

    The whole archive is vetted before the first write; a refusal mid-way (the disk not being
    what the plan expects, the byte cap) may leave members in ``dest``, never outside it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with _tarread.open_tar(fileobj, max_bytes=max_bytes, max_members=max_members) as (tar, stream):
        members = check_members(_tarread.members(tar), max_bytes=max_bytes, max_members=max_members)
        plan = _unpack.Plan()
        for member in members:
            plan.add(member, member_parts(member.name), _hard_link_target(member))
        plan.check_links()

        def open_member(member: tarfile.TarInfo) -> _tarread.BulkReader:
            source = tar.extractfile(member)
            assert source is not None  # only files are opened
            return _tarread.BulkReader(source, stream)

        _unpack.write(plan, dest, open_member, _unpack.Budget(max_bytes))
    return [m.name for m in members]


def _hard_link_target(member: tarfile.TarInfo) -> tuple[str, ...]:
    if not member.islnk():
        return ()
    try:
        return member_parts(member.linkname)
    except ArchiveError:
        raise ArchiveError(
            f"archive member {member.name!r} is a hard link to {member.linkname!r}, which is not "
            "a file earlier in the archive"
        ) from None


def pack_dir(
    src: Path,
    *,
    uid: int,
    gid: int,
    max_bytes: int,
    mtimes: Mapping[str, float] | None = None,
) -> IO[bytes]:
    """Tar ``src``'s contents (not the folder itself) with owner ``uid:gid``, for put_archive;
    a file named in ``mtimes`` (by its path in ``src``) gets that mtime.

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
                if mtimes is not None and rel in mtimes:
                    info.mtime = mtimes[rel]
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

    The build controls what that folder holds, so this is as hostile as an upload: only regular
    files named like packages are kept, flattened to their base name, each written once as a new
    file in a staging folder inside ``dest`` and renamed into place (over a link there, never
    through it), so an interrupted copy leaves no half-written package.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
    stored: list[Path] = []
    budget = _unpack.Budget(max_bytes)
    try:
        with _tarread.open_tar(fileobj, max_bytes=max_bytes, max_members=MAX_MEMBERS) as (
            tar,
            stream,
        ):
            total = 0
            for member in _tarread.members(tar):
                member_parts(member.name)
                base = PurePosixPath(member.name).name
                if not member.isfile() or not is_package_name(base):
                    continue
                if dest / base in stored:
                    raise ArchiveError(f"the build made two packages named {base!r}")
                total += member.size
                if total > max_bytes:
                    raise ArchiveTooLarge(
                        f"packages are larger than {max_bytes} bytes", limit_bytes=max_bytes
                    )
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                fd = os.open(staging / base, _unpack.NEW_FILE_FLAGS, 0o644)
                try:
                    with _tarread.BulkReader(source, stream) as data:
                        budget.copy(data, fd)
                finally:
                    os.close(fd)
                stored.append(dest / base)
        for path in stored:
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stored


def small_files(fileobj: IO[bytes], max_bytes: int, max_members: int = 32) -> dict[str, bytes]:
    """The regular files of a ``get_archive`` tar by base name, each cut at ``max_bytes``: for
    the few short notes a build leaves (it wrote them, so nothing about them is trusted)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for index, member in enumerate(tar):
                if index >= max_members:
                    break
                if not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is not None:
                    found[PurePosixPath(member.name).name] = source.read(max_bytes)
    except (tarfile.TarError, OSError, EOFError):
        pass  # what was read so far stands
    return found


def file_digests(src: Path) -> dict[str, str]:
    """sha256 of each regular file under ``src``, by its path there (as ``pack_dir`` names it);
    symlinks are not followed."""
    found: dict[str, str] = {}
    root = src.resolve()
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            found[path.relative_to(root).as_posix()] = digest.hexdigest()
    return found
