"""A swarm task's wrapper stopping its command: a SIGTERM passed on (Swarm's own stop reaches
only the wrapper), and kill's stop through the handoff listener. The wrapper runs here as the
task runs it (bash, curl), against a real listener on 127.0.0.1; no swarm needed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping

import aiohttp

from orchestrator.backend import _handoff
from orchestrator.backend._handoff import Handoff

from .. import waiting

# Says so on SIGTERM, then goes on (exits 3 with ``exit_on_term``); polls so its trap runs soon.
_COMMAND = 'trap "echo got TERM{}" TERM; echo up; while :; do sleep 0.05; done'


@contextlib.asynccontextmanager
async def wrapped(
    env: Mapping[str, str], *, exit_on_term: bool
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The wrapper running the command, up; whatever is left of it killed at the end."""
    command = ("sh", "-c", _COMMAND.format("; exit 3" if exit_on_term else ""))
    proc = await asyncio.create_subprocess_exec(
        *_handoff.wrapper_command(command),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,  # a group of its own: the command outlives a killed wrapper here
    )
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"up\n"
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def rest(proc: asyncio.subprocess.Process) -> bytes:
    """What the command printed after "up", once the wrapper has ended (then the rest killed).
    Not ``proc.wait()``: that waits for the output to close too, which the command holds."""
    await waiting.until(lambda: proc.returncode, lambda code: code is not None, timeout_s=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.stdout is not None
    return await proc.stdout.read()


async def test_the_wrapper_passes_a_sigterm_on_and_ends_with_the_commands_code() -> None:
    # Swarm's stop (service rm, a drained node) signals the init, which signals the wrapper
    # only: a wrapper that died of it had the command SIGKILLed at once, its grace cut short.
    env = _handoff.wrapper_env("http://127.0.0.1:9", "orch-a", "t", None, ())
    async with wrapped(env, exit_on_term=True) as proc:
        proc.send_signal(signal.SIGTERM)
        out = await rest(proc)
    assert out == b"got TERM\n"
    assert proc.returncode == 3


async def test_kills_stop_reaches_the_wrapper_which_sends_sigterm_then_kills(
    handoff: Handoff,
) -> None:
    token = handoff.open("orch-a", None, ())
    env = _handoff.wrapper_env(handoff.url, "orch-a", token, None, (), stop=True)
    async with wrapped(env, exit_on_term=False) as proc:
        await waiting.until(lambda: handoff.watching("orch-a"), what="the wrapper listening")
        assert handoff.stop("orch-a", grace_s=1.0) is True
        out = await rest(proc)
    assert out == b"got TERM\n"  # told first, then (it went on) killed after the grace
    # Killed: in a task its init ends with it, and the kernel kills every process left.
    assert proc.returncode == -signal.SIGKILL


async def test_without_grace_the_wrapper_kills_at_once(handoff: Handoff) -> None:
    token = handoff.open("orch-a", None, ())
    env = _handoff.wrapper_env(handoff.url, "orch-a", token, None, (), stop=True)
    async with wrapped(env, exit_on_term=False) as proc:
        await waiting.until(lambda: handoff.watching("orch-a"), what="the wrapper listening")
        assert handoff.stop("orch-a", grace_s=0) is True
        out = await rest(proc)
    assert out == b""
    assert proc.returncode == -signal.SIGKILL


async def test_a_stop_waits_for_its_wrapper_and_a_dropped_step_ends_the_wait(
    handoff: Handoff,
) -> None:
    url = f"{handoff.url}/steps/orch-a/stop"
    auth = {"Authorization": f"Bearer {handoff.open('orch-a', None, ())}"}
    async with aiohttp.ClientSession() as http:
        assert handoff.stop("orch-a", grace_s=1.0) is False  # nobody listens yet
        first = await http.get(url, headers=auth)  # asked later: told at once
        assert (first.status, await first.text()) == (200, "10")
        handoff.open("orch-b", None, ())
        auth_b = {"Authorization": f"Bearer {_handoff.step_token(b's' * 32, 'orch-b')}"}
        waiting_b = asyncio.ensure_future(
            http.get(f"{handoff.url}/steps/orch-b/stop", headers=auth_b)
        )
        await waiting.until(lambda: handoff.watching("orch-b"), what="the request waiting")
        handoff.drop("orch-b")
        assert (await waiting_b).status == 404
