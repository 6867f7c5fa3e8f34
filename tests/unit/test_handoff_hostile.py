"""A hostile task holding its step's token against the handoff listener (real listener on
127.0.0.1): what it can make the service hold is bounded."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from orchestrator.api.app import _auth_middleware
from orchestrator.backend._handoff import Handoff

from .. import waiting

_REQUESTS = 40


async def test_many_stop_requests_hold_one_the_latest(handoff: Handoff) -> None:
    """Each waiting stop request holds a connection (a descriptor) of the service: a task that
    opens them by the thousand must not make it hold them all. The latest waits; the ones it
    replaces are answered (409) and the wrapper, which has one at a time, asks again."""
    url = f"{handoff.url}/steps/orch-a/stop"
    auth = {"Authorization": f"Bearer {handoff.open('orch-a', None, ())}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        asked = []
        for _ in range(_REQUESTS):
            asked.append(asyncio.ensure_future(http.get(url, headers=auth)))
            await waiting.until(lambda: handoff.watching("orch-a"), what="the request waiting")
        done = await waiting.until(
            lambda: [a for a in asked if a.done()],
            lambda answered: len(answered) == _REQUESTS - 1,
            what="all but the latest answered",
        )
        assert {(await a).status for a in done} == {409}
        assert handoff.stop("orch-a", grace_s=1.0) is True
        last = await asked[-1]
        assert (last.status, await last.text()) == (200, "10")


_UNDECODABLE = (
    b"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
)


async def _raw(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_UNDECODABLE.replace(b"{path}", path.encode()))
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def _key(_request: web.Request) -> web.Response:
    return web.Response(text="key")


async def test_a_token_of_undecodable_bytes_is_refused_not_an_error(handoff: Handoff) -> None:
    """A header's bytes that are no UTF-8 reach us as surrogates: refused like any wrong token,
    not a 500 and a logged traceback per request (anyone who reaches the listener or the API)."""
    handoff.open("orch-a", None, ())
    answer = await _raw(int(handoff.url.rsplit(":", 1)[1]), "/steps/orch-a/stop")
    assert answer.startswith(b"HTTP/1.1 403 ")
    app = web.Application(middlewares=[_auth_middleware("secret")])
    app.router.add_get("/repo/key", _key)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        answer = await _raw(runner.addresses[0][1], "/repo/key")
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 401 ")
