"""The attach reader on a real socket pair: whole lines in order, a clean end, a quick close."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.backend._attach import AttachOutput
from orchestrator.errors import BackendError


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


@pytest.fixture
async def pool() -> AsyncIterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=2)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


async def read_all(output: AttachOutput) -> list[tuple[str, str]]:
    return [
        (chunk.stream, line)
        async for batch in output
        for chunk in batch
        for line in chunk.text.split("\n")
    ]


@pytest.mark.parametrize("as_file", [False, True])  # docker-py: a socket, or a SocketIO (unix)
async def test_every_line_arrives_in_order_then_the_stream_ends(
    pool: ThreadPoolExecutor, as_file: bool
) -> None:
    ours, daemon = socket.socketpair()
    sock = ours.makefile("rb", buffering=0) if as_file else ours
    output = AttachOutput(sock, pool, asyncio.get_running_loop())
    expected = []
    with daemon:
        for i in range(5000):
            stream = 2 if i % 7 == 0 else 1
            daemon.sendall(frame(stream, f"line {i}\n".encode()))
            expected.append(("stderr" if stream == 2 else "stdout", f"line {i}"))
        daemon.sendall(frame(1, b"no newline at the end"))
    got = await asyncio.wait_for(read_all(output), 10)
    assert [g for g in got if g[0] == "stdout"] == [e for e in expected if e[0] == "stdout"] + [
        ("stdout", "no newline at the end")
    ]
    assert [g for g in got if g[0] == "stderr"] == [e for e in expected if e[0] == "stderr"]
    await output.aclose()
    assert ours.fileno() == -1  # the socket itself is closed, not only its wrapper


async def test_close_while_the_reader_waits_returns_at_once(pool: ThreadPoolExecutor) -> None:
    ours, daemon = socket.socketpair()
    with daemon:
        output = AttachOutput(ours.makefile("rb", buffering=0), pool, asyncio.get_running_loop())
        daemon.sendall(frame(1, b"started\n"))
        batches = aiter(output)
        first = await asyncio.wait_for(anext(batches), 5)
        assert first[0].text == "started"
        started = time.monotonic()
        await output.aclose()  # the reader thread is blocked in recv: this must wake it
        assert time.monotonic() - started < 2
        assert ours.fileno() == -1


async def test_a_stream_cut_inside_a_frame_is_an_error_not_a_silent_end(
    pool: ThreadPoolExecutor,
) -> None:
    ours, daemon = socket.socketpair()
    output = AttachOutput(ours, pool, asyncio.get_running_loop())
    with daemon:
        daemon.sendall(frame(1, b"whole\n") + frame(1, b"half of it")[:-3])
    with pytest.raises(BackendError, match="lost the build's output stream"):
        await asyncio.wait_for(read_all(output), 5)
    await output.aclose()
