"""The model store's downloads against a real local HTTP server: resume, verify, cancel, fail."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from orchestrator.catalog.model_store import ModelStore
from orchestrator.errors import InvalidInput
from orchestrator.jobs.cancel import CancelReason, CancelToken
from orchestrator.jobs.status import JobStatus
from orchestrator.narration.events import Action, Event, Level

from ..conftest import Recorder

MiB = 1024 * 1024
PAYLOAD = random.Random(1234).randbytes(4 * MiB)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME = "llama-7b.Q4_K_M.gguf"


@dataclass
class Origin:
    """The server's switches, and what it saw."""

    url: str = ""
    payload: bytes = PAYLOAD
    ranges: list[str | None] = field(default_factory=list)
    cut_after: int | None = None  # bytes of body sent before dropping the connection...
    cut_requests: int = 0  # ...on this many first requests
    delay_s: float = 0.0  # between 64 KiB pieces
    status: int | None = None  # answer every request with this status and no body
    ignore_range: bool = False


def is_progress(event: Event) -> bool:
    return event.action is Action.PROGRESS and event.message.endswith("MiB/s")


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    state = Origin()

    async def handle(request: web.Request) -> web.StreamResponse:
        requested = request.headers.get("Range")
        state.ranges.append(requested)
        if state.status is not None:
            return web.Response(status=state.status)
        payload, start = state.payload, 0
        if requested and not state.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-", requested)
            assert match, requested
            start = int(match[1])
            if start >= len(payload):
                return web.Response(
                    status=416, headers={"Content-Range": f"bytes */{len(payload)}"}
                )
        partial = bool(requested) and not state.ignore_range
        response = web.StreamResponse(status=206 if partial else 200)
        response.content_length = len(payload) - start
        if partial:
            response.headers["Content-Range"] = f"bytes {start}-{len(payload) - 1}/{len(payload)}"
        await response.prepare(request)
        cut = state.cut_after if len(state.ranges) <= state.cut_requests else None
        for offset in range(start, len(payload), 64 * 1024):
            piece = payload[offset : offset + 64 * 1024]
            if cut is not None and offset - start + len(piece) > cut:
                await response.write(piece[: cut - (offset - start)])
                assert request.transport is not None
                request.transport.close()  # flushes what was written, then drops the connection
                return response
            await response.write(piece)
            if state.delay_s:
                await asyncio.sleep(state.delay_s)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/model.bin", handle)
    # Handlers are cancelled when the client goes away, so slow ones do not outlive a test.
    server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
    await server.start_server()
    state.url = str(server.make_url("/model.bin"))
    yield state
    await server.close()


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def partial_of(store: ModelStore, name: str = NAME) -> Path:
    return store.root / ".partial" / f"{name}.part"


def leave_origin(store: ModelStore, origin: Origin) -> None:
    """What an earlier job leaves beside its partial: the URL it came from."""
    partial_of(store).with_suffix(".url").write_text(origin.url)


