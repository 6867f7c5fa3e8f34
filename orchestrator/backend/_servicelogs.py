"""A swarm service's output, read from the manager's service logs API with no line lost or doubled.

Measured on Docker Engine 20.10: a ``follow`` read of a task that prints 200 000 lines and exits
delivers about two thirds of them and never ends; the same read without ``follow``, once the task
has ended, returns every line. So the live read serves narration while the task runs (and is
opened again whenever it ends early), and once the task has ended a read without ``follow``
supplies the rest. Every read starts again from the first line; each message carries the log's
own timestamp (``timestamps=1``), and a read emits only what comes after the last message already
emitted on its stream: a later timestamp, or the same one past as many messages as were emitted
with it. So reads may overlap freely.

The API frames messages as attach does (stdout and stderr kept apart); the timestamps are cut
off and the rest goes through ``LineSplitter`` like every engine's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import BackendError, ContainerGone
from ..timeouts import (
    OUTPUT_CLOSE_TIMEOUT_S,
    SERVICE_LOGS_CHECK_S,
    SERVICE_LOGS_MAX_QUIET_S,
    SERVICE_LOGS_QUIET_S,
    SERVICE_LOGS_RETRY_S,
)
from . import OutputChunk, Stream
from ._attach import frames
from ._daemon import close_response
from ._pile import ChunkPile
from .lines import LineSplitter


def timestamp_key(raw: bytes) -> bytes:
    """An RFC 3339 timestamp as Docker writes it (``2026-11-30T16:39:55.5194743Z``: trailing
    zeros of the fraction dropped) → bytes that sort in time order."""
    seconds, _, fraction = raw.rstrip(b"Z").partition(b".")
    return seconds + fraction.ljust(9, b"0")


class Deduplicator:
    """Which messages of a read are new, for reads that each start from the first message."""

    def __init__(self) -> None:
        self._last: dict[Stream, bytes] = {"stdout": b"", "stderr": b""}
        self._at_last: dict[Stream, int] = {"stdout": 0, "stderr": 0}
        self._skip: dict[Stream, int] = {"stdout": 0, "stderr": 0}

    def begin_read(self) -> None:
        self._skip = dict(self._at_last)

    def accept(self, stream: Stream, key: bytes) -> bool:
        last = self._last[stream]
        if key < last:
            return False
        if key == last:
            if self._skip[stream] > 0:
                self._skip[stream] -= 1
                return False
            self._at_last[stream] += 1
            return True
        self._last[stream], self._at_last[stream], self._skip[stream] = key, 1, 0
        return True


class ServiceOutput:
    """The ``OutputStream`` of one service: live reads until ``ended`` resolves, then a full one."""

    def __init__(
        self,
        open_read: Callable[[bool], Any],
        pool: ThreadPoolExecutor,
        ended: Awaitable[object],
        running: threading.Event,
        take: Callable[[list[OutputChunk]], list[OutputChunk]] | None = None,
    ) -> None:
        self._open_read = open_read  # follow → a streaming requests.Response
        # What of each run of new lines is handed on: all, or (an adopted step's) what an
        # earlier reader did not have yet. Called in order, under the splitter's lock.
        self._take = take
        self._pool = pool
        # A follow read opened before the service has a running task follows nothing and
        # never ends: the live read waits for this.
        self._running = running
        self._dedup = Deduplicator()
        self._splitter = LineSplitter()
        self._lock = threading.Lock()  # one read feeds the splitter (and the pile) at a time
        self._loop = asyncio.get_running_loop()
        self._pile = ChunkPile(self._loop)
        self._stop_live = threading.Event()
        self._live_response: Any = None
        self._received = 0  # blocks any read got: the live read is not stuck
        self._quiet_since = time.monotonic()
        self._task = asyncio.ensure_future(self._run(ended))

    async def _nudge(self) -> None:
        """Open the live read again when it has been quiet for a while: under load, a follow
        read opened as the task starts was seen to deliver nothing at all (and a read again
        costs only what deduplication drops). The pause doubles while it stays quiet."""
        quiet_s, seen = SERVICE_LOGS_QUIET_S, self._received
        while True:
            await asyncio.sleep(SERVICE_LOGS_CHECK_S)
            if self._received != seen:
                quiet_s, seen = SERVICE_LOGS_QUIET_S, self._received
                self._quiet_since = time.monotonic()
            elif time.monotonic() - self._quiet_since > quiet_s:
                close_response(self._live_response)
                self._quiet_since = time.monotonic()
                quiet_s = min(2 * quiet_s, SERVICE_LOGS_MAX_QUIET_S)

    async def _run(self, ended: Awaitable[object]) -> None:
        live = self._loop.run_in_executor(self._pool, self._live)
        nudge = asyncio.ensure_future(self._nudge())
        try:
            await ended
        except asyncio.CancelledError:
            self._pile.finish()
            raise
        except Exception:  # how the step ended is ``wait``'s to say; its output is still read
            pass
        finally:
            nudge.cancel()
            self._stop_live.set()
            close_response(self._live_response)
            await asyncio.wait({live})
        error: BaseException | None = None
        try:
            with contextlib.suppress(ContainerGone):  # removed (cancelled): nothing more to read
                await self._loop.run_in_executor(self._pool, self._read, False)
            with self._lock:
                self._hand_on(self._splitter.finish())
        except BaseException as exc:
            error = BackendError(f"lost the build's output: {exc}")
        finally:
            self._pile.finish(error)

    def _live(self) -> None:
        while not self._running.wait(SERVICE_LOGS_RETRY_S / 5):
            if self._stop_live.is_set():
                return
        while not self._stop_live.is_set():
            # Best effort: the full read at the end completes whatever this one misses.
            with contextlib.suppress(Exception):
                self._read(True)
            self._stop_live.wait(SERVICE_LOGS_RETRY_S)

    def _read(self, follow: bool) -> None:
        response = self._open_read(follow)
        if follow:
            self._live_response = response
            if self._stop_live.is_set():
                close_response(response)
                return
        try:
            with self._lock:
                self._dedup.begin_read()
            for batch in frames(self._counted(response.iter_content(None))):
                if follow and self._stop_live.is_set():
                    return
                with self._lock:
                    self._hand_on(self._splitter.feed(self._new(batch), time.time()))
        finally:
            close_response(response)

    def _counted(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        for block in blocks:
            self._received += 1
            yield block

    def _new(self, batch: list[tuple[Stream, bytes]]) -> list[tuple[Stream, bytes]]:
        runs: list[tuple[Stream, bytes]] = []
        accept = self._dedup.accept
        for stream, message in batch:
            stamp, _, text = message.partition(b" ")
            if accept(stream, timestamp_key(stamp)):
                if runs and runs[-1][0] == stream:
                    runs[-1] = (stream, runs[-1][1] + text)
                else:
                    runs.append((stream, text))
        return runs

    def _hand_on(self, chunks: list[OutputChunk]) -> None:
        # Under ``_lock``: the order the splitter made them in is the order they are piled.
        if chunks and self._take is not None:
            chunks = self._take(chunks)
        self._pile.put(chunks)

    def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        return self._pile.__aiter__()

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
        self._pile.close()
        self._stop_live.set()
        close_response(self._live_response)
        await asyncio.wait({self._task}, timeout=OUTPUT_CLOSE_TIMEOUT_S)
