"""A swarm task's pushed output (``_pushed.py``): the listener's offsets over real HTTP on
loopback, and the task's own wrapper (bash, curl, dd: as in the build image) pushing to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest

from orchestrator.backend import OutputChunk, OutputStream, Stream
from orchestrator.backend._handoff import Handoff, wrapper_command, wrapper_env
from orchestrator.backend._pushed import CHUNK_MAX_BYTES, RUN_HEADER, PushedOutput

from .. import waiting
from ..cutter import Cutter


class Logs:
    """What the service logs would add: ``lines`` per stream, less the skipped ones."""

    def __init__(self, lines: Mapping[Stream, list[str]]) -> None:
        self.lines = lines
        self.skipped: Mapping[Stream, int] | None = None

    async def complete(self, skip: Mapping[Stream, int]) -> OutputStream:
        self.skipped = dict(skip)
        rest = [
            OutputChunk(s, "\n".join(lines[skip[s] :]), 0.0)
            for s, lines in self.lines.items()
            if lines[skip[s] :]
        ]

        class Rest:
            async def __aiter__(self) -> AsyncIterator[list[OutputChunk]]:
                if rest:
                    yield rest

            async def aclose(self) -> None:
                pass

        return Rest()


async def told(output: PushedOutput) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
    async for batch in output:
        for chunk in batch:
            lines[chunk.stream] += chunk.text.split("\n")
    await output.aclose()
    return lines


async def raw_put_cut_short(url: str, path: str, token: str, sent: bytes, length: int) -> None:
    """A PUT whose body stops after ``sent`` of ``length`` bytes: the connection drops."""
    host, port = url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"{RUN_HEADER}: r1\r\nContent-Length: {length}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    writer.transport.abort()


async def test_a_resend_is_skipped_a_gap_refused_and_a_cut_resumed(handoff: Handoff) -> None:
    token = handoff.open("orch-a", None, (), push=True)
    narration = handoff.narration("orch-a")
    assert narration is not None
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    logs = Logs({"stdout": [], "stderr": []})
    output = PushedOutput(narration, ended, logs.complete, "orch-a")
    auth = {"Authorization": f"Bearer {token}", RUN_HEADER: "r1"}
    base = f"{handoff.url}/steps/orch-a/output"
    async with aiohttp.ClientSession() as http:
        first = await http.put(f"{base}/stdout?offset=0", data=b"a\nb", headers=auth)
        assert (first.status, await first.text()) == (200, "stdout 3\nstderr 0\n")
        # The same chunk again (its answer was lost): taken once.
        again = await http.put(f"{base}/stdout?offset=0", data=b"a\nb", headers=auth)
        assert (again.status, await again.text()) == (200, "stdout 3\nstderr 0\n")
        gap = await http.put(f"{base}/stdout?offset=9", data=b"z\n", headers=auth)
        assert (gap.status, await gap.text()) == (409, "stdout 3\nstderr 0\n")
        # A chunk whose connection drops half way is not taken at all...
        await raw_put_cut_short(
            handoff.url, "/steps/orch-a/output/stdout?offset=3", token, b"\nc", 5
        )
        offsets = await http.get(base, headers=auth)
        assert await offsets.text() == "stdout 3\nstderr 0\n"
        # ...and sent again from where the listener is, overlapping what it has.
        resumed = await http.put(f"{base}/stdout?offset=2", data=b"b\nc\nd", headers=auth)
        assert await resumed.text() == "stdout 7\nstderr 0\n"
        err = await http.put(f"{base}/stderr?offset=0", data=b"e\n", headers=auth)
        assert err.status == 200
        report = f"{handoff.url}/steps/orch-a/report?exit=3&oom=1&disk_kib=2&stdout=7&stderr=2"
        assert (await http.put(report, headers=auth)).status == 201
    ended.set_result(None)
    assert await told(output) == {"stdout": ["a", "b", "c", "d"], "stderr": ["e"]}
    assert logs.skipped is None  # whole: the service logs were not read
    assert narration.report is not None and narration.report.oom_killed
    assert narration.report.code == 3 and narration.report.disk_bytes == 2048


async def test_what_the_push_missed_comes_from_the_logs_past_the_lines_told(
    handoff: Handoff,
) -> None:
    token = handoff.open("orch-a", None, (), push=True)
    narration = handoff.narration("orch-a")
    assert narration is not None
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    logs = Logs({"stdout": ["1", "2", "3", "4"], "stderr": ["e"]})
    output = PushedOutput(narration, ended, logs.complete, "orch-a")
    auth = {"Authorization": f"Bearer {token}", RUN_HEADER: "r1"}
    async with aiohttp.ClientSession() as http:
        # Two whole lines and a part of the third, then the pusher gave up: no report.
        sent = await http.put(
            f"{handoff.url}/steps/orch-a/output/stdout?offset=0", data=b"1\n2\n3", headers=auth
        )
        assert sent.status == 200
    ended.set_result(None)
    assert await told(output) == {"stdout": ["1", "2", "3", "4"], "stderr": ["e"]}
    assert logs.skipped == {"stdout": 2, "stderr": 0}


async def test_a_push_needs_the_steps_own_token_one_task_and_small_chunks(
    handoff: Handoff,
) -> None:
    token_a = handoff.open("orch-a", None, (), push=True)
    token_b = handoff.open("orch-b", None, (), push=True)
    sealed = handoff.open("orch-c", None, ())  # no network: it does not push
    url = f"{handoff.url}/steps/orch-a/output/stdout?offset=0"
    async with aiohttp.ClientSession() as http:
        other = await http.put(url, data=b"x", headers={"Authorization": f"Bearer {token_b}"})
        assert other.status == 403
        not_pushing = await http.put(
            f"{handoff.url}/steps/orch-c/output/stdout?offset=0",
            data=b"x",
            headers={"Authorization": f"Bearer {sealed}"},
        )
        assert not_pushing.status == 410
        auth = {"Authorization": f"Bearer {token_a}", RUN_HEADER: "r1"}
        big = await http.put(url, data=b"x" * (CHUNK_MAX_BYTES + 1), headers=auth)
        assert big.status == 413
        bad = await http.put(url.replace("stdout", "stdin"), data=b"x", headers=auth)
        assert bad.status == 404
        assert (await http.put(url, data=b"x\n", headers=auth)).status == 200
        # Another task of the service (run again): its pushes and the first's are refused,
        # so the service logs tell the rest.
        rerun = {**auth, RUN_HEADER: "r2"}
        assert (await http.put(url, data=b"y\n", headers=rerun)).status == 410
        assert (await http.put(url, data=b"z\n", headers=auth)).status == 410
    narration = handoff.narration("orch-a")
    assert narration is not None and narration.offsets["stdout"] == 2


@pytest.mark.skipif(not all(map(shutil.which, ("bash", "curl", "dd"))), reason="no bash/curl/dd")
@pytest.mark.parametrize("cut", [False, True])
async def test_the_wrapper_pushes_a_burst_whole_through_a_cut(
    handoff: Handoff, tmp_path: os.PathLike[str], cut: bool
) -> None:
    cutter = Cutter("127.0.0.1", int(handoff.url.rsplit(":", 1)[1]))
    await cutter.start("127.0.0.1")
    count = 50_000
    token = handoff.open("orch-a", None, (), push=True)
    narration = handoff.narration("orch-a")
    assert narration is not None
    url = f"http://127.0.0.1:{cutter.port}"
    env = {**os.environ, **wrapper_env(url, "orch-a", token, None, (), push=True, stop=True)}
    # Slow enough at first that the cut lands mid-stream, then a burst.
    script = f"seq 1 100; sleep 1; seq 101 {count}; echo end >&2"
    proc = await asyncio.create_subprocess_exec(
        *wrapper_command(("bash", "-c", script)),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        # A group of its own, killed at the end as a task's end would: the stop watch it forks
        # asks a listener that is gone once a second, forever, outside a container.
        start_new_session=True,
    )
    logs = Logs({"stdout": [], "stderr": []})
    output = PushedOutput(narration, asyncio.ensure_future(proc.wait()), logs.complete, "orch-a")
    if cut:

        async def mend() -> None:
            # Once the first lines are in: the kept connection dropped and two tries turned
            # away (a second apart), then the network is back.
            await waiting.until(lambda: narration.offsets["stdout"], timeout_s=30)
            cutter.set_cut(True)
            await waiting.until(lambda: cutter.refused, lambda n: n >= 2, timeout_s=30)
            cutter.set_cut(False)

        mending = asyncio.ensure_future(mend())
    try:
        lines = await asyncio.wait_for(told(output), 60)
    finally:
        await cutter.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert lines["stdout"] == [str(i) for i in range(1, count + 1)]
    assert lines["stderr"] == ["end"]
    assert proc.returncode == 0
    assert logs.skipped is None  # the push carried it all, the cut resumed
    if cut:
        await mending
        assert cutter.refused >= 2
