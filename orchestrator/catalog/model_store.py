"""The model store: model files fetched over HTTP(S), resumable, verified, and cancellable.

Layout under ``root``: ``<name>`` is a finished model, ``<name>.json`` its metadata sidecar, and
``.partial/<name>.part`` an unfinished download. A model appears only by ``os.replace`` of a
complete, verified partial, so readers never see half a file and a failed or cancelled download
leaves the previous version untouched. A failed (not cancelled) download keeps its partial so a
later job resumes it with a ``Range`` request. Two downloads of one name would interleave their
bytes in one partial: the registry runs one job per model name (its subject) at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ..errors import InvalidInput
from ..jobs import JobResult, Sink, cancel_result
from ..jobs.cancel import CancelReason, CancelToken
from ..jobs.status import JobStatus
from ..narration.events import Action, Event, Level
from ..timeouts import (
    MODEL_CONNECT_TIMEOUT_S,
    MODEL_DOWNLOAD_ATTEMPTS,
    MODEL_PROGRESS_INTERVAL_S,
    MODEL_READ_TIMEOUT_S,
    MODEL_RETRY_FIRST_WAIT_S,
    MODEL_RETRY_MAX_WAIT_S,
)

MiB = 1024 * 1024
CHUNK = MiB
PARTIAL_DIR = ".partial"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")
_RETRYABLE = (
    aiohttp.ClientPayloadError,
    aiohttp.ClientConnectionError,  # includes ServerDisconnectedError
    ConnectionError,
    TimeoutError,  # is asyncio.TimeoutError since 3.11
)

NOUN = "Download"  # how the endings name a download

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    path: Path
    size_bytes: int
    sha256: str
    downloaded_at: float  # unix seconds
    url: str

    def to_dict(self) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.downloaded_at, UTC).isoformat()
        return {
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "downloaded_at": when.replace("+00:00", "Z"),
            "url": self.url,
        }


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def check_name(name: str) -> str:
        if not _valid_name(name) or name.endswith(".json"):
            raise InvalidInput(
                f"invalid model name {name!r}: use 1-128 of [A-Za-z0-9._-], not ending in .json"
            )
        return name

    def list(self) -> list[ModelInfo]:
        if not self.root.is_dir():
            return []
        found = (self.get(p.stem) for p in self.root.glob("*.json") if _valid_name(p.stem))
        return sorted((info for info in found if info is not None), key=lambda i: i.name)

    def get(self, name: str) -> ModelInfo | None:
        path = self.root / self.check_name(name)
        try:
            data = json.loads((self.root / f"{name}.json").read_text())
            when = datetime.fromisoformat(data["downloaded_at"].replace("Z", "+00:00"))
            size, digest, url = int(data["size_bytes"]), str(data["sha256"]), str(data["url"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # absent, or a sidecar we cannot read: not a usable model
        if not path.is_file():
            return None
        return ModelInfo(name, path, size, digest, when.timestamp(), url)

    def remove(self, name: str) -> bool:
        removed = False
        for path in (self.root / self.check_name(name), self.root / f"{name}.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed = True
        return removed

    async def download(
        self,
        url: str,
        name: str,
        sha256: str | None,
        sink: Sink,
        cancel: CancelToken,
        *,
        session: aiohttp.ClientSession | None = None,
        progress_interval_s: float = MODEL_PROGRESS_INTERVAL_S,
        max_attempts: int = MODEL_DOWNLOAD_ATTEMPTS,
    ) -> JobResult:
        self.check_name(name)
        expected = sha256.lower() if sha256 else None
        if expected is not None and not _SHA256.fullmatch(expected):
            raise InvalidInput(f"invalid sha256 {sha256!r}: expected 64 hex digits")
        if not url.lower().startswith(("http://", "https://")):
            raise InvalidInput(f"invalid model URL {url!r}: only http and https are supported")
        own = session is None
        if session is None:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=MODEL_CONNECT_TIMEOUT_S, sock_read=MODEL_READ_TIMEOUT_S
            )
            session = aiohttp.ClientSession(timeout=timeout)
        try:
            job = _Download(self.root, url, name, expected, sink, cancel, session)
            job.interval = progress_interval_s
            return await job.run(max_attempts)
        finally:
            if own:
                await session.close()


class _Cancelled(Exception):
    """The token fired while we were waiting on the network."""


class _Retry(Exception):
    """A failure worth another attempt from the current size (5xx, short body)."""


class _Fatal(Exception):
    """A failure that another attempt would repeat (4xx)."""


class _Download:
    """One download job's state: the partial's size and running hash survive retries."""

    def __init__(
        self,
        root: Path,
        url: str,
        name: str,
        expected: str | None,
        sink: Sink,
        cancel: CancelToken,
        session: aiohttp.ClientSession,
    ) -> None:
        self.root, self.url, self.name, self.expected = root, url, name, expected
        self.sink, self.cancel, self.session = sink, cancel, session
        self.partial = root / PARTIAL_DIR / f"{name}.part"
        self.hasher = hashlib.sha256()
        self.size = 0
        self.total: int | None = None
        self.started = time.monotonic()
        self.start_size = 0
        self.last_progress = self.started
        self.interval = MODEL_PROGRESS_INTERVAL_S
        self._mark = 0  # the size when the current attempt began
        self._failures = 0  # failed attempts in a row
        self._waiter: asyncio.Future[CancelReason] | None = None

    async def run(self, max_attempts: int) -> JobResult:
        self._waiter = asyncio.ensure_future(self.cancel.wait())
        try:
            return await self._run(max_attempts)
        except _Cancelled:
            self.partial.unlink(missing_ok=True)  # a cancelled download leaves nothing behind
            self.partial.with_suffix(".url").unlink(missing_ok=True)
            return cancel_result(self.cancel, NOUN)
        finally:
            self._waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waiter

    async def _run(self, max_attempts: int) -> JobResult:
        if self.cancel.cancelled:
            raise _Cancelled
        await self._emit(Action.PHASE, f"Downloading {self.url} → {self.name}")
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        # A partial is resumed only from the URL that began it: bytes of another file must
        # never be joined to these.
        origin = self.partial.with_suffix(".url")
        if not origin.is_file() or origin.read_text() != self.url:
            self.partial.unlink(missing_ok=True)
        origin.write_text(self.url)
        if self.partial.is_file() and self.partial.stat().st_size > 0:
            self.size = await self._race(
                asyncio.to_thread(_hash_into, self.partial, self.hasher.update, self._stopped)
            )
            await self._emit(Action.PHASE, f"Resuming at {self.size} bytes")
        self.start_size = self.size
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((_Retry, *_RETRYABLE)),
            after=self._count_in_a_row,
            wait=wait_exponential(multiplier=MODEL_RETRY_FIRST_WAIT_S, max=MODEL_RETRY_MAX_WAIT_S),
            stop=stop_after_attempt(max_attempts),
            before_sleep=self._resuming,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            await retrying(self._fetch)
        except (_Retry, *_RETRYABLE) as exc:  # escapes only once the attempts ran out
            return self._failed(
                f"{_problem(exc)}; gave up after {self._failures} attempts in a row"
            )
        except (_Fatal, aiohttp.ClientError, OSError) as exc:
            return self._failed(_problem(exc))
        await self._progress(force=True)
        await self._emit(Action.PHASE, "Verifying sha256")
        digest = self.hasher.hexdigest()
        if self.expected is not None and digest != self.expected:
            self.partial.unlink(missing_ok=True)  # bad bytes must not be resumed later
            self.partial.with_suffix(".url").unlink(missing_ok=True)
            return JobResult(
                JobStatus.FAILED, f"sha256 mismatch: expected {self.expected}, got {digest}"
            )
        final = self.root / self.name
        os.replace(self.partial, final)
        self.partial.with_suffix(".url").unlink(missing_ok=True)
        info = ModelInfo(self.name, final, self.size, digest, time.time(), self.url)
        tmp = self.partial.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info.to_dict(), indent=2))
        os.replace(tmp, self.root / f"{self.name}.json")
        return JobResult(
            JobStatus.SUCCEEDED,
            f"downloaded {self.name} ({self.size} bytes, sha256 {digest[:12]}…)",
            0,
            (final,),
        )

    async def _fetch(self) -> None:
        """One attempt as tenacity counts them: requests until the partial is complete. A start
        over that the server forces is not a failure, so it stays inside the attempt."""
        self._mark = self.size
        while not await self._attempt():
            self._mark = self.size

    def _count_in_a_row(self, state: RetryCallState) -> None:
        """tenacity's ``after`` hook: an attempt that added bytes resets the count, so the stop and
        the backoff (both read ``attempt_number``) see only failures in a row."""
        if self.size > self._mark:
            state.attempt_number = 1
        self._failures = state.attempt_number

    async def _resuming(self, state: RetryCallState) -> None:
        assert state.outcome is not None
        problem = _problem(state.outcome.exception())
        lost = (
            f"connection lost at {self.size} bytes; resuming (attempt {state.attempt_number + 1})"
        )
        await self._emit(Action.PHASE, f"{lost}: {problem}", Level.WARNING)

    async def _sleep(self, seconds: float) -> None:
        await self._race(asyncio.sleep(seconds))  # a cancel does not wait out the backoff

    async def _attempt(self) -> bool:
        """One request; True when the partial is complete, False to start over at once."""
        headers = {"Range": f"bytes={self.size}-"} if self.size else {}
        response = await self._race(self.session.get(self.url, headers=headers))
        try:
            status = response.status
            start, total = _content_range(response.headers.get("Content-Range"))
            if status == 416 and self.size:
                if total == self.size:  # an earlier job already fetched every byte
                    self.total = total
                    return True
                await self._restart(f"server refused resume at {self.size} bytes")
                return False
            if status >= 500:
                raise _Retry(f"HTTP {status} {response.reason or ''}".rstrip())
            if status not in (200, 206):
                raise _Fatal(f"HTTP {status} {response.reason or ''} from {self.url}".rstrip())
            if status == 206 and start != self.size:
                await self._restart(f"server resumed at {start}, not {self.size}")
                return False
            if status == 200:
                if self.size:
                    await self._restart("server ignored the Range request")
                total = response.content_length
            self.total = total
            # 206 continues the partial; 200 is the whole body. Chunk writes are fast: inline.
            with self.partial.open("ab" if status == 206 else "wb") as out:
                while chunk := await self._race(response.content.read(CHUNK)):
                    out.write(chunk)
                    self.hasher.update(chunk)
                    self.size += len(chunk)
                    await self._progress()
            if total is not None and self.size < total:
                raise _Retry(f"body ended at {self.size} of {total} bytes")
            return True
        finally:
            response.close()

    async def _restart(self, why: str) -> None:
        self.partial.write_bytes(b"")
        self.hasher, self.size, self.start_size = hashlib.sha256(), 0, 0
        await self._emit(Action.PHASE, f"{why}; starting over", Level.WARNING)

    async def _race(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the token fires first, so a cancel never waits for a chunk."""
        assert self._waiter is not None
        task = asyncio.ensure_future(aw)
        try:
            await asyncio.wait((task, self._waiter), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            raise _Cancelled
        finally:
            if not task.done():  # cancelled by the token, or the caller itself was cancelled
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _stopped(self) -> bool:
        return self.cancel.cancelled

    def _failed(self, problem: str) -> JobResult:
        kept = self.partial.stat().st_size if self.partial.is_file() else 0
        if kept:
            problem += (
                f"; the partial download ({kept} bytes) is kept and a later download resumes it"
            )
        return JobResult(JobStatus.FAILED, problem)

    async def _progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_progress < self.interval:
            return
        self.last_progress = now
        rate = (self.size - self.start_size) / MiB / max(now - self.started, 1e-6)
        done = f"{self.size / MiB:.1f} MiB"
        if self.total:
            done += f" / {self.total / MiB:.1f} MiB ({self.size * 100 // self.total}%)"
        await self._emit(Action.PROGRESS, f"{done} at {rate:.1f} MiB/s")

    async def _emit(self, action: Action, message: str, level: Level = Level.INFO) -> None:
        await self.sink([Event(action, message, level)])


def _problem(exc: BaseException | None) -> str:
    return str(exc) or type(exc).__name__


def _valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and not name.startswith(".") and ".." not in name


def _hash_into(path: Path, update: Callable[[bytes], None], stopped: Callable[[], bool]) -> int:
    """Feed an existing partial to the hash (in a thread); returns its size."""
    size = 0
    with path.open("rb") as f:
        while (chunk := f.read(CHUNK)) and not stopped():
            update(chunk)
            size += len(chunk)
    return size


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``bytes 5-9/10`` → (5, 10); ``bytes */10`` → (None, 10); unknown parts are None."""
    match = _CONTENT_RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)
