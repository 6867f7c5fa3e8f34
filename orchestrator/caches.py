"""Build caches: one engine-managed volume per package and variant, reused by its later builds.

A cache is a named volume (never a host path) labelled with its key, mounted at ``/cache`` in
each build of that package: makepkg's ``SRCDEST``, cargo's registry and git caches, sccache's
and ccache's stores (``cachescript.py`` says how a build uses it). Every build still runs in a
fresh container; only this volume outlives it.

Trust: a cache is keyed by ``pkgbase:variant`` and this service's instance, and is mounted in
builds of that package only, so one package's build can neither read nor write another's. Builds
of the same package name share it: anyone who may submit a build may put anything in the cache
of any package name they choose. That is one team's trust domain, as today (one token); with
tenants, the tenant belongs in the key.

Concurrency: a cache is lent to one build at a time. A second build of the same package while
the first runs gets none (it says so) and builds cold; sharing would need every tool in the
volume to be safe against a second writer, and makepkg's downloads and git mirrors are not.

The index (size, last use, how many builds used it, what hit last) is a JSON file in the data
directory; the volumes are the truth, and start-up drops what the engine no longer has. Past
``cache_max_bytes`` in all, the least recently used idle caches are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .backend import Backend
from .cachescript import CacheReport
from .errors import CacheBusy, NotFound, OrchestratorError
from .settings import Settings

log = logging.getLogger(__name__)

CACHE_LABEL = "orchestrator.cache"  # the key, on the volume
INSTANCE_LABEL = "orchestrator.instance"
VOLUME_PREFIX = "orchestrator-cache-"


def cache_key(pkgbase: str, variant: str) -> str:
    # ':' is in no package name and no variant: the key splits back unambiguously.
    return f"{pkgbase}:{variant}"


def volume_name(instance_id: str, key: str) -> str:
    """Docker's volume names take fewer characters than package names do: a digest."""
    digest = hashlib.sha256(f"{instance_id}\0{key}".encode()).hexdigest()[:24]
    return VOLUME_PREFIX + digest


@dataclass(frozen=True, slots=True)
class CacheInfo:
    key: str
    volume: str
    created_at: float
    last_used_at: float
    builds: int = 0  # builds that used it, first one included
    warm_builds: int = 0  # builds that found it already filled
    size_bytes: int | None = None  # as the last build saw it
    last: dict[str, Any] | None = None  # the last build's report
    last_job: str | None = None

    def to_dict(self, in_use: bool) -> dict[str, Any]:
        pkgbase, _, variant = self.key.rpartition(":")
        return {
            "key": self.key,
            "package": pkgbase,
            "variant": variant,
            "volume": self.volume,
            "size_bytes": self.size_bytes,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "builds": self.builds,
            "hits": self.warm_builds,
            "last_build": self.last,
            "last_job": self.last_job,
            "in_use": in_use,
        }


@dataclass(slots=True)
class Lease:
    """A cache lent to one build: the volume to mount, whether a build filled it before, and
    (set by the runner once the build is over) what the build found in it."""

    key: str
    volume: str
    warm: bool
    size_bytes: int | None = None  # as its last build left it
    report: CacheReport | None = field(default=None)


