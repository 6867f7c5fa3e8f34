"""Build caches: one engine-managed volume per package and variant, reused by its later builds.

A cache is a named volume (never a host path) labelled with its key, mounted at ``/cache`` in
each build of that package: makepkg's ``SRCDEST``, cargo's registry and git caches, sccache's
and ccache's stores (``cachescript.py`` says how a build uses it). Every build still runs in a
fresh container; only this volume outlives it. On Swarm the engine's volume is an archive the
manager keeps and the task unpacks and sends back (``backend/_swarmvolumes.py``); nothing here
differs.

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
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..backend import Backend
from ..errors import CacheBusy, NotFound, OrchestratorError
from ..settings import Settings
from ..timeouts import CACHE_SETTLE_TIMEOUT_S
from .cachescript import CacheReport

log = logging.getLogger(__name__)

CACHE_LABEL = "orchestrator.cache"  # the key, on the volume
INSTANCE_LABEL = "orchestrator.instance"
VOLUME_PREFIX = "orchestrator-cache-"
MAX_INPUTS = 20_000  # local files remembered per cache; past it, all are new every build


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
    # The last build's local files, path → [sha256, the mtime they were given]; not served.
    inputs: dict[str, list[Any]] | None = None

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
    (set by the runner) whether the build ran with it and what it found in it."""

    key: str
    volume: str
    warm: bool
    image: str  # the build's image, which also measures the volume afterwards
    started: bool = False
    report: CacheReport | None = field(default=None)


class Caches:
    def __init__(self, backend: Backend, settings: Settings) -> None:
        self._backend = backend
        self._settings = settings
        self._path = settings.data_dir / "caches.json"
        self._index: dict[str, CacheInfo] = {}
        # Lent to a build, or being removed: never both. Checked and set without an await in
        # between, so a lease and a removal cannot both pass.
        self._busy: set[str] = set()
        self._lock = asyncio.Lock()  # index changes and volume removals, one at a time
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self._settings.caches and self._backend.supports_volumes

    async def open(self) -> None:
        """Load the index and keep only what the engine still has; adopt volumes it has that
        the index lost (a crash between creating one and saving); prune to the cap."""
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
        await self.prune()

    def listing(self) -> list[dict[str, Any]]:
        ordered = sorted(self._index.values(), key=lambda c: c.last_used_at, reverse=True)
        return [c.to_dict(c.key in self._busy) for c in ordered]

    def get(self, key: str) -> dict[str, Any]:
        info = self._index.get(key)
        if info is None:
            raise NotFound(f"no cache {key!r}")
        return info.to_dict(key in self._busy)

    @contextlib.asynccontextmanager
    async def lease(
        self, pkgbase: str, variant: str, job_id: str, image: str
    ) -> AsyncIterator[Lease]:
        """The package's cache for one build; ``CacheBusy`` when another build has it. On the
        way out its use is recorded (however the build ended); then it is measured and the
        caches pruned, in the background."""
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
        lease = Lease(key, name, not created and known is not None and known.builds > 0, image)
        if known is None or created:  # listed (in use) from its first build on
            now = time.time()
            self._index[key] = CacheInfo(key, name, now, now)
        try:
            yield lease
        finally:
            # Shielded: a cancelled job's use of the cache is still accounted for.
            await asyncio.shield(self._release(lease, job_id))

    async def inputs(self, lease: Lease, digests: Mapping[str, str]) -> dict[str, float] | None:
        """The mtimes to give the build's local files (path → sha256): unchanged since the
        last build of this cache, the mtime it had then; new or changed, now. cargo takes a
        file whose mtime is older than its output as unchanged, so a file that changed must
        look newer than anything an earlier build made. Saved before the build starts, or a
        crash could pair kept output with an older record; None when it could not be saved
        (then cargo's kept output must not be used)."""
        async with self._lock:
            info = self._index[lease.key]
            now = time.time()
            old = info.inputs or {}
            stamps = {
                rel: float(old[rel][1]) if rel in old and old[rel][0] == digest else now
                for rel, digest in digests.items()
            }
            kept = {rel: [digests[rel], stamps[rel]] for rel in digests}
            if len(kept) > MAX_INPUTS:
                stamps, kept = dict.fromkeys(digests, now), {}
            self._index[lease.key] = replace(info, inputs=kept)
            saved = await asyncio.to_thread(self._save)
        return stamps if saved else None

    async def _release(self, lease: Lease, job_id: str) -> None:
        async with self._lock:
            now = time.time()
            known = self._index.get(lease.key) or CacheInfo(lease.key, lease.volume, now, now)
            report = lease.report
            self._index[lease.key] = replace(
                known,
                last_used_at=now,
                builds=known.builds + int(lease.started),
                warm_builds=known.warm_builds + int(lease.started and lease.warm),
                last=report.to_dict() if report else known.last,
                last_job=job_id if lease.started else known.last_job,
            )
            self._busy.discard(lease.key)
            await asyncio.to_thread(self._save)
        # Measured before the job ends, not after: the container that measures it is the job's,
        # and none may be left when the job answers as ended (a cancel waits for that). Tracked,
        # so that a release cut short (the service stopping) is still waited for by ``close``.
        measuring = self._track(self._measure(lease))
        await measuring
        self._track(self._prune_later())

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _measure(self, lease: Lease) -> None:
        """The volume's size as root sees it (a build cannot hide files from that)."""
        labels = {INSTANCE_LABEL: self._settings.instance_id}
        try:
            size = await self._backend.volume_usage(lease.volume, lease.image, labels)
        except OrchestratorError as exc:
            log.warning("could not measure cache %s: %s", lease.key, exc)
            return
        async with self._lock:
            info = self._index.get(lease.key)
            if info is not None and info.volume == lease.volume and size is not None:
                self._index[lease.key] = replace(info, size_bytes=size)
                await asyncio.to_thread(self._save)

    async def _prune_later(self) -> None:
        """The prune that keeps the cap: after the build, so it costs the build nothing."""
        async with self._lock:
            await self._prune_locked()
            await asyncio.to_thread(self._save)

    async def settled(self) -> None:
        """Wait for the measuring and pruning that builds left running."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, timeout_s: float = CACHE_SETTLE_TIMEOUT_S) -> None:
        """Let the measuring finish (its container goes with it), then stop what is left."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled(), timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def remove(self, key: str) -> None:
        async with self._lock:
            info = self._index.get(key)
            if info is None:
                raise NotFound(f"no cache {key!r}")
            if key in self._busy:
                raise CacheBusy(f"cache {key!r} is in use by a running build")
            self._busy.add(key)
            try:
                await self._backend.remove_volume(info.volume)
            finally:
                self._busy.discard(key)
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
            self._busy.add(info.key)
            try:
                await self._backend.remove_volume(info.volume)
            except OrchestratorError as exc:  # in use after all: the next prune tries again
                log.warning("could not remove cache %s: %s", info.key, exc)
                continue
            finally:
                self._busy.discard(info.key)
            del self._index[info.key]
            total -= info.size_bytes or 0
            removed.append(info.key)
        if removed:
            log.info("pruned caches (over %d bytes): %s", cap, ", ".join(removed))
        return removed

    def _save(self) -> bool:
        data = {k: asdict(c) for k, c in self._index.items()}
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._path)
        except OSError as exc:  # a full disk: the index is rebuilt from the volumes later
            log.warning("could not save the cache index: %s", exc)
            return False
        return True


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
