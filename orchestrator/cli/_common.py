"""What every CLI command shares: the client for ``--url``/``--token``, how lifecycle lines and
events are printed, tables, exit codes, and following a job to its end.

Build output goes through untouched (stdout lines to stdout, stderr lines to stderr); the
orchestrator's own lifecycle lines are prefixed with ``[orchestrator]`` so a CI log shows at a
glance which is which. ``--json`` prints one JSON object per line instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .client import EXIT_BY_STATUS, EXIT_OK, Client, CliError, End
from .progress import Progress

PREFIX = "[orchestrator]"
NO_CACHE_HELP = "build without the package's cache (it is neither read nor filled)"


def say(message: str, args: argparse.Namespace) -> None:
    """A lifecycle line of our own (never in --json mode, which is for machines)."""
    if not args.json:
        print(f"{PREFIX} {message}", flush=True)


def print_event(event: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(event, ensure_ascii=False), flush=True)
    elif event["action"] == "sample":
        return  # figures for the progress line and for machines, not a line of the log
    elif event["action"] in ("output", "phase"):
        out = sys.stderr if event.get("stream") == "stderr" else sys.stdout
        print(event["message"], file=out, flush=True)
    else:
        print(f"{PREFIX} {event['message']}", flush=True)


def table(rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell: readable in a terminal and in a CI log."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def client_for(args: argparse.Namespace) -> Client:
    return Client(args.url, args.token)


def exit_for(status: str) -> int:
    return EXIT_BY_STATUS.get(status, EXIT_OK)


async def follow(
    client: Client, job_id: str, args: argparse.Namespace, *, show: bool, cancel_on_ctrl_c: bool
) -> str:
    """Read the job's stream to its end; return the final status.

    With ``cancel_on_ctrl_c``, the first Ctrl-C cancels the remote job and keeps following so
    the cancellation is shown; a second Ctrl-C stops waiting.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    cancelling: list[asyncio.Task[Any]] = []

    def on_sigint() -> None:
        if cancel_on_ctrl_c and not cancelling:
            say(f"Ctrl-C: cancelling job {job_id} (Ctrl-C again to stop waiting)", args)
            cancelling.append(loop.create_task(_cancel_quietly(client, job_id)))
        elif task is not None:
            task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    end: End | None = None
    progress = None if args.json else Progress(sys.stdout, tty=sys.stdout.isatty(), prefix=PREFIX)
    try:
        async for item in client.stream(job_id):
            if isinstance(item, End):
                end = item
            elif show and not (progress is not None and progress.saw(item)):
                _print_under(progress, item, args)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if progress is not None:
            progress.clear()
    for pending in cancelling:
        await pending
    if end is not None:
        if show and args.json:
            print(json.dumps({"end": end.data}), flush=True)
        return end.status
    return str((await client.job(job_id))["status"])


def _print_under(
    progress: Progress | None, event: dict[str, Any], args: argparse.Namespace
) -> None:
    """An event printed above the progress line, which is drawn again below it."""
    if progress is not None:
        progress.clear()
    print_event(event, args)
    if progress is not None:
        progress.draw()


async def _cancel_quietly(client: Client, job_id: str) -> None:
    # A 409 means it ended on its own meanwhile; the stream says how.
    with contextlib.suppress(CliError):
        await client.cancel(job_id)
