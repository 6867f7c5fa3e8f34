"""The suite's one way to wait: until a condition holds, for at most a time, never a bare sleep.

A test waits on what it wants to see (a job's status, a line in a log, a container gone), asked
again every ``interval_s`` until ``timeout_s`` has passed; then it fails saying what it was
waiting for and what it saw last. A caller that reports the outcome itself (a teardown that
names what was left behind) asks for ``on_timeout="return"``: then the last answer comes back.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

T = TypeVar("T")

OnTimeout = Literal["fail", "return"]


def _timed_out(what: str, timeout_s: float, seen: object, on_timeout: OnTimeout) -> None:
    if on_timeout == "fail":
        raise AssertionError(f"{what} did not hold within {timeout_s:g} s; last: {seen!r}")


async def until(
    probe: Callable[[], T | Awaitable[T]],
    done: Callable[[T], bool] = bool,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.01,
    what: str = "the condition",
    on_timeout: OnTimeout = "fail",
) -> T:
    """``probe()`` (sync or async) again and again until ``done`` says yes of its answer;
    that answer. Once ``timeout_s`` has passed: fails with the last answer (or, with
    ``on_timeout="return"``, returns it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = probe()
        if inspect.isawaitable(seen):
            seen = await seen
        if done(seen):
            return seen
        if time.monotonic() > deadline:
            _timed_out(what, timeout_s, seen, on_timeout)
            return seen
        await asyncio.sleep(interval_s)


def until_sync(
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str = "the condition",
    on_timeout: OnTimeout = "fail",
) -> T:
    """``until`` for code that cannot await (fixtures, threads)."""
    deadline = time.monotonic() + timeout_s
    while not done(seen := probe()):
        if time.monotonic() > deadline:
            _timed_out(what, timeout_s, seen, on_timeout)
            return seen
        time.sleep(interval_s)
    return seen
