"""The SSE stream against bad resume points and clients that stop reading, over real HTTP.

The whole API runs on the fake backend (no daemon): a scripted build prints as much as a test
needs, and the stream is read (or not read) through real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import select
import socket
import sys
import tarfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientError, ClientSession, web
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.api.stream import WRITE_PIECE_BYTES
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.narration import sse
from orchestrator.narration.bus import BATCH_MAX_BYTES

from .. import waiting

PKGBUILD = b"pkgname=demo\npkgver=1.0\npkgrel=1\narch=('any')\npackage() {\n  true\n}\n"


def upload() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("PKGBUILD")
        info.size = len(PKGBUILD)
        tar.addfile(info, io.BytesIO(PKGBUILD))
    return out.getvalue()


async def submit(client: TestClient | ClientSession) -> str:
    response = await client.post(
        "/v1/builds", data=upload(), headers={"Content-Type": "application/x-tar"}
    )
    body = await response.json()
    assert response.status == 201, body
    return str(body["job_id"])


async def wait_ended(
    client: TestClient | ClientSession, job_id: str, timeout_s: float = 60
) -> dict[str, Any]:
    async def job() -> dict[str, Any]:
        return dict(await (await client.get(f"/v1/jobs/{job_id}")).json())

    return await waiting.until(
        job,
        lambda j: j["status"] not in ("queued", "running"),
        timeout_s=timeout_s,
        interval_s=0.05,
        what=f"job {job_id}'s end",
    )


def make_client(tmp_path: Path, script: Script, **settings: Any) -> TestClient:
    app = create_app(
        Settings(data_dir=tmp_path / "data", instance_id="unit", **settings),
        backend=FakeBackend(script),
    )
    return TestClient(TestServer(app, host="127.0.0.1"))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with make_client(tmp_path, Script([("stdout", "one line", 0)])) as client:
        yield client


# -- Last-Event-ID -------------------------------------------------------------------------------


BAD_LAST_EVENT_IDS = [
    "99999999999999999999999",  # past SQLite's 64-bit integers: was a 200 that never ended
    "9223372036854775808",  # 2**63, one past the largest
    "-1",
    "+5",
    " 5",
    "5 ",
    "5_000",
    "\u0665",  # ARABIC-INDIC DIGIT FIVE: int() takes it
    "0x10",
    "1e3",
    "abc",
]


@pytest.mark.parametrize(
    ("where", "value"),
    [("query", value) for value in BAD_LAST_EVENT_IDS]
    # A header value is ASCII, and HTTP trims its spaces on the way.
    + [
        ("header", value)
        for value in BAD_LAST_EVENT_IDS
        if value.isascii() and value.strip() == value
    ],
)
async def test_a_bad_last_event_id_is_a_400_before_the_stream_starts(
    client: TestClient, where: str, value: str
) -> None:
    job_id = await submit(client)
    await wait_ended(client, job_id)
    kwargs: dict[str, Any]
    if where == "header":
        kwargs = {"headers": {"Last-Event-ID": value}}
    else:
        kwargs = {"params": {"last_event_id": value}}
    response = await asyncio.wait_for(client.get(f"/v1/jobs/{job_id}/stream", **kwargs), 10)
    body = await asyncio.wait_for(response.text(), 10)
    assert response.status == 400, body
    assert response.content_type == "application/json"
    error = json.loads(body)
    assert error["error"] == "bad_request"
    assert "Last-Event-ID" in error["message"]


@pytest.mark.parametrize("value", ["", "0", "1", "007", "9223372036854775807"])  # "": the start
async def test_a_good_last_event_id_resumes_after_it(client: TestClient, value: str) -> None:
    job_id = await submit(client)
    job = await wait_ended(client, job_id)
    response = await client.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": value})
    body = await asyncio.wait_for(response.text(), 10)
    assert response.status == 200
    ids = [int(line[4:]) for line in body.split("\n") if line.startswith("id: ")]
    assert ids == list(range(int(value or 0) + 1, job["last_seq"] + 1))
    assert body.endswith("data: [DONE]\n\n")


# -- clients that stop reading -------------------------------------------------------------------

LINE_CHARS = 99
STEPS = 200  # of 300 lines each: about 6 MB of narration, far more than socket buffers hold


def busy_script(*, then_wait_s: float) -> Script:
    """A build that prints ~6 MB at once (numbered lines), then waits ``then_wait_s``."""
    steps: list[tuple[Any, str, float]] = [
        (
            "stdout",
            "\n".join(f"{n:09d} {'x' * (LINE_CHARS - 10)}" for n in range(s * 300, s * 300 + 300)),
            0,
        )
        for s in range(STEPS)
    ]
    steps.append(("stdout", "quiet now", then_wait_s))
    return Script(steps)


def numbered(events: list[dict[str, Any]]) -> list[int]:
    return [
        int(line[:9])
        for e in events
        if e["action"] == "output"
        for line in e["message"].split("\n")
        if len(line) == LINE_CHARS
    ]


class SseParser:
    """Complete events only: a dropped connection can cut the last one short."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.events: list[dict[str, Any]] = []
        self.done = False
        self._parser = sse.Parser()

    def feed(self, data: bytes) -> None:
        for message in self._parser.feed(data):
            if message.is_done:
                self.done = True
            elif not message.is_end:
                self.ids.append(int(message.id))
                self.events.append(message.json())


