"""GET /v1/jobs/{job_id}/stream: the job's narration as Server-Sent Events.

Replay first (everything after ``Last-Event-ID``), then live; each event's ``id`` is its ``seq``.
When the job has ended: ``event: end`` with the final status, then ``data: [DONE]``, then close.
Events are written in batches, so a build printing 100k lines a second costs a few writes a
second per subscriber, not 100k.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from ..bus import Frame
from ..errors import InvalidInput
from .keys import BUS, REGISTRY

HEARTBEAT_S = 15.0


def _after_seq(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"Last-Event-ID must be an event's seq, not {raw!r}") from None
    if value < 0:
        raise InvalidInput("Last-Event-ID must not be negative")
    return value


async def stream_job(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY]
    job_id = request.match_info["job_id"]
    await registry.get(job_id)  # 404 before the stream starts
    after = _after_seq(request)

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    events = request.app[BUS].subscribe(job_id, after)
    pending: asyncio.Future[list[Frame]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
            if not done:
                await response.write(b": keep-alive\n\n")
                continue
            try:
                batch = pending.result()
            except StopAsyncIteration:
                break
            pending = None
            await response.write(b"".join(frame.data for frame in batch))
        record = await registry.get(job_id)
        if record.status.terminal:
            end = {
                "job_id": job_id,
                "status": record.status.value,
                "reason": record.reason,
                "exit_code": record.exit_code,
            }
            await response.write(
                f"event: end\ndata: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode()
            )
    except ConnectionError:
        pass  # the client went away; nothing to clean up but our subscription
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()
    return response
