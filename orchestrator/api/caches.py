"""Build caches: list them, look at one, remove one."""

from __future__ import annotations

from aiohttp import web

from .keys import ENGINE
from .wire import Cache, CacheList, respond


async def list_caches(request: web.Request) -> web.Response:
    caches = request.app[ENGINE].caches
    listed = [Cache.model_validate(c) for c in caches.listing()]
    return respond(
        CacheList(
            caches=listed,
            enabled=caches.enabled,
            total_bytes=sum(c.size_bytes or 0 for c in listed),
            max_bytes=request.app[ENGINE].settings.cache_max_bytes,
        )
    )


async def get_cache(request: web.Request) -> web.Response:
    return respond(Cache.model_validate(request.app[ENGINE].caches.get(request.match_info["key"])))


async def delete_cache(request: web.Request) -> web.Response:
    await request.app[ENGINE].caches.remove(request.match_info["key"])
    return web.Response(status=204)
