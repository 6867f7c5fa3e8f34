"""Docker's reattach (``_adopt.LogOutput``) without a daemon: reads from the log's first line
skip what was read before, and a follow read that ends early is completed after the exit."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from orchestrator.backend import OutputChunk, Step
from orchestrator.backend._adopt import LogOutput, found_step, parse_time
from orchestrator.backend._dockerspec import create_kwargs
from orchestrator.errors import BackendError

STDOUT, STDERR = 1, 2


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


class Response:
    """What ``open_logs`` returns, as far as the reader uses it: blocks of the log."""

    def __init__(self, data: bytes, block: int = 7) -> None:
        self._blocks = [data[i : i + block] for i in range(0, len(data), block)]

    def iter_content(self, _: None) -> Iterator[bytes]:
        yield from self._blocks

    def close(self) -> None:
        return None


LOG = b"".join(
    frame(STDERR, f"err {i}\n".encode()) if i % 4 == 0 else frame(STDOUT, f"line {i}\n".encode())
    for i in range(1, 41)
) + frame(STDOUT, b"no newline at the end")


async def read_all(output: LogOutput) -> list[OutputChunk]:
    chunks: list[OutputChunk] = []
    async for batch in output:
        chunks += batch
    await output.aclose()
    return chunks


def lines(chunks: list[OutputChunk], stream: str) -> list[str]:
    return [line for c in chunks if c.stream == stream for line in c.text.split("\n")]


async def test_a_follow_read_that_ends_early_is_completed_once_after_the_exit() -> None:
    reads: list[bool] = []
    polls = iter([True, False])  # still running once the follow read ended, then exited

    def open_read(follow: bool) -> Response:
        reads.append(follow)
        return Response(LOG[: len(LOG) // 2] if follow else LOG)  # the follow read stops early

    async def running() -> bool:
        return next(polls)

    with ThreadPoolExecutor(2) as pool:
        skip = {"stdout": 5, "stderr": 1}  # what an earlier reader stored
        chunks = await read_all(LogOutput(open_read, running, pool, skip, follow=True))
    assert reads == [True, False]
    out = [*[f"line {i}" for i in range(1, 41) if i % 4][5:], "no newline at the end"]
    assert lines(chunks, "stdout") == out
    assert lines(chunks, "stderr") == [f"err {i}" for i in range(8, 41, 4)]


async def test_a_read_without_follow_hands_on_what_the_log_holds_past_the_skip() -> None:
    async def running() -> bool:
        raise AssertionError("a read without follow does not wait for the exit")

    with ThreadPoolExecutor(2) as pool:
        output = LogOutput(lambda _: Response(LOG), running, pool, {"stdout": 29}, follow=False)
        chunks = await read_all(output)
    assert lines(chunks, "stdout") == ["line 39", "no newline at the end"]
    assert len(lines(chunks, "stderr")) == 10


async def test_a_log_shorter_than_what_was_read_is_an_error_not_a_guess() -> None:
    async def running() -> bool:
        return False

    with ThreadPoolExecutor(2) as pool:
        output = LogOutput(lambda _: Response(LOG), running, pool, {"stdout": 99}, follow=False)
        with pytest.raises(BackendError, match="no longer holds the start"):
            await read_all(output)


def test_an_inspection_says_the_state_and_the_real_start() -> None:
    info = {
        "Id": "abc",
        "Config": {"Labels": {"orchestrator.job": "j"}, "Image": "orchestrator/build:cpu"},
        "State": {
            "Status": "exited",
            "ExitCode": 4,
            "OOMKilled": False,
            "StartedAt": "2026-12-06T21:00:00.5Z",
        },
    }
    step = found_step(info)
    assert (step.state, step.exit and step.exit.code, step.image) == (
        "exited",
        4,
        "orchestrator/build:cpu",
    )
    assert step.started_at == parse_time("2026-12-06T21:00:00.500000000Z")
    assert step.started_at is not None and step.started_at % 1 == 0.5
    assert parse_time("0001-01-01T00:00:00Z") is None


def test_a_build_container_never_removes_itself() -> None:
    # It holds its exit code, log and packages for whichever service collects them.
    step = Step(image="orchestrator/build:cpu", command=("makepkg",), labels={})
    assert create_kwargs(step)["auto_remove"] is False
    assert create_kwargs(replace(step, tied=True))["auto_remove"] is True  # a reader only
