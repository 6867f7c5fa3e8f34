"""GET /v1/jobs/{job_id}/stream: the job's narration as Server-Sent Events.

Replay first (everything after ``Last-Event-ID``), then live; each event's ``id`` is its ``seq``.
When the job has ended: ``event: end`` with the final status, then ``data: [DONE]``, then close.
Events are written in batches, so a build printing 100k lines a second costs a few writes a
second per subscriber, not 100k.

A client that stops reading must not cost the service memory. Each connection holds one batch
from the bus (``BATCH_MAX_BYTES``, or one bigger event) and at most ``2 * WRITE_PIECE_BYTES`` in
its write buffer: every write is one piece, drained before the next (what is in flight beyond
that sits in the kernel's socket buffers). A connection that takes nothing for
``stream_stall_timeout_s`` is dropped (reset); its client resumes with ``Last-Event-ID`` and
loses nothing (an event cut short by the drop was never complete, so it is sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import re
import socket
import struct
from collections.abc import Callable

from aiohttp import web

from ..errors import InvalidInput
from ..narration.bus import Frame
from ..narration.sse import HEARTBEAT, end_frame
from ..timeouts import STREAM_HEARTBEAT_S, STREAM_TRIM_AFTER_S
from .keys import BUS, REGISTRY, SETTINGS
from .wire import StreamEnd

log = logging.getLogger(__name__)

WRITE_PIECE_BYTES = 16 * 1024
_MAX_SEQ = 2**63 - 1  # SQLite's INTEGER
_DECIMAL = re.compile(r"[0-9]+")  # ASCII: int() also takes "+5", " 5", "5_0", other scripts


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only; elsewhere memory stays as it is
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()
_trim_due: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None


def _trim() -> None:
    global _trim_due
    _trim_due = None
    if _malloc_trim is not None:
        _malloc_trim(0)


def _give_memory_back_soon() -> None:
    """Return freed heap to the system a moment after a stream lost its client.

    Hundreds of stalled connections grow the heap by their buffers; once they are gone glibc
    keeps it all resident (measured: 234 MiB stayed 234 MiB; malloc_trim took it back to
    133 MiB in 13 ms). One trim covers every stream that ends within the same second.
    """
    global _trim_due
    loop = asyncio.get_running_loop()
    if _malloc_trim is None or (_trim_due is not None and _trim_due[0] is loop):
        return
    _trim_due = (loop, loop.call_later(STREAM_TRIM_AFTER_S, _trim))


class _Stalled(Exception):
    """The client took none of what was written for the whole stall timeout."""


def _after_seq(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    if _DECIMAL.fullmatch(raw) is None:
        raise InvalidInput(
            f"Last-Event-ID must be an event's seq (a decimal number), not {raw[:40]!r}"
        )
    # Counted before int(): a header of 5000 digits would make int() itself raise.
    if len(raw.lstrip("0")) > len(str(_MAX_SEQ)) or int(raw) > _MAX_SEQ:
        raise InvalidInput(f"Last-Event-ID must be at most {_MAX_SEQ}, not {raw[:40]}")
    return int(raw)


def _drop(request: web.Request) -> None:
    """Reset the connection: its buffers are freed now, in here and in the kernel."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # without it, abort() still drops our buffer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _send(
    request: web.Request, response: web.StreamResponse, data: bytes, timeout_s: float
) -> None:
    """Write ``data`` a piece at a time, each drained within ``timeout_s`` or ``_Stalled``."""
    view = memoryview(data)
    for start in range(0, len(view), WRITE_PIECE_BYTES):
        try:
            async with asyncio.timeout(timeout_s):
                await response.write(view[start : start + WRITE_PIECE_BYTES])
                await request.writer.drain()
        except TimeoutError:
            raise _Stalled from None


async def _open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    if request.transport is not None:
        # Pause (and so drain) as soon as a piece is not taken at once: the buffer holds at
        # most the piece being written and the one before it.
        request.transport.set_write_buffer_limits(high=WRITE_PIECE_BYTES)
    return response


async def _end(
    request: web.Request, response: web.StreamResponse, job_id: str, timeout_s: float
) -> None:
    """The end marker, if the job has ended, and the end of the response."""
    record = await request.app[REGISTRY].get(job_id)
    if record.status.terminal:
        end = StreamEnd(
            job_id=job_id, status=record.status, reason=record.reason, exit_code=record.exit_code
        )
        await _send(request, response, end_frame(end.model_dump(mode="json")), timeout_s)
    # aiohttp would otherwise end the response itself, waiting on the peer with no limit.
    try:
        async with asyncio.timeout(timeout_s):
            await response.write_eof()
    except TimeoutError:
        raise _Stalled from None


async def stream_job(request: web.Request) -> web.StreamResponse:
    stall_timeout_s = request.app[SETTINGS].stream_stall_timeout_s
    job_id = request.match_info["job_id"]
    await request.app[REGISTRY].get(job_id)  # 404 before the stream starts
    after = _after_seq(request)
    response = await _open_stream(request)
    events = request.app[BUS].subscribe(job_id, after)
    pending: asyncio.Future[list[Frame]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            # Not kept in a local: a finished task holds its result, the batch.
            if not (await asyncio.wait({pending}, timeout=STREAM_HEARTBEAT_S))[0]:
                await _send(request, response, HEARTBEAT, stall_timeout_s)
                continue
            try:
                batch = pending.result()
            except StopAsyncIteration:
                break
            pending = None
            data = b"".join(frame.data for frame in batch)
            del batch  # the bus keeps none either: only `data` is held while it drains
            await _send(request, response, data, stall_timeout_s)
            del data
        await _end(request, response, job_id, stall_timeout_s)
    except _Stalled:
        log.info(
            "dropped a stream of job %s: its client took nothing for %.0f s",
            job_id,
            stall_timeout_s,
        )
        _drop(request)
        _give_memory_back_soon()
    except ConnectionError:
        # The client went away; nothing to clean up but our subscription and its buffers.
        _give_memory_back_soon()
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()
    return response
