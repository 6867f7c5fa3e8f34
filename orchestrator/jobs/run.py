"""Running one job's work: its time limit, parsed and armed here only, and its last line."""

from __future__ import annotations

import asyncio
import math

from ..errors import InvalidInput
from .cancel import CancelReason, CancelToken
from .endings import ending_event
from .result import JobResult, Sink, Work


def parse_timeout(raw: object, default_s: float, max_s: float) -> float:
    """A job's ``timeout_s`` as the API got it: a query parameter (text) or a JSON number."""
    if raw is None or raw == "":
        return default_s
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"timeout_s must be a number of seconds, not {raw!r}") from None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        raise InvalidInput(f"timeout_s must be a number of seconds, not {raw!r}")
    if not (math.isfinite(value) and 0 < value <= max_s):
        raise InvalidInput(f"timeout_s must be more than 0 and at most {max_s:g}")
    return value


async def perform(
    work: Work,
    sink: Sink,
    token: CancelToken,
    *,
    noun: str,
    timeout_s: float | None,
    elapsed_s: float = 0.0,
) -> JobResult:
    """Run ``work`` to its end and tell how it ended. Past ``timeout_s`` the token is cancelled
    for the timeout (recorded before the work sees it), so the work ends as timed out.
    ``elapsed_s``: how long the job ran before (an adopted build's time under another process
    counts), so a limit that ran out meanwhile cancels at once."""
    timer = None
    if timeout_s is not None:
        timer = asyncio.get_running_loop().call_later(
            max(0.0, timeout_s - elapsed_s),
            lambda: token.cancel(CancelReason.TIMEOUT, after_s=timeout_s),
        )
    try:
        result = await work(sink, token)
    finally:
        if timer is not None:
            timer.cancel()
    await sink([ending_event(result, noun)])
    return result
