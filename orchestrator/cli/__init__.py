"""The ``orchestrator`` command: the service, and a client for CI pipelines."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._common import NO_CACHE_HELP
from .caches import add_commands as add_cache_commands
from .catalog import add_commands as add_catalog_commands
from .client import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMED_OUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from .commands import cmd_artifacts, cmd_build, cmd_cancel, cmd_check, cmd_jobs, cmd_logs, run
from .serve import cmd_serve
from .verify import add_command as add_verify_command

DEFAULT_URL = "http://127.0.0.1:7835"

EPILOG = f"""\
exit codes:
  {EXIT_OK}  the build succeeded (or the command did what it was asked)
  {EXIT_FAILED}  the build failed
  {EXIT_USAGE}  usage error, or the service refused the request (bad PKGBUILD, unknown job, ...)
  {EXIT_CANCELLED}  the build was cancelled (also after Ctrl-C while waiting for it)
  {EXIT_TIMED_OUT}  the build timed out
  {EXIT_INTERRUPTED}  the build was interrupted (the service stopped)
  {EXIT_UNAVAILABLE}  the service could not be reached, or failed

environment:
  ORCHESTRATOR_URL        service URL (default {DEFAULT_URL})
  ORCHESTRATOR_API_TOKEN  bearer token, when the service requires one

examples:
  orchestrator build ./my-worker --follow --output dist/
  orchestrator check ./my-worker
  orchestrator jobs --status running
  orchestrator logs JOB --follow
  orchestrator cancel JOB
  orchestrator build ./my-worker --no-cache
  orchestrator cache list
  orchestrator cache remove hexyl:cpu
  orchestrator verify hello-1.0-1-x86_64.pkg.tar.zst --job JOB
  orchestrator worker available
  orchestrator worker install rust-hello --follow
  orchestrator model download https://host/model.gguf --name model.gguf --sha256 HEX
"""


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument, as ``add_argument`` takes it."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True, slots=True)
class Command:
    """One command: its name, what it runs (``None``: ``serve``), its help and arguments."""

    name: str
    handler: Callable[[argparse.Namespace], Any] | None
    help: str
    args: tuple[Arg, ...] = ()
    description: str | None = None
    epilog: bool = False  # the exit codes and examples, after its own help
    client: bool = True  # takes --url, --token and --json


_DIR = arg("directory", metavar="DIR")
_VARIANT = arg("--variant", default="cpu", help="cpu (default) or cuda")
_JOB = arg("job_id", metavar="JOB")

# The client's commands, in the order the help lists them (then worker, model and cache).
COMMANDS = (
    Command(
        "build",
        cmd_build,
        "build a directory with a PKGBUILD",
        (
            _DIR,
            _VARIANT,
            arg("--timeout-s", type=float, help="stop the build after this many seconds"),
            arg("-f", "--follow", action="store_true", help="print the narration live"),
            arg("-o", "--output", metavar="DIR", help="save the packages into DIR"),
            arg("-d", "--detach", action="store_true", help="print the job id and return at once"),
            arg("--no-cache", action="store_true", help=NO_CACHE_HELP),
            arg(
                "--publish",
                action="store_true",
                help="once built, add the package to the variant's signed pacman repository",
            ),
        ),
        "Upload DIR (a PKGBUILD and the local files its source=() names), build it in a "
        "container, and wait for the result; the exit code says how it ended. Ctrl-C cancels "
        "the remote build.",
        epilog=True,
    ),
    Command(
        "check",
        cmd_check,
        "show what makepkg reads from a PKGBUILD, build nothing",
        (_DIR, _VARIANT),
        "Upload DIR as 'build' would, have makepkg read its PKGBUILD (in the service's "
        "sandbox), print the .SRCINFO, then warnings and problems; exit 0 when nothing stops a "
        "build, 2 otherwise (or when makepkg refuses the PKGBUILD).",
    ),
    Command(
        "logs",
        cmd_logs,
        "print a job's narration",
        (_JOB, arg("-f", "--follow", action="store_true", help="keep printing until the end")),
        "Print what a job has said so far; with --follow, keep printing until it ends (Ctrl-C "
        "stops following and leaves the job running).",
    ),
    Command(
        "jobs",
        cmd_jobs,
        "list jobs, newest first",
        (
            arg("--status", help="only jobs with this status (queued, running, ...)"),
            arg("--limit", type=int, default=20),
            arg("--offset", type=int, default=0),
        ),
    ),
    Command(
        "cancel",
        cmd_cancel,
        "cancel a job",
        (_JOB,),
        "Cancel a job; returns once its container is gone.",
    ),
    Command(
        "artifacts",
        cmd_artifacts,
        "list or download a job's packages",
        (_JOB, arg("-o", "--output", metavar="DIR", help="download them into DIR")),
    ),
)

SERVE = Command(
    "serve",
    None,
    "run the HTTP service",
    (
        arg("--host", help="address to bind (default 127.0.0.1)"),
        arg("--port", type=int, help="port (default 7835)"),
        arg(
            "--drain",
            action="store_true",
            help="on SIGTERM/SIGINT wait for running builds to end before exiting (for a host "
            "that goes away); otherwise they are left running for the next start "
            "(ORCHESTRATOR_ON_STOP)",
        ),
    ),
    "Run the HTTP service. Settings come from ORCHESTRATOR_* variables (see README).",
    client=False,
)


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("ORCHESTRATOR_URL", DEFAULT_URL),
        help="service URL (default: $ORCHESTRATOR_URL or %(default)s)",
    )
    common.add_argument(
        "--token",
        default=os.environ.get("ORCHESTRATOR_API_TOKEN") or None,
        help="bearer token (default: $ORCHESTRATOR_API_TOKEN)",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common


def _add(commands: Any, command: Command, common: argparse.ArgumentParser) -> None:
    options: dict[str, Any] = {"help": command.help}
    if command.client:
        options["parents"] = [common]
    if command.description is not None:
        options["description"] = command.description
    if command.epilog:
        options.update(epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser = commands.add_parser(command.name, **options)
    for argument in command.args:
        parser.add_argument(*argument.flags, **argument.options)
    parser.set_defaults(handler=command.handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Build PKGBUILDs in throwaway Docker containers, through the orchestrator "
        "service. 'serve' runs the service; the other commands talk to it over HTTP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _client_options()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        _add(commands, command, common)
    add_catalog_commands(commands, common)
    add_cache_commands(commands, common)
    add_verify_command(commands, common)
    _add(commands, SERVE, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    return run(args)


__all__ = ["main"]
