"""Output chunks handed from the threads that read an engine to the one task that takes them:
the queue behind every engine's ``OutputStream`` (attach, a reattached log, service logs).

A reading thread adds to a pile and wakes the loop only when the pile goes from empty to not
empty, so a busy loop gets one big batch instead of a cross-thread call per read. That matters
beyond speed: every cross-thread call writes a byte to the loop's self-pipe, which is also where
signals arrive, and a few hundred of them while the loop is busy fill it, so that a SIGTERM then
is lost. A pile may be bounded: a full one makes the reader wait (and so the step, on its pipe).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from ..timeouts import OUTPUT_ROOM_POLL_S
from . import OutputChunk


class ChunkPile:
    """Chunks in the order they were put, taken as batches by ``async for``; then the end, or
    the error that ended the reading. ``put`` and ``finish`` may be called from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_bytes: int | None = None) -> None:
        self._loop = loop
        self._max_bytes = max_bytes
        self._lock = threading.Condition()
        self._chunks: list[OutputChunk] = []
        self._bytes = 0
        self._done = False  # nothing more comes (once ``_chunks`` is drained: the end)
        self._error: BaseException | None = None
        self._closed = threading.Event()
        self._wakeup = asyncio.Event()

    @property
    def closed(self) -> bool:
        """The taker has gone: readers should stop."""
        return self._closed.is_set()

    def put(self, chunks: list[OutputChunk]) -> bool:
        """Add ``chunks`` (waiting for room in a bounded pile); False once closed."""
        if not chunks:
            return not self._closed.is_set()
        with self._lock:
            while (
                self._max_bytes is not None
                and self._bytes >= self._max_bytes
                and not self._closed.is_set()
            ):
                self._lock.wait(timeout=OUTPUT_ROOM_POLL_S)
            if self._closed.is_set():
                return False
            was_empty = not self._chunks
            self._chunks.extend(chunks)
            self._bytes += sum(len(chunk.text) for chunk in chunks)
        if was_empty:
            self._signal()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        """Nothing more comes; with ``error``, the taker gets it after the last chunk."""
        with self._lock:
            if error is not None and self._error is None:
                self._error = error
            self._done = True
        self._signal()

    def close(self) -> None:
        """The taker has gone: a put waiting for room, and every later one, returns False."""
        self._closed.set()
        with self._lock:
            self._lock.notify_all()

    def _signal(self) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._wakeup.set()
            return
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._closed.set()

    async def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        while True:
            with self._lock:
                batch, self._chunks, self._bytes = self._chunks, [], 0
                done, error = self._done, self._error
                self._lock.notify_all()  # room again for a reader waiting in ``put``
            if batch:
                yield batch
                continue
            if done:
                if error is not None:
                    raise error
                return
            self._wakeup.clear()
            with self._lock:
                pending = bool(self._chunks) or self._done
            if not pending:
                await self._wakeup.wait()