class Caches:
    def __init__(self, backend: Backend, settings: Settings) -> None:
        self._backend = backend
        self._settings = settings
        self._path = settings.data_dir / "caches.json"
        self._index: dict[str, CacheInfo] = {}
        self._busy: set[str] = set()
        self._lock = asyncio.Lock()  # index changes and volume removals, one at a time

    @property
    def enabled(self) -> bool:
        return self._settings.caches and self._backend.supports_volumes

    async def open(self) -> None:
        """Load the index and keep only what the engine still has; adopt volumes it has that
        the index lost (a crash between creating one and saving)."""
        self._index = _load(self._path)
        if not self._backend.supports_volumes:
            return
        labels = {INSTANCE_LABEL: self._settings.instance_id}
        found = await self._backend.list_volumes(labels)
        now = time.time()
        for name, volume_labels in found.items():
            key = volume_labels.get(CACHE_LABEL, "")
            if (
                key
                and key not in self._index
                and volume_name(self._settings.instance_id, key) == name
            ):
                self._index[key] = CacheInfo(key, name, now, now, builds=1)
        self._index = {k: c for k, c in self._index.items() if c.volume in found}
        await asyncio.to_thread(self._save)

    def listing(self) -> list[dict[str, Any]]:
        ordered = sorted(self._index.values(), key=lambda c: c.last_used_at, reverse=True)
        return [c.to_dict(c.key in self._busy) for c in ordered]

    def get(self, key: str) -> dict[str, Any]:
        info = self._index.get(key)
        if info is None:
            raise NotFound(f"no cache {key!r}")
        return info.to_dict(key in self._busy)

    @contextlib.asynccontextmanager
    async def lease(self, pkgbase: str, variant: str, job_id: str) -> AsyncIterator[Lease]:
        """The package's cache for one build; ``CacheBusy`` when another build has it. On the
        way out its use is recorded (however the build ended), and the caches are pruned."""
        key = cache_key(pkgbase, variant)
        if key in self._busy:
            raise CacheBusy(f"cache {key} is in use by another build of {pkgbase}")
        self._busy.add(key)
        try:
            name = volume_name(self._settings.instance_id, key)
            labels = {CACHE_LABEL: key, INSTANCE_LABEL: self._settings.instance_id}
            created = await self._backend.create_volume(name, labels)
        except BaseException:
            self._busy.discard(key)
            raise
        known = self._index.get(key)
        warm = not created and known is not None and known.builds > 0
        lease = Lease(key, name, warm, known.size_bytes if known and warm else None)
        if known is None:  # listed (in use) from its first build on
            now = time.time()
            self._index[key] = CacheInfo(key, name, now, now)
        try:
            yield lease
        finally:
            self._busy.discard(key)
            # Shielded: a cancelled job's use of the cache is still accounted for.
            await asyncio.shield(self._used(lease, job_id))

    async def _used(self, lease: Lease, job_id: str) -> None:
        async with self._lock:
            now = time.time()
            known = self._index.get(lease.key) or CacheInfo(lease.key, lease.volume, now, now)
            report = lease.report
            self._index[lease.key] = replace(
                known,
                last_used_at=now,
                builds=known.builds + 1,
                warm_builds=known.warm_builds + int(lease.warm),
                size_bytes=report.size_bytes if report else known.size_bytes,
                last=report.to_dict() if report else known.last,
                last_job=job_id,
            )
            await self._prune_locked()
            await asyncio.to_thread(self._save)

    async def remove(self, key: str) -> None:
        async with self._lock:
            info = self._index.get(key)
            if info is None:
                raise NotFound(f"no cache {key!r}")
            if key in self._busy:
                raise CacheBusy(f"cache {key!r} is in use by a running build")
            await self._backend.remove_volume(info.volume)
            del self._index[key]
            await asyncio.to_thread(self._save)

    async def prune(self) -> list[str]:
        async with self._lock:
            removed = await self._prune_locked()
            await asyncio.to_thread(self._save)
            return removed

    async def _prune_locked(self) -> list[str]:
        """Remove idle caches until all of them fit the cap: first any that could never fit on
        its own, then the least recently used."""
        cap = self._settings.cache_max_bytes
        removed: list[str] = []
        total = sum(c.size_bytes or 0 for c in self._index.values())
        oversized = [c for c in self._index.values() if (c.size_bytes or 0) > cap]
        by_age = sorted(self._index.values(), key=lambda c: c.last_used_at)
        for info in oversized + [c for c in by_age if c not in oversized]:
            if total <= cap:
                break
            if info.key in self._busy:
                continue
            try:
                await self._backend.remove_volume(info.volume)
            except OrchestratorError as exc:  # in use after all: the next prune tries again
                log.warning("could not remove cache %s: %s", info.key, exc)
                continue
            del self._index[info.key]
            total -= info.size_bytes or 0
            removed.append(info.key)
        if removed:
            log.info("pruned caches (over %d bytes): %s", cap, ", ".join(removed))
        return removed

    def _save(self) -> None:
        data = {k: asdict(c) for k, c in self._index.items()}
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._path)
        except OSError as exc:  # a full disk: the index is rebuilt from the volumes later
            log.warning("could not save the cache index: %s", exc)


def _load(path: Path) -> dict[str, CacheInfo]:
    try:
        data = json.loads(path.read_text())
        return {str(k): CacheInfo(**v) for k, v in data.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("cache index %s unreadable (%s): starting from the volumes", path, exc)
        return {}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
