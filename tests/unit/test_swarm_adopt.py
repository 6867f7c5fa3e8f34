"""What lets a new process take a swarm build over, with no swarm: the step tokens it can
derive again from the data directory's secret, the exchange it re-opens for a found step, how a
service and its tasks read as a found step, and a read back that skips what the store holds."""

from __future__ import annotations

import asyncio
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.backend import OutputChunk
from orchestrator.backend._adopt import Skipper
from orchestrator.backend._handoff import SECRET_FILE, Handoff, step_secret, step_token
from orchestrator.backend._servicelogs import ServiceOutput
from orchestrator.backend._swarmadopt import MISSED, fixed_listen, found_service, outputs_of
from orchestrator.errors import BackendError, ContainerGone


def test_the_secret_is_made_once_private_and_read_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = step_secret(data)
    assert len(first) >= 32
    assert stat.S_IMODE((data / SECRET_FILE).stat().st_mode) == 0o600
    assert step_secret(data) == first  # the next process on the same data directory
    assert [p.name for p in data.iterdir()] == [SECRET_FILE]  # no spare left
    assert step_secret(tmp_path / "other") != first
    (data / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(BackendError, match="too short"):
        step_secret(data)


def test_a_token_is_the_handles_hmac_under_the_secret() -> None:
    a, b = b"a" * 32, b"b" * 32
    assert step_token(a, "orch-1") == step_token(a, "orch-1")
    assert len({step_token(a, "orch-1"), step_token(a, "orch-2"), step_token(b, "orch-1")}) == 3


@pytest.fixture
async def listeners() -> AsyncIterator[list[Handoff]]:
    made: list[Handoff] = []
    yield made
    for handoff in made:
        await handoff.close()


async def _handoff(made: list[Handoff], secret: bytes) -> Handoff:
    handoff = Handoff("127.0.0.1", 0, None, max_bytes=1000, secret=secret)
    await handoff.start()
    made.append(handoff)
    return handoff


async def test_the_next_process_takes_the_outputs_with_the_token_the_first_gave(
    listeners: list[Handoff],
) -> None:
    secret = b"s" * 32
    first = await _handoff(listeners, secret)
    token = first.open("orch-a", None, ("/out",))
    await first.close()  # the first process is gone

    second = await _handoff(listeners, secret)
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{second.url}/steps/orch-a/outputs/0"
    async with aiohttp.ClientSession() as http:
        # Not taken over yet: the task's curl is told to try again, a stranger learns nothing.
        assert (await http.put(url, data=b"x", headers=auth)).status == 503
        forged = await http.put(url, data=b"x", headers={"Authorization": "Bearer x"})
        assert forged.status == 404
        second.reopen("orch-a", ("/out",))
        assert (await http.put(url, data=b"packages", headers=auth)).status == 201
        assert (await http.get(f"{second.url}/steps/orch-a/inputs", headers=auth)).status == 410
    with second.output("orch-a", "/out/.", None) as tar:
        assert tar.read() == b"packages"


async def test_another_secret_refuses_the_token(listeners: list[Handoff]) -> None:
    token = step_token(b"s" * 32, "orch-a")
    other = await _handoff(listeners, b"t" * 32)
    other.reopen("orch-a", ("/out",))
    async with aiohttp.ClientSession() as http:
        url = f"{other.url}/steps/orch-a/outputs/0"
        put = await http.put(url, data=b"x", headers={"Authorization": f"Bearer {token}"})
        assert put.status == 403


async def test_outputs_of_a_task_that_ended_unheard_fail_with_the_reason(
    listeners: list[Handoff],
) -> None:
    handoff = await _handoff(listeners, b"s" * 32)
    handoff.reopen("orch-a", ("/out",), MISSED)
    with pytest.raises(ContainerGone, match="could not be sent back while no service ran"):
        handoff.output("orch-a", "/out/.", None)
    # An exchange already open here is kept as it is (``find`` asks again while it polls).
    token = handoff.open("orch-b", None, ("/out",))
    handoff.reopen("orch-b", ("/elsewhere",), MISSED)
    with pytest.raises(ContainerGone, match="sent no /out back"):
        handoff.output("orch-b", "/out/.", None)
    assert token == step_token(b"s" * 32, "orch-b")


def _task(state: str, created: str, code: int | None = None) -> dict[str, Any]:
    container = {} if code is None else {"ContainerID": "c1", "ExitCode": code}
    return {"CreatedAt": created, "Status": {"State": state, "ContainerStatus": container}}


SERVICE = {
    "Spec": {
        "Name": "orch-a",
        "Labels": {"orchestrator.job": "j1"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "sha256:abc",
                "Env": ["A=b=c", "ORCHESTRATOR_STEP_OUTPUTS=/out /tmp/report"],
            }
        },
    }
}


def test_a_service_reads_as_a_found_step() -> None:
    running = found_service(SERVICE, [_task("running", "2026-12-06T10:00:00.5Z")], 0)
    assert (running.handle, running.state, running.image) == ("orch-a", "running", "sha256:abc")
    assert running.labels == {"orchestrator.job": "j1"}
    assert running.started_at == pytest.approx(1796551200.5)
    assert running.exit is None
    assert found_service(SERVICE, [_task("preparing", "2026-12-06T10:00:00Z")], 0).state == (
        "running"
    )
    assert found_service(SERVICE, [], 0).state == "running"  # Swarm is making its task

    done = found_service(SERVICE, [_task("complete", "2026-12-06T10:00:00Z", 0)], 0)
    assert (done.state, done.exit and done.exit.code) == ("exited", 0)
    # Failed by itself, then run again (restart attempts): the new task is the one followed.
    again = [
        _task("running", "2026-12-06T10:00:09Z"),
        _task("failed", "2026-12-06T10:00:00Z", 2),
    ]
    assert found_service(SERVICE, again, 1).state == "running"
    assert found_service(SERVICE, again[1:], 0).exit is not None
    stopped = found_service(SERVICE, [_task("shutdown", "2026-12-06T10:00:00Z")], 0)
    assert (stopped.state, stopped.exit) == ("exited", None)  # no code of its own: wait says


def test_the_outputs_and_the_listen_address_a_service_needs() -> None:
    assert outputs_of(SERVICE) == ("/out", "/tmp/report")
    assert outputs_of({"Spec": {}}) == ()
    assert fixed_listen("172.17.0.1:8471") and fixed_listen("[::1]:8471")
    assert not any(fixed_listen(x) for x in (None, "", "172.17.0.1:0", "172.17.0.1"))


class _Response:
    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    def iter_content(self, _size: None) -> Iterator[bytes]:
        yield from (self._raw[i : i + 7] for i in range(0, len(self._raw), 7))

    def close(self) -> None:
        return None


def _frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


async def test_a_read_back_skips_the_lines_the_store_holds_on_each_stream() -> None:
    raw = b"".join(
        _frame(1 if n % 3 else 2, f"2026-12-06T10:00:{n:02d}Z line {n}\n".encode())
        for n in range(1, 10)
    )
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    take = Skipper({"stdout": 4, "stderr": 1}).take
    with ThreadPoolExecutor(2) as pool:
        stream = ServiceOutput(lambda _follow: _Response(raw), pool, done, threading.Event(), take)
        chunks: list[OutputChunk] = [c async for batch in stream for c in batch]
        await stream.aclose()
    lines = {
        s: [x for c in chunks if c.stream == s for x in c.text.split("\n")]
        for s in ("stdout", "stderr")
    }
    assert lines == {"stdout": ["line 7", "line 8"], "stderr": ["line 6", "line 9"]}
