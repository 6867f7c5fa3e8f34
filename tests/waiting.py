"""The suite's one way to wait: until a condition holds, for at most a time, never a bare sleep.

A test waits on what it wants to see (a job's status, a line in a log, a container gone), asked
again every ``interval_s`` until ``timeout_s`` has passed; then it fails saying what it was
waiting for and what it saw last.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    probe: Callable[[], T | Awaitable[T]],
    done: Callable[[T], bool] = bool,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.01,
    what: str = "the condition",
) -> T:
    """``probe()`` (sync or async) again and again until ``done`` says yes of its answer;
    that answer. Fails with the last answer once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = probe()
        if inspect.isawaitable(seen):
            seen = await seen
        if done(seen):  # type: ignore[arg-type]
            return seen  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:g} s; last: {seen!r}")
        await asyncio.sleep(interval_s)


def until_sync(
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str = "the condition",
) -> T:
    """``until`` for code that cannot await (fixtures, threads)."""
    deadline = time.monotonic() + timeout_s
    while not done(seen := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:g} s; last: {seen!r}")
        time.sleep(interval_s)
    return seen
