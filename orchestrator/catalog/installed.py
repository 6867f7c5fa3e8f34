"""Installed workers: binaries taken out of built packages, switched in atomically.

Layout under the workers folder::

    <id>/current -> <version>-<token>     (a symlink, replaced with one rename)
    <id>/<version>-<token>/<binary>
    <id>/<version>-<token>/worker.json    (id, version, binary, sha256, installed_at, job)

A new version is unpacked into a staging folder beside the others and becomes current only by
the final rename of ``current``; until then the previous version stays in place untouched, and a
failed or cancelled install removes its staging folder. Readers see the old version or the new
one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import InstallError, InvalidInput


@dataclass(frozen=True, slots=True)
class InstalledWorker:
    id: str
    version: str
    binary: str
    path: Path
    sha256: str
    installed_at: float
    job_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "binary": self.binary,
            "path": str(self.path),
            "sha256": self.sha256,
            "installed_at": datetime.fromtimestamp(self.installed_at, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "job_id": self.job_id,
        }


class WorkerStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, worker_id: str) -> Path:
        if not worker_id or "/" in worker_id or worker_id.startswith("."):
            raise InvalidInput(f"not a worker id: {worker_id!r}")
        return self.root / worker_id

    def get(self, worker_id: str) -> InstalledWorker | None:
        current = self._folder(worker_id) / "current"
        try:
            meta = json.loads((current / "worker.json").read_text())
        except (OSError, ValueError):
            return None
        return InstalledWorker(
            id=meta["id"],
            version=meta["version"],
            binary=meta["binary"],
            path=current.resolve() / meta["binary"],
            sha256=meta["sha256"],
            installed_at=meta["installed_at"],
            job_id=meta.get("job_id"),
        )

    def list(self) -> list[InstalledWorker]:
        if not self.root.is_dir():
            return []
        found = (self.get(p.name) for p in sorted(self.root.iterdir()) if p.is_dir())
        return [w for w in found if w is not None]

    def install(
        self,
        worker_id: str,
        version: str,
        binary: str,
        package: Path,
        job_id: str | None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> InstalledWorker | None:
        """Take ``usr/bin/<binary>`` out of ``package`` and make it the current version.

        ``stopped`` is asked right before the switch: if the job was cancelled meanwhile,
        nothing changes and None is returned. One install per worker at a time (the caller
        makes sure of that)."""
        folder = self._folder(worker_id)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".staging-{uuid.uuid4().hex[:8]}"
        final = folder / f"{version}-{uuid.uuid4().hex[:8]}"
        link = folder / f".current-{uuid.uuid4().hex[:8]}"
        switched = False
        staging.mkdir()
        try:
            digest = _extract_binary(package, f"usr/bin/{binary}", staging / binary)
            meta = {
                "id": worker_id,
                "version": version,
                "binary": binary,
                "sha256": digest,
                "installed_at": time.time(),
                "job_id": job_id,
            }
            _write_durably(staging / "worker.json", json.dumps(meta, indent=2))
            if stopped():
                return None
            staging.rename(final)
            link.symlink_to(final.name)
            os.replace(link, folder / "current")  # the one step that switches versions
            switched = True
            _fsync_dir(folder)
        finally:
            # Whatever did not become current goes; the previous version stays as it was.
            shutil.rmtree(staging, ignore_errors=True)
            link.unlink(missing_ok=True)
            if not switched:
                shutil.rmtree(final, ignore_errors=True)
        self._prune(folder, keep=final.name)
        installed = self.get(worker_id)
        assert installed is not None
        return installed

    def remove(self, worker_id: str) -> bool:
        folder = self._folder(worker_id)
        if not folder.exists():
            return False
        # Unlink `current` first so the worker is gone at once, then the files.
        (folder / "current").unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        return True

    @staticmethod
    def _prune(folder: Path, keep: str) -> None:
        # Only one install per worker runs at a time, so anything else here is an older
        # version or the leftovers of one that crashed.
        for old in folder.iterdir():
            if old.name in (keep, "current"):
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def _write_durably(path: Path, text: str) -> None:
    with path.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _extract_binary(package: Path, member_name: str, target: Path) -> str:
    hasher = hashlib.sha256()
    with tarfile.open(package, mode="r:*") as tar:
        try:
            member = tar.getmember(member_name)
        except KeyError:
            raise InstallError(f"the package has no {member_name}") from None
        source = tar.extractfile(member) if member.isfile() else None
        if source is None:
            raise InstallError(f"{member_name} in the package is not a regular file")
        with source, target.open("wb") as out:
            while chunk := source.read(1 << 20):
                hasher.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    target.chmod(0o755)
    return hasher.hexdigest()
