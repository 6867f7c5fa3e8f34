"""What of an upload goes into a PKGBUILD reading: the PKGBUILD and the upload's small files as
they are, every other file empty.

makepkg only checks that ``install=`` and ``changelog=`` files exist, but a top level may read a
file of its own (``_features=$(<features.txt)``, ``source ./platform.sh``), so small files go in
whole, up to a budget; large ones (tarballs, binaries) go in empty, since no top level reads
those. Read once per upload; its digest keys the remembered answers, and its tar can be made
with the owners and prefix a reader wants.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PkgbuildError
from ..settings import MiB

MAX_PKGBUILD_BYTES = 1 * MiB
_MAX_ENTRIES = 20_000
_SMALL_FILE_BYTES = 64 * 1024  # a file this size or under goes in whole...
_SMALL_FILES_BYTES = 1 * MiB  # ...while all such files together stay under this


@dataclass(frozen=True, slots=True)
class Skeleton:
    pkgbuild: bytes
    folders: tuple[str, ...]  # relative paths, parents first
    files: tuple[tuple[str, bytes], ...]  # relative path, content (b"" past the budget)

    @classmethod
    def of(cls, build_dir: Path) -> Skeleton:
        """The skeleton of an unpacked upload (blocking: it walks the folder)."""
        pkgbuild = build_dir / "PKGBUILD"
        if not pkgbuild.is_file() or pkgbuild.is_symlink():
            raise PkgbuildError("the upload has no PKGBUILD at its top level")
        if pkgbuild.stat().st_size > MAX_PKGBUILD_BYTES:
            raise PkgbuildError(f"the PKGBUILD is larger than {MAX_PKGBUILD_BYTES // MiB} MiB")
        text = pkgbuild.read_bytes()
        folders: list[str] = []
        files: list[tuple[str, bytes]] = []
        budget = _SMALL_FILES_BYTES
        for count, path in enumerate(sorted(build_dir.rglob("*"))):
            if count > _MAX_ENTRIES:
                break
            rel = path.relative_to(build_dir).as_posix()
            if rel == "PKGBUILD" or path.is_symlink():
                continue
            if path.is_dir():
                folders.append(rel)
            elif path.is_file():
                size = path.stat().st_size
                whole = size <= min(_SMALL_FILE_BYTES, budget)
                budget -= size if whole else 0
                files.append((rel, path.read_bytes()[:size] if whole else b""))
        return cls(text, tuple(folders), tuple(files))

    def digest(self) -> bytes:
        h = hashlib.sha256(self.pkgbuild)
        for name in self.folders:
            h.update(b"\0d" + name.encode(errors="surrogateescape"))
        for name, data in self.files:
            h.update(b"\0f" + name.encode(errors="surrogateescape"))
            h.update(len(data).to_bytes(8, "big") + hashlib.sha256(data).digest())
        return h.digest()

    def tar(self, *, prefix: str = "", gid: int = 0, private: bool = False) -> io.BytesIO:
        """A tar of it, everything root's with group ``gid`` (so that the reading can write
        nowhere in it), under ``prefix/`` if given; ``private``: none but that group may read
        it (modes 0750 and 0640, not 0755 and 0644)."""
        dir_mode, file_mode = (0o750, 0o640) if private else (0o755, 0o644)
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            root = f"{prefix}/" if prefix else ""

            def add(name: str, data: bytes | None) -> None:
                info = tarfile.TarInfo(name)
                info.uid, info.gid = 0, gid
                if data is None:
                    info.type, info.mode = tarfile.DIRTYPE, dir_mode
                    tar.addfile(info)
                else:
                    info.size, info.mode = len(data), file_mode
                    tar.addfile(info, io.BytesIO(data))

            if prefix:
                add(prefix, None)
            for name in self.folders:
                add(root + name, None)
            add(root + "PKGBUILD", self.pkgbuild)
            for name, data in self.files:
                add(root + name, data)
        out.seek(0)
        return out
