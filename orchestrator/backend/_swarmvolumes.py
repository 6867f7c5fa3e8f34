"""Build caches on Swarm: each cache volume is an archive the manager keeps, carried to and from
the task by the handoff listener (``_handoff.py``), the way GitLab Runner's distributed cache
carries a job's cache to whichever runner takes it.

A named volume is node-local, and a build may land on any node, so the volume a build mounts is
made where it runs: the task's wrapper fetches the volume's archive (a zstd-compressed tar) at
its start, unpacks it at the mount path, and once the command has ended sends the folder back
as a new archive, which replaces the old one only once it has all arrived. A build that is
killed sends nothing: the volume stays as the last build that ended left it.

Why not sccache's shared backends (Redis, WebDAV): Debian's sccache (0.10.0-4, in the build
image) is built without any of them; it takes ``SCCACHE_REDIS_ENDPOINT`` and
``SCCACHE_WEBDAV_ENDPOINT`` silently and uses its local disk. And an archive carries what no
compiler cache can: cargo's build-dir (what rustc links, proc-macros, build scripts), the crate
downloads and makepkg's sources, so a warm build on any node is as warm as on Docker. Trust stays
as on Docker (``build/caches.py``): only the step the volume was lent to can read or replace it,
by its own token.

The store is a folder in the data directory: ``NAME.json`` (the volume's labels; its being there
is the volume's) and ``NAME.tar.zst`` (its content, once a build has sent one).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from aiohttp import web

from ..errors import BackendError, VolumeInUse
from ..timeouts import HANDOFF_BODY_TIMEOUT_S

ARCHIVE_SUFFIX = ".tar.zst"
_READ_BYTES = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class VolumeStore:
    """Volumes as archives under ``root``; ``max_bytes`` bounds one archive."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._mounted: dict[str, int] = {}  # volume → steps that have it now

    def _path(self, name: str, suffix: str) -> Path:
        if not _NAME.fullmatch(name):
            raise BackendError(f"not a volume name: {name!r}")
        return self.root / f"{name}{suffix}"

    def exists(self, name: str) -> bool:
        return self._path(name, ".json").exists()

    def create(self, name: str, labels: Mapping[str, str]) -> bool:
        path = self._path(name, ".json")
        if path.exists():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        spare = self.root / f".{name}.{secrets.token_hex(8)}.json"
        spare.write_text(json.dumps(dict(labels)))
        os.replace(spare, path)
        return True

    def remove(self, name: str) -> None:
        if self._mounted.get(name):
            raise VolumeInUse(f"volume {name} is in use by a running step")
        for suffix in (ARCHIVE_SUFFIX, ".json"):
            self._path(name, suffix).unlink(missing_ok=True)

    def listing(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        found: dict[str, Mapping[str, str]] = {}
        if not self.root.is_dir():
            return found
        for path in self.root.glob("*.json"):
            if path.name.startswith("."):
                continue
            try:
                have = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(have, dict) and all(have.get(k) == v for k, v in labels.items()):
                found[path.name.removesuffix(".json")] = {str(k): str(v) for k, v in have.items()}
        return found

    def usage(self, name: str) -> int | None:
        """The archive's size (compressed): what the volume takes where it is kept."""
        if not self.exists(name):
            return None
        try:
            return self._path(name, ARCHIVE_SUFFIX).stat().st_size
        except FileNotFoundError:
            return 0

    def archive(self, name: str) -> Path | None:
        path = self._path(name, ARCHIVE_SUFFIX)
        return path if self.exists(name) and path.exists() else None

    def spare(self, name: str) -> tuple[Path, IO[bytes]]:
        """A file to receive a new archive in, beside where ``commit`` puts it."""
        path = self.root / f".{self._path(name, '').name}.{secrets.token_hex(8)}.part"
        self.root.mkdir(parents=True, exist_ok=True)
        return path, path.open("wb")

    def commit(self, name: str, spare: Path) -> bool:
        """The received archive becomes the volume's; not if the volume was removed meanwhile."""
        if not self.exists(name):
            spare.unlink(missing_ok=True)
            return False
        os.replace(spare, self._path(name, ARCHIVE_SUFFIX))
        return True

    def mount(self, names: tuple[str, ...]) -> None:
        for name in names:
            self._mounted[name] = self._mounted.get(name, 0) + 1

    def unmount(self, names: tuple[str, ...]) -> None:
        for name in names:
            left = self._mounted.get(name, 0) - 1
            if left > 0:
                self._mounted[name] = left
            else:
                self._mounted.pop(name, None)


class ArchivedVolumes:
    """``Volumes`` of ``SwarmBackend`` (a mixin): the store's calls, off the event loop."""

    if TYPE_CHECKING:
        _volumes: VolumeStore

    @property
    def supports_volumes(self) -> bool:
        return True

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        return await asyncio.to_thread(self._volumes.create, name, labels)

    async def remove_volume(self, name: str) -> None:
        await asyncio.to_thread(self._volumes.remove, name)

    async def volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        return await asyncio.to_thread(self._volumes.usage, name)

    async def list_volumes(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        return await asyncio.to_thread(self._volumes.listing, labels)


async def serve_archive(store: VolumeStore, name: str) -> web.StreamResponse:
    """The volume's archive (a HEAD tells whether there is one): 204 while it has none."""
    archive = await asyncio.to_thread(store.archive, name)
    if archive is None:
        return web.Response(status=204)
    return web.FileResponse(archive, headers={"Content-Type": "application/zstd"})


async def receive_archive(
    request: web.Request, store: VolumeStore, name: str, still_open: Callable[[], bool]
) -> web.Response:
    """The volume's new archive: it replaces the old one only once all of it came, cut at the
    store's cap, and not once the step is gone (``still_open``)."""
    if (request.content_length or 0) > store.max_bytes:
        raise web.HTTPRequestEntityTooLarge(
            max_size=store.max_bytes, actual_size=request.content_length or 0
        )
    spare, out = await asyncio.to_thread(store.spare, name)
    try:
        with out:
            async with asyncio.timeout(HANDOFF_BODY_TIMEOUT_S):
                while block := await request.content.read(_READ_BYTES):
                    if out.tell() + len(block) > store.max_bytes:
                        raise web.HTTPRequestEntityTooLarge(
                            max_size=store.max_bytes, actual_size=store.max_bytes + 1
                        )
                    await asyncio.to_thread(out.write, block)
        if not still_open():
            raise web.HTTPNotFound(text="no such step\n")  # destroyed meanwhile
        if not await asyncio.to_thread(store.commit, name, spare):
            raise web.HTTPNotFound(text="no such volume\n")  # removed meanwhile
    finally:
        spare.unlink(missing_ok=True)
    return web.Response(status=201, text="ok\n")
