"""One pacman repository per variant (``orchestrator-cpu``, ``orchestrator-cuda``), made with
``repo-add`` and signed.

On disk, under ``<data>/repo/<variant>/<arch>/``: ``pool/`` holds the packages and their
signatures; each version of the database is a folder of its own (``db-*``), and ``current`` is
a symlink to the one served. A change copies the database into a fresh folder, runs
``repo-add``/``repo-remove`` there and swaps the symlink (one rename), so whatever fails on the
way (a full disk, a killed tool) leaves the previous database whole and serving. A package
waits in the pool as ``.new-<file>`` until the database that lists it is served, then takes its
name: a package built again under the same name never replaces the bytes the served database
vouches for. A process killed on the way leaves these and its ``db-*`` folder; the next change
(and every start) finishes the renames the served database asks for and drops the rest.
Changes to one repository are serialized by a file lock (a second process on the data
directory included).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import NotFound, RepoError
from ..provenance import sha256_file
from ..timeouts import REPO_TOOL_TIMEOUT_S
from .pkginfo import check_pkginfo
from .signing import Signer

# pkgname-pkgver-pkgrel-arch.pkg.tar[.ext], as makepkg names a package.
_PACKAGE = re.compile(
    r"(?P<name>[a-z0-9@_+][a-z0-9@._+-]*)-(?P<version>[^-/\s]+-[^-/\s]+)"
    r"-(?P<arch>[^-/]+)\.pkg\.tar(\.[a-z0-9]+)?"
)
_SERVED = re.compile(r"[A-Za-z0-9@_+][A-Za-z0-9@._+:-]*")
_CURRENT = "current"
_SIGNED_BY = "signed-by"  # the fingerprint of the key that signed what is served


def package_name(filename: str) -> str | None:
    """The pkgname a package's file name carries, or None if it is not one."""
    matched = _PACKAGE.fullmatch(filename)
    return matched["name"] if matched else None


