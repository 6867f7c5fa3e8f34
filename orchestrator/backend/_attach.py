"""A container's output, read from Docker's attach socket and handed to the loop as chunks.

Why not docker-py's ``attach(stream=True)``: it makes two ``poll`` + ``recv`` round trips per
frame and yields one frame at a time. A build that flushes every line sends one frame per line, so
that costs several microseconds a line before we have done anything with it. Here one thread reads
the socket in large blocks, splits Docker's multiplexed framing (an 8-byte header: stream id, three
zero bytes, big-endian payload size) in bulk, and cuts each stream at its last newline, so the work
per line is done by ``bytes`` methods in C, not by Python code (``lines.py``, shared by every
engine, cuts the lines).

Why attach at all: on Docker 20.10, ``logs(follow=True)`` stops early when a container exits in a
burst; an attach made before ``start`` sees every byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import BackendError
from . import OutputChunk, Stream
from .lines import LineSplitter

_MAX_BUFFERED_BYTES = 8 * 1024 * 1024  # then the reader waits, and so does the container
_READ_BYTES = 256 * 1024
_HEADER = struct.Struct(">BxxxL")
_STREAMS: dict[int, Stream] = {1: "stdout", 2: "stderr", 3: "stderr"}  # 3: the daemon's errors


def frames(blocks: Iterable[bytes]) -> Iterator[list[tuple[Stream, bytes]]]:
    """Raw bytes in Docker's framing → per block, the (stream, payload) frames complete in it,
    one by one (the service logs API: a frame is a line with its timestamp)."""
    buf = bytearray()
    for block in blocks:
        buf += block
        pos, end = 0, len(buf)
        out: list[tuple[Stream, bytes]] = []
        while end - pos >= _HEADER.size:
            kind, size = _HEADER.unpack_from(buf, pos)
            start = pos + _HEADER.size
            if end - start < size:
                break
            out.append((_STREAMS.get(kind, "stdout"), bytes(buf[start : start + size])))
            pos = start + size
        del buf[:pos]
        if out:
            yield out


def demux(blocks: Iterable[bytes]) -> Iterator[list[tuple[Stream, bytes]]]:
    """Raw attach bytes → runs of payload, consecutive frames of one stream joined together."""
    buf = bytearray()
    for block in blocks:
        buf += block
        pos, end = 0, len(buf)
        runs: list[tuple[Stream, bytes]] = []
        current: Stream | None = None
        parts: list[bytes] = []
        while end - pos >= _HEADER.size:
            kind, size = _HEADER.unpack_from(buf, pos)
            start = pos + _HEADER.size
            if end - start < size:
                break
            stream = _STREAMS.get(kind, "stdout")
            if stream != current:
                if parts:
                    runs.append((current, b"".join(parts)))  # type: ignore[arg-type]
                current, parts = stream, []
            parts.append(bytes(buf[start : start + size]))
            pos = start + size
        if parts:
            runs.append((current, b"".join(parts)))  # type: ignore[arg-type]
        del buf[:pos]
        if runs:
            yield runs
    if buf:
        raise BackendError(f"the attach stream ended inside a frame ({len(buf)} bytes left)")


class AttachOutput:
    """The attach socket as batches of chunks.

    The reader thread appends chunks to a buffer and wakes the loop only when the buffer goes
    from empty to not empty, so when the loop is busy the output piles up into one big batch
    instead of costing a cross-thread call per read. The buffer is bounded: a full one makes
    the reader wait, which in turn makes the container wait on its pipe.
    """

    def __init__(self, sock: Any, pool: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop):
        self._sock = sock
        self._loop = loop
        self._chunks: list[OutputChunk] = []
        self._bytes = 0
        self._done = False  # the stream ended (after _chunks is drained: the end)
        self._error: BaseException | None = None
        self._lock = threading.Condition()
        self._wakeup = asyncio.Event()
        self._closed = threading.Event()
        self._reader = loop.run_in_executor(pool, self._read)

    def _signal(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._closed.set()

    def _put(self, chunks: list[OutputChunk]) -> bool:
        with self._lock:
            while self._bytes >= _MAX_BUFFERED_BYTES and not self._closed.is_set():
                self._lock.wait(timeout=1.0)
            if self._closed.is_set():
                return False
            was_empty = not self._chunks
            self._chunks.extend(chunks)
            self._bytes += sum(len(chunk.text) for chunk in chunks)
        if was_empty:
            self._signal()
        return True

    def _read(self) -> None:
        splitter = LineSplitter()
        try:
            for runs in demux(_blocks(self._sock)):
                chunks = splitter.feed(runs, time.time())
                if chunks and not self._put(chunks):
                    return
            if tail := splitter.finish():
                self._put(tail)
        except BaseException as exc:  # reported to the reader side, not lost in the pool
            if not self._closed.is_set():
                self._error = BackendError(f"lost the build's output stream: {exc}")
        finally:
            _close(self._sock)
            with self._lock:
                self._done = True
            self._signal()

    async def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        while True:
            with self._lock:
                batch, self._chunks, self._bytes = self._chunks, [], 0
                done = self._done
                self._lock.notify_all()
            if batch:
                yield batch
                continue
            if done:
                if self._error is not None:
                    raise self._error
                return
            self._wakeup.clear()
            with self._lock:
                pending = bool(self._chunks) or self._done
            if not pending:
                await self._wakeup.wait()

    async def aclose(self) -> None:
        self._closed.set()
        _shutdown(self._sock)  # a read blocked in the thread returns at once
        with self._lock:
            self._lock.notify_all()  # a reader waiting for room sees the flag and stops
        await asyncio.wait({self._reader}, timeout=5)


def _blocks(sock: Any) -> Iterator[bytes]:
    # docker-py hands back a socket.SocketIO for unix sockets and a socket for TCP/TLS.
    read: Callable[[int], bytes | None] = getattr(sock, "recv", None) or sock.read
    while block := read(_READ_BYTES):
        yield block


def _shutdown(sock: Any) -> None:
    # shutdown() acts on the socket, not on the descriptor, so a duplicate reaches it; the
    # object docker-py returns does not always expose the socket itself.
    try:
        fd = os.dup(sock.fileno())
    except (OSError, ValueError):
        return
    try:
        dup = socket.socket(fileno=fd)
    except OSError:  # not a socket (docker-py's ssh transport): nothing to shut down here
        os.close(fd)
        return
    with dup, contextlib.suppress(OSError):
        dup.shutdown(socket.SHUT_RDWR)


def _close(sock: Any) -> None:
    _shutdown(sock)
    # For unix sockets docker-py returns a SocketIO: closing it leaves the socket under it
    # open until the garbage collector breaks a cycle, one descriptor per build.
    for part in (sock, getattr(sock, "_sock", None)):
        if part is not None:
            with contextlib.suppress(OSError):
                part.close()
