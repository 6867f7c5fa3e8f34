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
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import BackendError
from ..timeouts import OUTPUT_CLOSE_TIMEOUT_S
from . import OutputChunk, Stream
from ._daemon import shutdown_socket
from ._pile import ChunkPile
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
    """The attach socket as batches of chunks: a reader thread splits it into a bounded
    ``ChunkPile`` (a full one makes the reader wait, and so the container, on its pipe)."""

    def __init__(self, sock: Any, pool: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop):
        self._sock = sock
        self._pile = ChunkPile(loop, _MAX_BUFFERED_BYTES)
        self._reader = loop.run_in_executor(pool, self._read)

    def _read(self) -> None:
        splitter = LineSplitter()
        error: BaseException | None = None
        try:
            for runs in demux(_blocks(self._sock)):
                chunks = splitter.feed(runs, time.time())
                if chunks and not self._pile.put(chunks):
                    return
            self._pile.put(splitter.finish())
        except BaseException as exc:  # reported to the reader side, not lost in the pool
            if not self._pile.closed:
                error = BackendError(f"lost the build's output stream: {exc}")
        finally:
            _close(self._sock)
            self._pile.finish(error)

    def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        return self._pile.__aiter__()

    async def aclose(self) -> None:
        self._pile.close()  # a reader waiting for room sees it and stops
        shutdown_socket(self._sock)  # a read blocked in the thread returns at once
        await asyncio.wait({self._reader}, timeout=OUTPUT_CLOSE_TIMEOUT_S)


def _blocks(sock: Any) -> Iterator[bytes]:
    # docker-py hands back a socket.SocketIO for unix sockets and a socket for TCP/TLS.
    read: Callable[[int], bytes | None] = getattr(sock, "recv", None) or sock.read
    while block := read(_READ_BYTES):
        yield block


def _close(sock: Any) -> None:
    shutdown_socket(sock)
    # For unix sockets docker-py returns a SocketIO: closing it leaves the socket under it
    # open until the garbage collector breaks a cycle, one descriptor per build.
    for part in (sock, getattr(sock, "_sock", None)):
        if part is not None:
            with contextlib.suppress(OSError):
                part.close()