def parse_sse(body: bytes) -> SseParser:
    parser = SseParser()
    parser.feed(body)
    return parser


async def read_stream(client: TestClient | ClientSession, job_id: str, last_id: int = 0) -> bytes:
    headers = {"Last-Event-ID": str(last_id)} if last_id else {}
    response = await client.get(f"/v1/jobs/{job_id}/stream", headers=headers)
    assert response.status == 200
    return await asyncio.wait_for(response.read(), 60)


def chunked_body(raw: bytes) -> bytes:
    """The payload of a (possibly cut) chunked HTTP/1.1 response."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    out = bytearray()
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


class StalledClient:
    """Opens the stream and never reads: a tiny receive window, nothing taken out of it."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.port = self.sock.getsockname()[1]

    def __enter__(self) -> StalledClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()  # should a test fail: its server side must not outlive the test

    def dropped(self) -> bool:
        poller = select.poll()
        poller.register(self.sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))

    def read_what_came(self) -> bytes:
        """Everything that arrived before the drop (an RST may have discarded some)."""
        self.sock.setblocking(False)
        out = bytearray()
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(1 << 16):
                out += chunk
        return bytes(out)


async def open_stalled(
    stack: contextlib.ExitStack, port: int, job_id: str, count: int
) -> list[StalledClient]:
    stalled = []
    for n in range(count):
        stalled.append(stack.enter_context(StalledClient(port, f"/v1/jobs/{job_id}/stream")))
        if n % 32 == 31:
            # connect() blocks once the listen backlog is full, and the server that would
            # accept runs on this same loop.
            await asyncio.sleep(0.05)
    return stalled


