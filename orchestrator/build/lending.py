"""A package's build cache as a new build uses it: lent (or not, and the build says why), its
wrapper's environment and the sources' mtimes set up, and its report read back at the end."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from ..backend import Backend, Handle
from ..errors import OrchestratorError
from ..jobs import Sink
from ..narration.events import Action, Event, Level
from ..storage import archive
from . import cachescript
from .caches import Caches, Lease
from .srcinfo import SrcInfo
from .variants import VariantPlan


async def lend(
    caches: Caches | None,
    info: SrcInfo,
    variant: VariantPlan,
    job_id: str,
    wanted: bool,
    sink: Sink,
    leases: contextlib.AsyncExitStack,
    record: dict[str, Any],
) -> Lease | None:
    """The package's cache, when there is one to lend (held on ``leases``, said in ``record``,
    the build's cache report); the build says which it got. ``wanted``: not cache=off."""
    if caches is None or not caches.enabled:
        return None
    if not wanted:
        record.update(used=False, why="cache=off was asked for")
        await sink([Event(Action.CACHE, "No cache: this build asked for cache=off")])
        return None
    try:
        lease = await leases.enter_async_context(
            caches.lease(info.pkgbase, variant.variant, job_id, variant.image)
        )
    except OrchestratorError as exc:
        record.update(used=False, why=str(exc))
        await sink([Event(Action.CACHE, f"Building without a cache: {exc}", Level.WARNING)])
        return None
    record.update(key=lease.key, used=True, warm=lease.warm)
    state = "warm" if lease.warm else "new: this build fills it"
    await sink([Event(Action.CACHE, f"Cache {lease.key} ({state}) mounted at /cache")])
    return lease


async def set_up(
    caches: Caches | None, lease: Lease | None, info: SrcInfo, source_dir: Path, max_bytes: int
) -> tuple[dict[str, str], dict[str, float] | None]:
    """The wrapper's environment, and the mtimes to give the local files (see
    ``Caches.inputs``); without them, cargo's kept output is not used. ``max_bytes``: all
    caches together."""
    if lease is None or caches is None:
        return {}, None
    env = cachescript.env(info, max_bytes // 4)
    digests = await asyncio.to_thread(archive.file_digests, source_dir)
    mtimes = await caches.inputs(lease, digests)
    if mtimes is None:
        env["ORCHESTRATOR_BUILD_DIR_KEY"] = ""
    return env, mtimes


async def report(backend: Backend, cid: Handle, lease: Lease) -> cachescript.CacheReport:
    """What the wrapper left in the container about the cache; none of it is trusted."""
    files: dict[str, bytes] = {}
    try:
        tar = await backend.collect(cid, cachescript.REPORT_DIR + "/.", 1 << 20)
    except OrchestratorError:
        tar = None
    if tar is not None:
        with tar:
            files = await asyncio.to_thread(archive.small_files, tar, 64 * 1024)
    return cachescript.parse_report(lease.key, lease.warm, files)
