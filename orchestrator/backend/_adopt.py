"""Docker steps found again after a restart (``find``) and their output read back (``reattach``).

The output is read from the container's log, every read from its first line: the lines an
earlier reader already has are skipped by count, per stream (``skip``), and every line after
them is handed on once. Counting holds because the log holds the same bytes the attach gave and
``LineSplitter`` cuts them the same way whatever the reads' block boundaries. Docker 20.10's
``logs(follow=True)`` may end early when a container exits in a burst, so a follow read is
completed, once the container has exited, by a read without follow that skips everything
already handed on: no line is lost or doubled however the follow read ended.

The limit: a log that the json-file driver rotated (over ``build_log_max_bytes``) no longer
starts at the first line, so counting from its start would skip what was never read. The reader's
first line of each stream (``ends``) tells it apart: a rotated log is placed after the reader's
last line, or, past it, handed on whole with its loss said (``Skipper``, ``LogOutput.lost``). A
rotated log with no line of a stream the reader has cannot be placed: a read back says so
(``BackendError``) and the build is adopted without its output.
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
from .lines import LineSplitter, note_ends

_STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
# What a rotated log's stream may hold while its place is looked for: a follow read goes on
# past the log's cap, so a line never found would otherwise hold the build's whole output.
SEARCH_MAX_CHARS = 64 * 2**20


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
    """Drops what a reader already has of each stream from the chunks of one read: the first
    ``skip[stream]`` lines, counted from the log's first line. With ``ends`` (the first and
    last line the reader has of each stream) a log whose first line of a stream is not the
    reader's first lost its head to a rotation: counting from there would skip lines the
    reader never had, so what follows the reader's last line is handed on instead (its first
    place in the log); a log that no longer holds that line is handed on whole once read
    (``finish``), its stream in ``lost``."""

    def __init__(
        self,
        skip: Mapping[Stream, int],
        ends: Mapping[Stream, tuple[str, str]] | None = None,
        search_max_chars: int = SEARCH_MAX_CHARS,
    ) -> None:
        self._skip = {stream: max(0, skip.get(stream, 0)) for stream in _STREAMS}
        self._ends = {s: e for s, e in (ends or {}).items() if self._skip.get(s)}
        self._unchecked = set(self._ends)
        self._searching: dict[Stream, list[OutputChunk]] = {}  # what was read meanwhile
        self._search_left = dict.fromkeys(_STREAMS, search_max_chars)
        self.lost: set[Stream] = set()

    def take(self, chunks: list[OutputChunk]) -> list[OutputChunk]:
        out: list[OutputChunk] = []
        for chunk in chunks:
            stream = chunk.stream
            if stream in self._unchecked:
                self._unchecked.discard(stream)
                if chunk.text.split("\n", 1)[0] != self._ends[stream][0]:
                    self._skip[stream] = 0
                    self._searching[stream] = []
            if stream in self._searching:
                lines = chunk.text.split("\n")
                last = self._ends[stream][1]
                if last not in lines:
                    self._searching[stream].append(chunk)
                    self._search_left[stream] -= len(chunk.text)
                    if self._search_left[stream] < 0:
                        out += self._searching.pop(stream)  # not there: handed on, lost
                        self.lost.add(stream)
                    continue
                del self._searching[stream]
                if rest := lines[lines.index(last) + 1 :]:
                    out.append(replace(chunk, text="\n".join(rest)))
                continue
            left = self._skip[stream]
            if left == 0:
                out.append(chunk)
                continue
            count = line_count(chunk.text)
            if left >= count:
                self._skip[stream] = left - count
                continue
            self._skip[stream] = 0
            out.append(replace(chunk, text=chunk.text.split("\n", left)[left]))
        return out

    def finish(self) -> list[OutputChunk]:
        """At the end of a read: each rotated log that no longer held the reader's last line,
        whole (what was printed between that line and the log's first is lost)."""
        out = [chunk for held in self._searching.values() for chunk in held]
        self.lost.update(self._searching)
        self._searching.clear()
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
        ends: Mapping[Stream, tuple[str, str]] | None = None,
    ) -> None:
        self._open_read = open_read  # follow → a streaming requests.Response of the log
        self._running = running
        self._pool = pool
        self._base = {stream: skip.get(stream, 0) for stream in _STREAMS}
        self._emitted = dict.fromkeys(_STREAMS, 0)
        # The first and last line had of each stream, before this read and by it.
        self._ends = dict(ends or {})
        self._lost: set[Stream] = set()
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
        skipper = Skipper({s: self._base[s] + self._emitted[s] for s in _STREAMS}, self._ends)
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
            self._hand_on(skipper.take(splitter.finish()) + skipper.finish())
            self._lost |= skipper.lost
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
        note_ends(self._ends, chunks)
        self._pile.put(chunks)

    @property
    def lost(self) -> frozenset[Stream]:
        """The streams whose log was rotated past the last line had before (``Skipper``)."""
        return frozenset(self._lost)

    def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
        return self._pile.__aiter__()

    async def aclose(self) -> None:
        self._pile.close()
        close_response(self._response)
        if not self._task.done():
            self._task.cancel()
        await asyncio.wait({self._task}, timeout=OUTPUT_CLOSE_TIMEOUT_S)