class Transports:
    """The server side of each stream connection, by the client's port."""

    def __init__(self, app: web.Application) -> None:
        self.by_port: dict[int, asyncio.Transport] = {}
        app.on_response_prepare.append(self._prepared)

    async def _prepared(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.endswith("/stream") and request.transport is not None:
            self.by_port[request.transport.get_extra_info("peername")[1]] = request.transport


async def watch_stalled(
    transports: Transports, stalled: StalledClient, deadline_s: float
) -> tuple[float, int]:
    """Wait for the service to drop ``stalled``; the time it took and the most it buffered."""
    t0 = time.monotonic()
    most = 0

    def buffered() -> tuple[bool, int]:
        """Whether it is dropped, and the most buffered for it so far."""
        nonlocal most
        transport = transports.by_port.get(stalled.port)
        if transport is not None and not transport.is_closing():
            most = max(most, transport.get_write_buffer_size())
        return stalled.dropped(), most

    await waiting.until(
        buffered, lambda seen: seen[0], timeout_s=deadline_s, what="the stalled client dropped"
    )
    return time.monotonic() - t0, most


def stall_client(tmp_path: Path, script: Script) -> tuple[TestClient, Transports]:
    client = make_client(tmp_path, script, stream_stall_timeout_s=STALL_TIMEOUT_S)
    return client, Transports(client.server.app)


STALL_TIMEOUT_S = 1.0
DROP_DEADLINE_S = 30.0  # generous: a loaded 2-core machine
BUFFER_BOUND_BYTES = 2 * WRITE_PIECE_BYTES + 1024  # high-water mark + one piece + chunk framing


async def test_a_stalled_subscriber_of_a_live_job_is_dropped_and_buffers_little(
    tmp_path: Path,
) -> None:
    total = STEPS * 300
    client, transports = stall_client(tmp_path, busy_script(then_wait_s=60))
    async with client:
        job_id = await submit(client)
        # A subscriber that reads gets every line, and the job goes on (quietly): the next
        # subscriber has ~6 MB to replay from the bus's ring.
        live = await asyncio.wait_for(read_sse_until(client, job_id, total), 60)
        assert live.ids == list(range(1, len(live.ids) + 1))
        assert numbered(live.events) == list(range(total))
        with StalledClient(client.port, f"/v1/jobs/{job_id}/stream") as stalled:
            took_s, most = await watch_stalled(transports, stalled, DROP_DEADLINE_S)
            got = parse_sse(chunked_body(stalled.read_what_came()))
        assert took_s >= STALL_TIMEOUT_S * 0.9
        assert most <= BUFFER_BOUND_BYTES
        assert (await client.get(f"/v1/jobs/{job_id}")).status == 200  # the service is fine

        # The dropped client resumes after its last complete event: nothing lost or repeated.
        more = await asyncio.wait_for(
            read_sse_until(
                client,
                job_id,
                total,
                last_id=got.ids[-1] if got.ids else 0,
                already=len(numbered(got.events)),
            ),
            60,
        )
        assert got.ids + more.ids == list(range(1, len(got.ids) + len(more.ids) + 1))
        assert numbered(got.events + more.events) == list(range(total))


async def test_a_stalled_subscriber_of_an_ended_job_is_dropped_too(tmp_path: Path) -> None:
    # Replayed from the store, and the end of the stream (event: end, then the last chunk)
    # must not wait on the peer forever either.
    client, transports = stall_client(tmp_path, busy_script(then_wait_s=0))
    async with client:
        job_id = await submit(client)
        job = await wait_ended(client, job_id)
        with StalledClient(client.port, f"/v1/jobs/{job_id}/stream") as stalled:
            _, most = await watch_stalled(transports, stalled, DROP_DEADLINE_S)
            got = parse_sse(chunked_body(stalled.read_what_came()))
        assert most <= BUFFER_BOUND_BYTES
        more = parse_sse(await read_stream(client, job_id, got.ids[-1] if got.ids else 0))
        assert more.done
        assert got.ids + more.ids == list(range(1, job["last_seq"] + 1))
        assert numbered(got.events + more.events) == list(range(STEPS * 300))


async def test_a_slow_but_reading_subscriber_is_not_dropped(tmp_path: Path) -> None:
    # TCP itself can keep a slowly read connection from draining for most of a second (a
    # closed window, then the sender's probe): the stall timeout must be well above that.
    stall_timeout_s = 5.0
    client = make_client(
        tmp_path, busy_script(then_wait_s=0), stream_stall_timeout_s=stall_timeout_s
    )
    async with client:
        job_id = await submit(client)
        job = await wait_ended(client, job_id)
        response = await client.get(f"/v1/jobs/{job_id}/stream")
        parser = SseParser()
        # Far slower than the service writes, but never a whole stall timeout without reading.
        while chunk := await asyncio.wait_for(response.content.read(256 * 1024), 30):
            parser.feed(chunk)
            await asyncio.sleep(stall_timeout_s / 20)
        assert parser.done
        assert parser.ids == list(range(1, job["last_seq"] + 1))
        assert numbered(parser.events) == list(range(STEPS * 300))


async def read_sse_until(
    client: TestClient, job_id: str, lines: int, *, last_id: int = 0, already: int = 0
) -> SseParser:
    """Read the stream until ``already`` + what came holds ``lines`` numbered lines."""
    headers = {"Last-Event-ID": str(last_id)} if last_id else {}
    response = await client.get(f"/v1/jobs/{job_id}/stream", headers=headers)
    assert response.status == 200
    parser = SseParser()
    while already + len(numbered(parser.events)) < lines:
        chunk = await response.content.read(1 << 20)
        assert chunk, "the stream ended early"
        parser.feed(chunk)
    response.close()
    return parser


async def test_what_a_stalled_subscriber_holds_is_bounded(tmp_path: Path) -> None:
    # Counted by tracemalloc over a few stalled clients of an ended job (replayed from the
    # store, so nothing they hold is shared): one batch, and the write buffer.
    clients = 10
    per_client_bound = BATCH_MAX_BYTES + 2 * WRITE_PIECE_BYTES + 32 * 1024
    client = make_client(tmp_path, busy_script(then_wait_s=0), stream_stall_timeout_s=60)
    transports = Transports(client.server.app)
    async with client:
        job_id = await submit(client)
        await wait_ended(client, job_id)
        await read_stream(client, job_id)  # warm: imports, caches, the first page's plan
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            with contextlib.ExitStack() as stack:
                stalled = await open_stalled(stack, client.port, job_id, clients)

                await waiting.until(  # until each handler waits for its buffer to drain
                    lambda: all(
                        (t := transports.by_port.get(s.port)) is not None
                        and t.get_write_buffer_size() > 0
                        for s in stalled
                    ),
                    timeout_s=30,
                    interval_s=0.05,
                    what="something sent to every stalled client",
                )
                await asyncio.sleep(0.5)
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert held / clients <= per_client_bound, f"{held / clients / 1024:.0f} KiB a client"


# The service as a process of its own (fake backend, no daemon), so that its RSS is its own.
SERVICE = """
import asyncio, signal, sys
from pathlib import Path
from aiohttp import ClientError, ClientSession, web
from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend, Script

async def main(data_dir: str, port: int, stall_timeout_s: float) -> None:
    pad = "x" * 89
    steps = [
        ("stdout", "\\n".join(f"{n:09d} {pad}" for n in range(s * 300, s * 300 + 300)), 0.0)
        for s in range(200)
    ]
    settings = Settings(
        data_dir=Path(data_dir), instance_id="unit", stream_stall_timeout_s=stall_timeout_s
    )
    runner = web.AppRunner(create_app(settings, backend=FakeBackend(Script(steps))))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()  # a SIGTERM cleans up: the repository key's gpg-agent ends too
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextlib.asynccontextmanager
async def service_process(tmp_path: Path) -> AsyncIterator[tuple[int, int, ClientSession]]:
    """(pid, port, a session on it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVICE, str(tmp_path / "data"), str(port), str(STALL_TIMEOUT_S)
    )
    try:
        async with ClientSession(f"http://127.0.0.1:{port}") as session:

            async def answers() -> bool:
                with contextlib.suppress(ClientError):
                    return (await session.get("/v1/jobs")).status == 200
                return False

            await waiting.until(answers, timeout_s=30, interval_s=0.1, what="the service up")
            yield proc.pid, port, session
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def test_memory_that_dropped_subscribers_held_is_given_back(tmp_path: Path) -> None:
    # glibc keeps the heap that hundreds of stalled connections' buffers grew, free but
    # resident, unless asked to give it back (measured: 234 MiB stayed 234 MiB until then).
    clients = 300
    async with service_process(tmp_path) as (pid, port, session):
        job_id = await submit(session)
        await wait_ended(session, job_id)
        await read_stream(session, job_id)  # warm
        before = peak = rss_bytes(pid)
        with contextlib.ExitStack() as stack:
            stalled = await open_stalled(stack, port, job_id, clients)

            def all_dropped() -> bool:
                nonlocal peak
                peak = max(peak, rss_bytes(pid))
                return all(s.dropped() for s in stalled)

            await waiting.until(
                all_dropped, timeout_s=30, interval_s=0.05, what="every stalled client dropped"
            )
        mib = 2**20
        assert peak - before > 10 * mib, "the test needs the clients to cost something"
        # The last dropped handler gives the heap back (malloc_trim) as it ends.
        await waiting.until(
            lambda: rss_bytes(pid),
            lambda after: after - before < (peak - before) / 3,
            timeout_s=3 * STALL_TIMEOUT_S,
            interval_s=0.1,
            what=f"the memory given back (before {before // mib} MiB, peak {peak // mib} MiB)",
        )