async def test_full_download_verifies_and_records(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    result = await store.download(origin.url, NAME, SHA, recorder, CancelToken())

    final = store.root / NAME
    assert result.status is JobStatus.SUCCEEDED, result.reason
    assert result.artifacts == (final,) and result.exit_code == 0
    assert result.reason == f"downloaded {NAME} ({len(PAYLOAD)} bytes, sha256 {SHA[:12]}…)"
    assert final.read_bytes() == PAYLOAD
    assert not partial_of(store).exists()
    assert origin.ranges == [None]
    sidecar = json.loads((store.root / f"{NAME}.json").read_text())
    assert sidecar["sha256"] == SHA and sidecar["size_bytes"] == len(PAYLOAD)
    assert sidecar["downloaded_at"].endswith("Z") and sidecar["url"] == origin.url
    info = store.get(NAME)
    assert info is not None and info.path == final and info.sha256 == SHA
    assert abs(info.downloaded_at - time.time()) < 60
    assert store.list() == [info]
    lines = recorder.lines()
    assert lines[0] == f"Downloading {origin.url} → {NAME}"
    assert "Verifying sha256" in lines
    assert [e for e in recorder.events if is_progress(e)][-1].message.startswith(
        "4.0 MiB / 4.0 MiB (100%) at "
    )
    # The caller emits the terminal event from the result, not the download.
    assert not {Action.SUCCEEDED, Action.FAILED} & set(recorder.actions())


async def test_without_sha256_computes_it(store: ModelStore, origin: Origin) -> None:
    result = await store.download(origin.url, "m.bin", None, Recorder(), CancelToken())
    info = store.get("m.bin")
    assert result.status is JobStatus.SUCCEEDED and info is not None and info.sha256 == SHA


async def test_resumes_after_cut_connections(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    origin.cut_after, origin.cut_requests = 700_000, 2

    result = await store.download(origin.url, NAME, SHA, recorder, CancelToken())

    assert result.status is JobStatus.SUCCEEDED, result.reason
    assert (store.root / NAME).read_bytes() == PAYLOAD
    assert origin.ranges == [None, "bytes=700000-", "bytes=1400000-"]
    warnings = [e.message for e in recorder.events if e.level is Level.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("connection lost at 700000 bytes; resuming (attempt 2)")


async def test_resumes_a_partial_left_by_an_earlier_job(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    partial_of(store).parent.mkdir(parents=True)
    partial_of(store).write_bytes(PAYLOAD[:MiB])
    leave_origin(store, origin)

    result = await store.download(origin.url, NAME, SHA, recorder, CancelToken())

    assert result.status is JobStatus.SUCCEEDED, result.reason
    assert origin.ranges == ["bytes=1048576-"]
    assert (store.root / NAME).read_bytes() == PAYLOAD
    assert "Resuming at 1048576 bytes" in recorder.lines()


async def test_a_partial_from_another_url_is_not_resumed(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    partial_of(store).parent.mkdir(parents=True)
    partial_of(store).write_bytes(b"y" * MiB)
    partial_of(store).with_suffix(".url").write_text("http://elsewhere.invalid/other.bin")

    result = await store.download(origin.url, NAME, SHA, recorder, CancelToken())

    assert result.status is JobStatus.SUCCEEDED, result.reason
    assert origin.ranges == [None]  # started over: never joined to the other file's bytes
    assert (store.root / NAME).read_bytes() == PAYLOAD


async def test_a_complete_partial_needs_no_body(store: ModelStore, origin: Origin) -> None:
    partial_of(store).parent.mkdir(parents=True)
    partial_of(store).write_bytes(PAYLOAD)
    leave_origin(store, origin)

    result = await store.download(origin.url, NAME, SHA, Recorder(), CancelToken())

    assert result.status is JobStatus.SUCCEEDED, result.reason
    assert origin.ranges == [f"bytes={len(PAYLOAD)}-"]  # answered 416 with the total
    assert (store.root / NAME).read_bytes() == PAYLOAD


async def test_a_server_ignoring_range_starts_over(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    partial_of(store).parent.mkdir(parents=True)
    partial_of(store).write_bytes(b"x" * MiB)  # wrong bytes: only a fresh start can verify
    leave_origin(store, origin)
    origin.ignore_range = True

    result = await store.download(origin.url, NAME, SHA, recorder, CancelToken())

    assert result.status is JobStatus.SUCCEEDED, result.reason
    assert (store.root / NAME).read_bytes() == PAYLOAD
    assert any("starting over" in line for line in recorder.lines())


async def test_wrong_sha256_fails_and_leaves_nothing(store: ModelStore, origin: Origin) -> None:
    wrong = "0" * 64

    result = await store.download(origin.url, NAME, wrong, Recorder(), CancelToken())

    assert result.status is JobStatus.FAILED
    assert result.reason == f"sha256 mismatch: expected {wrong}, got {SHA}"
    assert not (store.root / NAME).exists() and not partial_of(store).exists()
    assert store.get(NAME) is None


async def test_cancel_stops_at_once_and_keeps_the_previous_model(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    first = await store.download(origin.url, NAME, None, Recorder(), CancelToken())
    assert first.status is JobStatus.SUCCEEDED
    previous = store.get(NAME)
    origin.payload, origin.delay_s = bytes(reversed(PAYLOAD)), 1.0  # a new version, slowly
    cancel = CancelToken()
    task = asyncio.create_task(
        store.download(origin.url, NAME, None, recorder, cancel, progress_interval_s=0)
    )
    await recorder.wait_for(is_progress, timeout_s=5)  # bytes are arriving
    assert partial_of(store).stat().st_size > 0

    cancel.cancel(CancelReason.USER)
    cancelled_at = time.monotonic()
    result = await asyncio.wait_for(task, 2)

    assert time.monotonic() - cancelled_at < 0.5  # not after the next 1 s chunk
    assert result.status is JobStatus.CANCELLED
    assert result.reason == "❌ Download cancelled by user"
    assert not partial_of(store).exists()
    assert (store.root / NAME).read_bytes() == PAYLOAD
    assert store.get(NAME) == previous


@pytest.mark.parametrize(
    ("reason", "status", "message"),
    [
        (CancelReason.TIMEOUT, JobStatus.TIMED_OUT, "⏱️ Download timed out"),
        (
            CancelReason.SHUTDOWN,
            JobStatus.INTERRUPTED,
            "⚠️ Download interrupted: the service is shutting down",
        ),
    ],
)
async def test_cancel_reasons_map_to_endings(
    store: ModelStore,
    origin: Origin,
    recorder: Recorder,
    reason: CancelReason,
    status: JobStatus,
    message: str,
) -> None:
    origin.delay_s = 1.0
    cancel = CancelToken()
    task = asyncio.create_task(
        store.download(origin.url, NAME, None, recorder, cancel, progress_interval_s=0)
    )
    await recorder.wait_for(is_progress, timeout_s=5)
    cancel.cancel(reason)

    result = await asyncio.wait_for(task, 2)

    assert (result.status, result.reason) == (status, message)
    assert not partial_of(store).exists() and not (store.root / NAME).exists()


async def test_an_already_cancelled_token_makes_no_request(
    store: ModelStore, origin: Origin
) -> None:
    cancel = CancelToken()
    cancel.cancel(CancelReason.USER)
    result = await store.download(origin.url, NAME, None, Recorder(), cancel)
    assert result.status is JobStatus.CANCELLED and origin.ranges == []


async def test_404_fails_immediately(store: ModelStore, origin: Origin) -> None:
    origin.status = 404

    result = await store.download(origin.url, NAME, None, Recorder(), CancelToken())

    assert result.status is JobStatus.FAILED and "404" in result.reason
    assert origin.ranges == [None]
    assert not (store.root / NAME).exists()


async def test_500_is_retried_then_fails_keeping_the_partial(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    partial_of(store).parent.mkdir(parents=True)
    partial_of(store).write_bytes(PAYLOAD[:MiB])
    leave_origin(store, origin)
    origin.status = 500

    result = await store.download(origin.url, NAME, SHA, recorder, CancelToken(), max_attempts=3)

    assert result.status is JobStatus.FAILED
    assert "500" in result.reason and "kept" in result.reason
    assert origin.ranges == ["bytes=1048576-"] * 3
    assert len([e for e in recorder.events if e.level is Level.WARNING]) == 2
    assert partial_of(store).read_bytes() == PAYLOAD[:MiB]
    assert not (store.root / NAME).exists()


async def test_backoff_doubles_between_failures_in_a_row(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    origin.status = 503
    started = time.monotonic()

    result = await store.download(origin.url, NAME, SHA, recorder, CancelToken(), max_attempts=4)

    assert result.status is JobStatus.FAILED
    assert result.reason.endswith("gave up after 4 attempts in a row")
    assert len(origin.ranges) == 4
    warned = [
        at
        for e, at in zip(recorder.events, recorder.arrived, strict=True)
        if e.level is Level.WARNING
    ]
    first, second = (b - a for a, b in itertools.pairwise(warned))
    assert 0.2 <= first < 0.4 <= second < 0.8  # the gaps also hold a request each
    assert 1.4 <= time.monotonic() - started < 3  # 0.2 + 0.4 + 0.8 s of backoff


async def test_an_attempt_that_adds_bytes_resets_the_count(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    origin.cut_after, origin.cut_requests = 700_000, 4  # more cuts than attempts allowed

    result = await store.download(origin.url, NAME, SHA, recorder, CancelToken(), max_attempts=2)

    assert result.status is JobStatus.SUCCEEDED, result.reason
    assert len(origin.ranges) == 5
    warnings = [e.message for e in recorder.events if e.level is Level.WARNING]
    assert len(warnings) == 4 and all("(attempt 2)" in w for w in warnings)


async def test_cancel_during_the_backoff_stops_at_once(
    store: ModelStore, origin: Origin, recorder: Recorder
) -> None:
    origin.status = 503
    cancel = CancelToken()
    task = asyncio.create_task(
        store.download(origin.url, NAME, SHA, recorder, cancel, max_attempts=10)
    )
    await recorder.wait_for(lambda e: "(attempt 5)" in e.message, timeout_s=5)  # 1.6 s backoff

    cancel.cancel(CancelReason.USER)
    cancelled_at = time.monotonic()
    result = await asyncio.wait_for(task, 2)

    assert time.monotonic() - cancelled_at < 0.5
    assert result.status is JobStatus.CANCELLED
    assert len(origin.ranges) == 4


async def test_progress_is_throttled(store: ModelStore, origin: Origin, recorder: Recorder) -> None:
    origin.delay_s = 0.03  # 64 pieces: about 2 s

    result = await store.download(
        origin.url, NAME, SHA, recorder, CancelToken(), progress_interval_s=0.2
    )

    assert result.status is JobStatus.SUCCEEDED, result.reason
    progress = [e for e in recorder.events if is_progress(e)]
    assert 3 <= len(progress) <= 15
    # The last one is forced at the end, so only the gaps before it are throttled.
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(progress[:-1])]
    assert all(gap >= 0.19 for gap in gaps)
    assert re.fullmatch(r"\d+\.\d MiB / 4\.0 MiB \(\d+%\) at \d+\.\d MiB/s", progress[0].message)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", ".hidden", "a/b", "", "a..b", "x" * 129])
def test_check_name_rejects_unsafe_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        ModelStore.check_name(name)


def test_check_name_accepts_a_model_file_name() -> None:
    assert ModelStore.check_name(NAME) == NAME


async def test_download_rejects_bad_input_before_any_request(
    store: ModelStore, origin: Origin
) -> None:
    with pytest.raises(InvalidInput):
        await store.download(origin.url, "../evil", None, Recorder(), CancelToken())
    with pytest.raises(InvalidInput):
        await store.download(origin.url, NAME, "abc", Recorder(), CancelToken())
    with pytest.raises(InvalidInput):
        await store.download("file:///etc/passwd", NAME, None, Recorder(), CancelToken())
    assert origin.ranges == []


async def test_remove(store: ModelStore, origin: Origin) -> None:
    await store.download(origin.url, NAME, SHA, Recorder(), CancelToken())

    assert store.remove(NAME) is True
    assert not (store.root / NAME).exists() and not (store.root / f"{NAME}.json").exists()
    assert store.get(NAME) is None and store.list() == []
    assert store.remove(NAME) is False
