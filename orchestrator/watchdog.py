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
    backend: Backend,
    settings: Settings,
    cid: str,
    cache_path: str | None = None,
    cache_before_bytes: int = 0,
) -> int:
    """Return what the build has written once that is over its limit; until then, look.

    Only the engine can measure, and its answer can take seconds (Docker on fuse-overlayfs
    walks the whole container for it): so the pause between looks is at least ten times the
    last look's cost. The cache counts by what it grew since the build began; a build that hides
    files in it from its own user (the measure runs as that user) is not held to it until the
    cap prunes the cache after the build."""
    limit = settings.build_disk_bytes
    pause_s = settings.build_disk_poll_s
    while True:
        await asyncio.sleep(pause_s)
        began = time.monotonic()
        used, known = 0, False
        if not backend.enforces_disk_limit:
            layer = await _quietly(backend.disk_usage(cid))
            if layer is not None:
                used, known = used + layer, True
        if cache_path is not None:
            cache = await _quietly(backend.path_usage(cid, cache_path))
            if cache is not None:
                used, known = used + max(0, cache - cache_before_bytes), True
        if not known:  # gone, or an engine that cannot tell: nothing more to watch
            await asyncio.Event().wait()
        if used > limit:
            return used
        pause_s = max(settings.build_disk_poll_s, 10 * (time.monotonic() - began))


async def _quietly(measure: Awaitable[int | None]) -> int | None:
    try:
        return await measure
    except OrchestratorError:
        return None
