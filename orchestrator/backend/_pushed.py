"""A swarm task's output as its wrapper pushes it (``_wrapper.py``) to the handoff listener,
completed from the service logs when the push did not carry all of it.

Per stream the listener holds the offset it has (bytes taken in order). A chunk is taken only
where it touches what is held: the part before the offset (a resend after a lost answer) is
dropped, a chunk past it (a gap) is refused with 409 and the offset, so no byte is told twice
and none is skipped; ``GET`` gives the offsets. Taken bytes go through ``LineSplitter`` and are
handed on at once; while more than ``_PILE_MAX_BYTES`` of text waits for the reader, the answer
waits too, and so does the task (its pusher is blocked, its pipe fills). The wrapper ends with
a report: the exit code, an OOM kill, the disk used and the bytes it read from each stream.

When the task has ended: if the report came from the task that pushed and its byte counts are
what arrived, the output is whole. Otherwise (no report, a count short, another task of the
service pushed, the pusher gave up) the rest comes from one read of the service logs, skipping
per stream the lines already handed on: the task's own streams got every byte too, in the same
order, and ``LineSplitter`` cuts them the same way. A hostile task may send a chunk of at most
``CHUNK_MAX_BYTES`` and ``STEP_MAX_BYTES`` in all; past that its narration ends with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from ..timeouts import PUSH_BODY_TIMEOUT_S
from . import OutputChunk, OutputStream, Stream
from ._adopt import line_count
from .lines import LineSplitter

log = logging.getLogger(__name__)

CHUNK_MAX_BYTES = 1 << 20  # the wrapper sends one pipe read (64 KiB) at a time
STEP_MAX_BYTES = 1 << 30  # a whole step's narration: far past any real build's
_PILE_MAX_BYTES = 8 << 20  # text waiting for the reader before the task is made to wait
_STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
RUN_HEADER = "X-Orchestrator-Run"


@dataclass(frozen=True, slots=True)
class Report:
    """What the wrapper says once its command and both pushers are done."""

    code: int
    oom_killed: bool
    disk_bytes: int | None
    sent: Mapping[Stream, int]  # bytes the pushers read from each stream (-1: unknown)


class Narration:
    """One step's pushed output: what the listener takes in, in order, per stream."""

    def __init__(self) -> None:
        self.offsets = dict.fromkeys(_STREAMS, 0)
        self.lines = dict.fromkeys(_STREAMS, 0)  # handed on, as ``LineSplitter`` cut them
        self.report: Report | None = None
        self.refused: str | None = None  # why pushes are turned away now (None: taken)
        self.cut = False  # over ``STEP_MAX_BYTES``
        self.ended = False  # the task has ended: nothing more is pushed
        self._run: str | None = None
        self._splitter = LineSplitter()
        self._chunks: list[OutputChunk] = []
        self._bytes = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()

    def same_run(self, run: str) -> bool:
        """Whether ``run`` is the task that pushed first (a task run again is not)."""
        if self._run is None:
            self._run = run
        if run != self._run:
            self.refuse("another task of the service pushed")
        return run == self._run

    def refuse(self, why: str) -> None:
        if self.refused is None:
            self.refused = why
        self._room.set()
        self._wakeup.set()

    def take(self, stream: Stream, offset: int, data: bytes) -> int:
        """Take ``data`` found at ``offset`` of ``stream``; the stream's offset after it.
        ``offset`` past what is held: nothing is taken (the caller answers with the offset)."""
        held = self.offsets[stream]
        if offset > held:
            return held
        new = data[held - offset :]
        if not new:
            return held
        if sum(self.offsets.values()) + len(new) > STEP_MAX_BYTES:
            self.cut = True
            self.refuse(f"the build printed more than {STEP_MAX_BYTES} bytes")
            return held
        self.offsets[stream] = held + len(new)
        chunks = self._splitter.feed([(stream, new)], time.time())
        for chunk in chunks:
            self.lines[chunk.stream] += line_count(chunk.text)
            self._bytes += len(chunk.text)
        if chunks:
            self._chunks.extend(chunks)
            self._wakeup.set()
        return self.offsets[stream]

    async def room(self) -> None:
        """Until the reader has taken what waits (or pushes are refused)."""
        while self._bytes > _PILE_MAX_BYTES and self.refused is None:
            self._room.clear()
            await self._room.wait()

    def end(self) -> None:
        self.ended = True
        self._wakeup.set()

    def whole(self) -> bool:
        """The push carried everything the task printed (known once it has ended)."""
        report = self.report
        return (
            self.refused is None
            and report is not None
            and all(report.sent.get(s) == self.offsets[s] for s in _STREAMS)
        )

    def finish(self) -> list[OutputChunk]:
        return self._splitter.finish()

    async def batches(self) -> AsyncIterator[list[OutputChunk]]:
        """What was pushed, batch by batch, until the task has ended."""
        while True:
            if self._chunks:
                batch, self._chunks, self._bytes = self._chunks, [], 0
                self._room.set()
                yield batch
                continue
            if self.ended:
                return
            self._wakeup.clear()
            if not self._chunks and not self.ended:
                await self._wakeup.wait()


