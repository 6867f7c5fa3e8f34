"""The disk watchdog: ends a build that writes more than ``build_disk_bytes`` where no quota
stops it, counting the places on its own filesystem its user can write to (when the engine has
no quota for that) and what it added to its cache volume (no engine has a quota for that).

Why places and not the engine's own measure: Docker on fuse-overlayfs answers ``SizeRw`` by
walking the whole container (~6 s for the build image), so a build could write gigabytes between
two looks. The places a build can write to are few (``/build``, ``/tmp``, its home...), and a
``du`` of them, run in the build's own container, costs ~50-300 ms: the watchdog looks about
once a second, so a build writing at this disk's speed (~200 MB/s) overshoots by a few hundred
MiB at most. What ``du`` cannot read (makepkg makes its package folder unlistable; a build can
hide files from itself) is left to the engine's measure, taken meanwhile at its own slow pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..backend import Backend
from ..errors import OrchestratorError
from ..settings import Settings
from ..timeouts import LAYER_LOOK_PAUSE_PER_COST

_T = TypeVar("_T")
LAYER = "its writable layer"  # where the engine's own measure says the bytes are


@dataclass(frozen=True, slots=True)
class Overrun:
    """What the build had written when it was caught, and where most of it was."""

    used: int
    where: str


@dataclass
class _Watched:
    cid: str
    cache_path: str | None
    baseline: int | None = None  # the cache's size at the build's start
    cache_grown: int = 0  # what the build has added to its cache, at the last look
    unseen: asyncio.Event = field(default_factory=asyncio.Event)  # du could not read it all
    seen: Callable[[int], None] | None = None  # told each look's total (the build's vitals)


class DiskWatch:
    """Watches builds' disk use; knows, per image, where a build's user can write."""

    def __init__(self, backend: Backend, settings: Settings) -> None:
        self._backend = backend
        self._settings = settings
        self._places: dict[str, tuple[str, ...]] = {}

    async def watch(
        self,
        cid: str,
        image: str,
        guess: tuple[str, ...],
        cache_path: str | None = None,
        seen: Callable[[int], None] | None = None,
    ) -> Overrun:
        """Return once the build has written more than its limit; until then, look.

        ``guess`` are the places to measure until the image's are known: the first build of
        an image finds them meanwhile (a walk of the image: seconds, under a build's load).
        The cache counts by what it grew since the build's start. Both are measured as the
        build's user: what it hides from itself in its cache escapes this, not the cap on all
        caches (measured by root after the build). A look that fails is tried again."""
        watched = _Watched(cid, cache_path, seen=seen)
        if cache_path is not None:
            first = await _quietly(self._backend.path_usage(cid, (cache_path,)))
            watched.baseline = None if first is None else first.sizes[cache_path]
        looks = [asyncio.ensure_future(self._quick_looks(watched, image, guess))]
        if not self._backend.enforces_disk_limit:
            looks.append(asyncio.ensure_future(self._slow_looks(watched)))
        finding = None
        if not self._backend.enforces_disk_limit and image not in self._places:
            finding = asyncio.ensure_future(self._find(cid, image))
        try:
            done, _ = await asyncio.wait(looks, return_when=asyncio.FIRST_COMPLETED)
            return done.pop().result()
        finally:
            for task in [*looks, finding]:
                if task is not None:
                    task.cancel()

    async def _quick_looks(self, watched: _Watched, image: str, guess: tuple[str, ...]) -> Overrun:
        cache = (watched.cache_path,) if watched.cache_path is not None else ()
        pause_s = self._settings.build_disk_poll_s
        while True:
            await asyncio.sleep(pause_s)
            began = time.monotonic()
            wanted = self._where(image, guess, watched.cache_path) + cache
            usage = await _quietly(self._backend.path_usage(watched.cid, wanted))
            if usage is None or not usage.complete:
                watched.unseen.set()
            if usage is None:
                continue
            sizes = dict(usage.sizes)
            if watched.cache_path is not None:
                sizes[watched.cache_path] = _grown(watched, sizes[watched.cache_path])
            used = sum(sizes.values())
            if watched.seen is not None:
                watched.seen(used)
            if used > self._settings.build_disk_bytes:
                return Overrun(used, max(sizes, key=lambda place: sizes[place]))
            pause_s = max(self._settings.build_disk_poll_s, time.monotonic() - began)

    async def _slow_looks(self, watched: _Watched) -> Overrun:
        """The engine's measure of the whole writable layer, once the quick looks have missed
        something; never more than a tenth of the daemon's time."""
        await watched.unseen.wait()
        while True:
            began = time.monotonic()
            layer = await _quietly(self._backend.disk_usage(watched.cid))
            used = (layer or 0) + watched.cache_grown
            if used > self._settings.build_disk_bytes:
                return Overrun(used, LAYER)
            pause_s = LAYER_LOOK_PAUSE_PER_COST * (time.monotonic() - began)
            await asyncio.sleep(max(self._settings.build_disk_poll_s, pause_s))

    def _where(self, image: str, guess: tuple[str, ...], cache_path: str | None) -> tuple[str, ...]:
        """The places to measure: none where the engine holds the quota itself. The cache
        volume is not one: it is measured on its own, against its size at the start."""
        if self._backend.enforces_disk_limit:
            return ()
        return tuple(p for p in self._places.get(image, guess) if p != cache_path)

    async def _find(self, cid: str, image: str) -> None:
        found = await _quietly(self._backend.writable_places(cid))
        if found is not None:
            self._places[image] = found


def _grown(watched: _Watched, size: int) -> int:
    if watched.baseline is None:
        watched.baseline = size
    watched.cache_grown = max(0, size - watched.baseline)
    return watched.cache_grown


async def _quietly(measure: Awaitable[_T]) -> _T | None:
    try:
        return await measure
    except OrchestratorError:
        return None