class Repository:
    def __init__(self, root: Path, name: str, signer: Signer) -> None:
        self.root = root
        self.name = name
        self._signer = signer
        self._pool = root / "pool"

    @property
    def _db(self) -> str:
        return f"{self.name}.db.tar.gz"

    def file(self, filename: str) -> Path:
        """The served file of that name (the database's, or a package's or its signature)."""
        if not _SERVED.fullmatch(filename):
            raise NotFound(f"no file {filename!r} in {self.name}")
        folder = self.root / _CURRENT if filename.startswith(f"{self.name}.") else self._pool
        path = folder / filename
        with contextlib.suppress(OSError):  # a name too long for the filesystem, say
            if path.is_file() and path.resolve().parent == folder.resolve():
                return path
        raise NotFound(f"no file {filename!r} in {self.name}")

    def packages(self) -> dict[str, str]:
        """pkgname -> file name of every package the served database lists."""
        return {fields["NAME"]: fields["FILENAME"] for fields in self._entries()}

    def sha256sums(self) -> dict[str, str]:
        """file name -> the SHA-256 the served database lists for it (what pacman checks)."""
        return {fields["FILENAME"]: fields.get("SHA256SUM", "") for fields in self._entries()}

    def _entries(self) -> list[dict[str, str]]:
        """The fields of every package the served database lists."""
        current = self.root / _CURRENT / self._db
        if not current.is_file():
            return []
        with tarfile.open(current) as db:
            return [
                _desc(fh.read().decode())
                for member in db
                if member.name.endswith("/desc") and (fh := db.extractfile(member))
            ]

    def publish(self, packages: Sequence[Path]) -> list[str]:
        """Sign each package into the pool and add it to the database; the names added."""
        with self._locked(), _said(f"publish to {self.name}"):
            self._recover()
            for package in packages:
                matched = _PACKAGE.fullmatch(package.name)
                if matched is None:
                    raise RepoError(f"{package.name} is not named as a pacman package")
                check_pkginfo(package, matched["name"], matched["version"])
            # repo-add names a package (and finds its signature) by its path: the staged
            # files, linked under their own names for it.
            named = Path(tempfile.mkdtemp(prefix=".add-", dir=self.root))
            try:
                for package in packages:
                    staged = self._into_pool(package)
                    os.link(staged, named / package.name)
                    os.link(_signature(staged), named / f"{package.name}.sig")
                self._change("repo-add", [str(named / p.name) for p in packages])
            finally:
                shutil.rmtree(named, ignore_errors=True)
            self._recover()  # the served database lists them: into their names
            self._prune()
            return [package.name for package in packages]

    def remove(self, pkgname: str) -> str:
        """Take ``pkgname`` out of the database, then its file out of the pool."""
        with self._locked(), _said(f"removal from {self.name}"):
            self._recover()
            filename = self.packages().get(pkgname)
            if filename is None:
                raise NotFound(f"{self.name} has no package {pkgname!r}")
            self._change("repo-remove", [pkgname])
            self._prune()
            return filename

    def resign(self) -> bool:
        """Sign every package and the database again if another key signed them (the key was
        rotated); whether it had to."""
        with self._locked(), _said(f"re-signing {self.name}"):
            self._recover()  # on every start, before anything is served
            marker = self.root / _SIGNED_BY
            if not (self.root / _CURRENT).exists() or (
                marker.is_file() and marker.read_text().strip() == self._signer.fingerprint
            ):
                return False
            for package in self._pool.iterdir():
                if package_name(package.name) is not None:
                    staged = self._pool / f".new-{package.name}.sig"
                    self._signer.sign(package, staged)
                    os.replace(staged, self._pool / f"{package.name}.sig")
            fresh = Path(tempfile.mkdtemp(prefix="db-", dir=self.root))
            try:
                for part in (self._db, f"{self.name}.files.tar.gz"):
                    shutil.copyfile(self.root / _CURRENT / part, fresh / part)
                    self._signer.sign(fresh / part, fresh / f"{part}.sig")
                    short = fresh / part.removesuffix(".tar.gz")
                    short.symlink_to(part)
                    short.with_name(f"{short.name}.sig").symlink_to(f"{part}.sig")
                self._check(fresh)
                self._serve(fresh)
            except BaseException:
                shutil.rmtree(fresh, ignore_errors=True)
                raise
            return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._pool.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _into_pool(self, package: Path) -> Path:
        """``package`` and its signature, whole, as ``.new-<file>`` in the pool."""
        staged = self._pool / f".new-{package.name}"
        shutil.copyfile(package, staged)
        self._signer.sign(staged, _signature(staged))
        _sync(staged, _signature(staged))
        return staged

    def _recover(self) -> None:
        """Finish or undo what a change left behind (killed, or failed): a staged package the
        served database lists with its checksum takes its name, any other goes, and so do the
        database folders and links not served."""
        current = self.root / _CURRENT
        served = current.resolve() if current.is_symlink() else None
        for path in self.root.iterdir():
            if path.name.startswith((".add-", f".{_CURRENT}-")) or (
                path.name.startswith("db-") and path.resolve() != served
            ):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        sums = {fields["FILENAME"]: fields.get("SHA256SUM") for fields in self._entries()}
        for staged in sorted(self._pool.glob(".new-*")):
            if staged.name.endswith(".sig") or not staged.exists():
                continue
            name = staged.name.removeprefix(".new-")
            if sums.get(name) == sha256_file(staged):
                if _signature(staged).exists():  # else it already took its name
                    os.replace(_signature(staged), self._pool / f"{name}.sig")
                os.replace(staged, self._pool / name)
        for leftover in self._pool.glob(".new-*"):
            leftover.unlink(missing_ok=True)
        _sync_dir(self._pool)

    def _change(self, tool: str, args: list[str]) -> None:
        """Run ``tool`` on a copy of the database, then serve the copy."""
        fresh = Path(tempfile.mkdtemp(prefix="db-", dir=self.root))
        try:
            current = self.root / _CURRENT
            for part in (self._db, f"{self.name}.files.tar.gz"):
                if (current / part).is_file():
                    shutil.copyfile(current / part, fresh / part)
            command = [tool, "--quiet", "--sign", "--key", self._signer.fingerprint]
            _run([*command, str(fresh / self._db), *args], self._signer)
            for backup in fresh.glob("*.old"):  # repo-add's copies of what it replaced
                backup.unlink()
            self._check(fresh)
            _sync(*(p for p in fresh.iterdir() if not p.is_symlink()))
            self._serve(fresh)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise

    def _check(self, fresh: Path) -> None:
        """What repo-add wrote reads whole and is signed: it only warns when signing fails,
        and a compressor cut short by a full disk can leave a truncated file behind."""
        for part in (self._db, f"{self.name}.files.tar.gz"):
            try:
                with tarfile.open(fresh / part) as db:
                    for _member in db:
                        pass
            except (OSError, tarfile.TarError) as exc:
                raise RepoError(f"{part} as written does not read: {exc}") from exc
            self._signer.verify(fresh / part, fresh / f"{part}.sig")

    def _serve(self, fresh: Path) -> None:
        fresh.chmod(0o755)
        current = self.root / _CURRENT
        previous = current.resolve() if current.is_symlink() else None
        link = self.root / f".{_CURRENT}-{fresh.name}"
        link.symlink_to(fresh.name)
        os.replace(link, current)  # the one step that changes what is served
        _sync_dir(self.root)
        (self.root / _SIGNED_BY).write_text(self._signer.fingerprint + "\n")
        if previous is not None and previous != fresh.resolve():
            shutil.rmtree(previous, ignore_errors=True)

    def _prune(self) -> None:
        """Drop pool files the database no longer names (older versions, removed packages)."""
        listed = set(self.packages().values())
        for path in self._pool.iterdir():
            name = path.name.removesuffix(".sig")
            if not name.startswith(".new-") and name not in listed:
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def _said(what: str) -> Iterator[None]:
    """An OSError on the way (a full disk) as the one error a change can end with."""
    try:
        yield
    except OSError as exc:
        raise RepoError(f"{what} failed: {exc}") from exc


def _signature(path: Path) -> Path:
    return path.with_name(f"{path.name}.sig")


def _desc(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    blocks = text.split("\n\n")
    for block in blocks:
        lines = block.strip().splitlines()
        if len(lines) >= 2 and lines[0].startswith("%"):
            fields[lines[0].strip("%")] = lines[1]
    return fields


def _run(command: list[str], signer: Signer) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=signer.env, timeout=REPO_TOOL_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RepoError(f"{command[0]} could not run: {exc}") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-500:]
        raise RepoError(f"{command[0]} failed (exit {done.returncode}): {said}")


def _sync(*paths: Path) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if paths:
        _sync_dir(paths[0].parent)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
