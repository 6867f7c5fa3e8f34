"""The disk watchdog: ends a build that writes more than ``build_disk_bytes`` where no quota
stops it, counting its writable layer (when the engine has no quota for it) and what it added
to its cache volume (no engine has a quota for that)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from .backend import Backend
from .errors import OrchestratorError
from .settings import Settings


async def watch_disk(
    backend: Backend, settings: Settings, cid: str, cache_path: str | None = None
) -> int:
    """Return what the build has written once that is over its limit; until then, look.

    Only the engine can measure, and its answer can take seconds (Docker on fuse-overlayfs
    walks the whole container for it): so the pause between looks is at least ten times the
    last look's cost. The cache counts by what it grew since the first look, at the build's
    start. It is measured as the build's user, which is cheap enough to do often; a build that
    hides files from itself there escapes this, not the cap on all caches (measured by root
    after the build). A look that fails is tried again at the next."""
    limit = settings.build_disk_bytes
    pause_s = settings.build_disk_poll_s
    baseline: int | None = None
    if cache_path is not None:
        baseline = await _quietly(backend.path_usage(cid, cache_path))
    while True:
        await asyncio.sleep(pause_s)
        began = time.monotonic()
        used = 0
        if not backend.enforces_disk_limit:
            used += await _quietly(backend.disk_usage(cid)) or 0
        if cache_path is not None:
            cache = await _quietly(backend.path_usage(cid, cache_path))
            if cache is not None and baseline is None:
                baseline = cache
            if cache is not None and baseline is not None:
                used += max(0, cache - baseline)
        if used > limit:
            return used
        pause_s = max(settings.build_disk_poll_s, 10 * (time.monotonic() - began))


async def _quietly(measure: Awaitable[int | None]) -> int | None:
    try:
        return await measure
    except OrchestratorError:
        return None
