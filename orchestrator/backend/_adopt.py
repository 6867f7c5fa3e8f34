"""Docker steps found again after a restart (``find``) and their output read back (``reattach``).

The output is read from the container's log, every read from its first line: the lines an
earlier reader already has are skipped by count, per stream (``skip``), and every line after
them is handed on once. Counting holds because the log holds the same bytes the attach gave and
``LineSplitter`` cuts them the same way whatever the reads' block boundaries. Docker 20.10's
``logs(follow=True)`` may end early when a container exits in a burst, so a follow read is
completed, once the container has exited, by a read without follow that skips everything
already handed on: no line is lost or doubled however the follow read ended.

The limit: a log that the json-file driver rotated (over ``build_log_max_bytes``) no longer
starts at the first line, so counting from its start would skip what was never read. A read
back says so (``BackendError``) rather than guess, and the build is adopted without its output;
a follow read reads across a rotation, so the read after it only completes what it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..errors import BackendError, ContainerGone
from ..timeouts import ADOPT_EXIT_POLL_S, OUTPUT_CLOSE_TIMEOUT_S
from . import ExitStatus, FoundStep, OutputChunk, StepState, Stream
from ._attach import frames
from ._daemon import close_response
from ._pile import ChunkPile
from .lines import LineSplitter

_STREAMS: tuple[Stream, ...] = ("stdout", "stderr")


def found_step(info: Mapping[str, Any]) -> FoundStep:
    """A container's inspection → what adopting it needs."""
    state = info.get("State") or {}
    status = str(state.get("Status") or "")
    now: StepState
    if status in ("running", "paused", "restarting"):
        now = "running"
    elif status == "created":
        now = "created"
    else:  # exited, dead, removing
        now = "exited"
    ended = None
    if now == "exited":
        ended = ExitStatus(int(state.get("ExitCode", -1)), bool(state.get("OOMKilled")))
    config = info.get("Config") or {}
    return FoundStep(
        handle=str(info["Id"]),
        labels=dict(config.get("Labels") or {}),
        image=str(config.get("Image") or ""),
        state=now,
        started_at=parse_time(str(state.get("StartedAt") or "")),
        exit=ended,
    )


def open_logs(api: Any, handle: str, follow: bool) -> Any:
    """A streaming response of the container's log from its first line (docker-py's
    ``logs`` loses which stream each line came from)."""
    params = {"stdout": 1, "stderr": 1, "follow": int(follow)}
    response = api.get(f"{api.base_url}/containers/{handle}/logs", params=params, stream=True)
    if response.status_code == 404:
        response.close()
        raise ContainerGone(f"container {handle[:12]} is gone")
    response.raise_for_status()
    return response


def parse_time(raw: str) -> float | None:
    """Docker's RFC 3339 time (nanoseconds, ``Z``) → seconds; None for its zero time."""
    if not raw or raw.startswith("0001-"):
        return None
    seconds, _, fraction = raw.rstrip("Z").partition(".")
    try:
        stamp = datetime.fromisoformat(seconds + "+00:00").timestamp()
    except ValueError:
        return None
    digits = "".join(ch for ch in fraction if ch.isdigit())
    return stamp + (float("0." + digits) if digits else 0.0)


def line_count(text: str) -> int:
    return text.count("\n") + 1


class Skipper:
    """Drops the first ``skip[stream]`` lines of each stream from the chunks of one read."""

    def __init__(self, skip: Mapping[Stream, int]) -> None:
        self._skip = {stream: max(0, skip.get(stream, 0)) for stream in _STREAMS}

    def take(self, chunks: list[OutputChunk]) -> list[OutputChunk]:
        out: list[OutputChunk] = []
        for chunk in chunks:
            left = self._skip[chunk.stream]
            if left == 0:
                out.append(chunk)
                continue
            count = line_count(chunk.text)
            if left >= count:
                self._skip[chunk.stream] = left - count
                continue
            self._skip[chunk.stream] = 0
            out.append(replace(chunk, text=chunk.text.split("\n", left)[left]))
        return out

    @property
    def short(self) -> bool:
        """The read ended before it had as many lines as were to be skipped."""
        return any(self._skip.values())


class LogOutput:
    """A container's log as an ``OutputStream``, less what was read before (see the module)."""

    def __init__(
        self,
        open_read: Callable[[bool], Any],
        running: Callable[[], Awaitable[bool]],
        pool: ThreadPoolExecutor,
        skip: Mapping[Stream, int],
        *,
        follow: bool,
    ) -> None:
        self._open_read = open_read  # follow → a streaming requests.Response of the log
        self._running = running
        self._pool = pool
        self._base = {stream: skip.get(stream, 0) for stream in _STREAMS}
        self._emitted = dict.fromkeys(_STREAMS, 0)
        self._loop = asyncio.get_running_loop()
        self._pile = ChunkPile(self._loop)
        self._response: Any = None
        self._task = asyncio.ensure_future(self._run(follow))

    async def _run(self, follow: bool) -> None:
        error: BaseException | None = None
        try:
            if follow:
                # Best effort: the read after the exit completes whatever this one misses.
                with contextlib.suppress(BackendError, OSError, ValueError):
                    await self._loop.run_in_executor(self._pool, self._read, True)
                await self._until_exited()
            if not self._pile.closed:
                await self._loop.run_in_executor(self._pool, self._read, False, not follow)
        except ContainerGone as exc:
            error = exc
        except Exception as exc:
            error = BackendError(f"could not read the build's output back: {exc}")
        finally:
            self._pile.finish(error)

    async def _until_exited(self) -> None:
        # The follow read ends early at times (see the module): the final read waits for
        # the exit, which the engine's own wait would make a thread sit through.
        while True:
            if self._pile.closed or not await self._running():
                return
            await asyncio.sleep(ADOPT_EXIT_POLL_S)

    def _read(self, follow: bool, strict: bool = False) -> None:
        """One read from the log's first line, handing on what is past everything emitted.
        ``strict``: a log shorter than what was read before is an error (a read back); after
        a follow read it is a log rotated meanwhile, which the follow read has read across."""
        skipper = Skipper({s: self._base[s] + self._emitted[s] for s in _STREAMS})
        splitter = LineSplitter()
        response = self._open_read(follow)
        self._response = response
        try:
            for batch in frames(response.iter_content(None)):
                if self._pile.closed:
                    return
                self._hand_on(skipper.take(splitter.feed(batch, time.time())))
            if follow:
                return  # a partial last line may still grow: the final read takes it
            self._hand_on(skipper.take(splitter.finish()))
            if skipper.short and strict:
                raise BackendError(
                    "the engine no longer holds the start of the build's output (its log was "
                    "cut at build_log_max_bytes): the lines printed meanwhile cannot be placed"
                )
        finally:
            close_response(response)

    def _hand_on(self, chunks: list[OutputChunk]) -> None:
        for chunk in chunks:
            self._emitted[chunk.stream] += line_count(chunk.text)
        self._pile.put(chunks)

    def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        return self._pile.__aiter__()

    async def aclose(self) -> None:
        self._pile.close()
        close_response(self._response)
        if not self._task.done():
            self._task.cancel()
        await asyncio.wait({self._task}, timeout=OUTPUT_CLOSE_TIMEOUT_S)