class PushedOutput:
    """The ``OutputStream`` of a step that pushes: its narration, then what the service logs
    add (``complete``: an ``OutputStream`` of them less the lines given per stream)."""

    def __init__(
        self,
        narration: Narration,
        ended: Awaitable[object],
        complete: Callable[[Mapping[Stream, int]], Awaitable[OutputStream]],
        handle: str,
    ) -> None:
        self._narration = narration
        self._complete = complete
        self._handle = handle
        self._rest: OutputStream | None = None
        self._watch = asyncio.ensure_future(self._until(ended))

    async def _until(self, ended: Awaitable[object]) -> None:
        # How the step ended is ``wait``'s to say; here only that it did (or that its watch
        # was cancelled: destroyed, so nothing more comes either).
        try:
            with contextlib.suppress(Exception):
                await ended
        finally:
            self._narration.end()

    async def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        narration = self._narration
        async for batch in narration.batches():
            yield batch
        whole = narration.whole()
        narration.refuse("the step has ended")
        if whole:
            if tail := narration.finish():
                yield tail
            return
        if narration.cut:
            note = f"orchestrator: the build printed over {STEP_MAX_BYTES} bytes; not told further"
            yield [OutputChunk("stderr", note, time.time())]
            return
        log.info("step %s: output completed from the service logs", self._handle)
        self._rest = await self._complete(dict(narration.lines))
        async for batch in self._rest:
            yield batch

    async def aclose(self) -> None:
        self._watch.cancel()
        self._narration.refuse("the output was closed")
        if self._rest is not None:
            await self._rest.aclose()


def _offsets_text(narration: Narration) -> str:
    return "".join(f"{s} {narration.offsets[s]}\n" for s in _STREAMS)


def _stream(request: web.Request) -> Stream:
    for stream in _STREAMS:
        if stream == request.match_info["stream"]:
            return stream
    raise web.HTTPNotFound(text="no such stream\n")


def _number(request: web.Request, name: str, default: str | None = None) -> int:
    try:
        return int(request.query.get(name, default or ""))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: a whole number\n") from None


def get_offsets(narration: Narration) -> web.Response:
    """``GET .../output``: the offset held of each stream, one ``stream offset`` a line."""
    return web.Response(text=_offsets_text(narration))


async def put_output(request: web.Request, narration: Narration) -> web.Response:
    """``PUT .../output/{stream}?offset=N``: a chunk of the task's stream (see the module)."""
    stream = _stream(request)
    offset = _number(request, "offset")
    if offset < 0:
        raise web.HTTPBadRequest(text="offset: a whole number\n")
    if (request.content_length or 0) > CHUNK_MAX_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=CHUNK_MAX_BYTES, actual_size=request.content_length or 0
        )
    if not narration.same_run(request.headers.get(RUN_HEADER, "")) or narration.refused:
        raise web.HTTPGone(text=f"pushes are not taken: {narration.refused}\n")
    async with asyncio.timeout(PUSH_BODY_TIMEOUT_S):
        data = await request.read()  # at most the app's client_max_size: CHUNK_MAX_BYTES
    if narration.refused:  # ended or refused while the body came
        raise web.HTTPGone(text=f"pushes are not taken: {narration.refused}\n")
    if offset > narration.offsets[stream]:
        return web.Response(status=409, text=_offsets_text(narration))
    narration.take(stream, offset, data)
    if narration.cut:
        raise web.HTTPRequestEntityTooLarge(max_size=STEP_MAX_BYTES, actual_size=STEP_MAX_BYTES)
    await narration.room()
    return web.Response(text=_offsets_text(narration))


def put_report(request: web.Request, narration: Narration) -> web.Response:
    """``PUT .../report?exit=&oom=&disk_kib=&stdout=&stderr=``: how the task's command ended."""
    if not narration.same_run(request.headers.get(RUN_HEADER, "")):
        raise web.HTTPGone(text=f"reports are not taken: {narration.refused}\n")
    if narration.report is not None:
        raise web.HTTPConflict(text="already reported\n")
    disk_kib = _number(request, "disk_kib", "-1")
    narration.report = Report(
        code=_number(request, "exit"),
        oom_killed=_number(request, "oom", "0") != 0,
        disk_bytes=disk_kib * 1024 if disk_kib >= 0 else None,
        sent={s: _number(request, s, "-1") for s in _STREAMS},
    )
    return web.Response(status=201, text="ok\n")
