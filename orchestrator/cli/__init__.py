"""The ``orchestrator`` command: the service, and a client for CI pipelines."""

from __future__ import annotations

import argparse
import os

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
  orchestrator worker available
  orchestrator worker install rust-hello --follow
  orchestrator model download https://host/model.gguf --name model.gguf --sha256 HEX
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Build PKGBUILDs in throwaway Docker containers, through the orchestrator "
        "service. 'serve' runs the service; the other commands talk to it over HTTP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build",
        parents=[common],
        help="build a directory with a PKGBUILD",
        description="Upload DIR (a PKGBUILD and the local files its source=() names), build it "
        "in a container, and wait for the result; the exit code says how it ended. Ctrl-C "
        "cancels the remote build.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("directory", metavar="DIR")
    build.add_argument("--variant", default="cpu", help="cpu (default) or cuda")
    build.add_argument("--timeout-s", type=float, help="stop the build after this many seconds")
    build.add_argument("-f", "--follow", action="store_true", help="print the narration live")
    build.add_argument("-o", "--output", metavar="DIR", help="save the packages into DIR")
    build.add_argument(
        "-d", "--detach", action="store_true", help="print the job id and return at once"
    )
    build.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    build.set_defaults(handler=cmd_build)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="show what makepkg reads from a PKGBUILD, build nothing",
        description="Upload DIR as 'build' would, have makepkg read its PKGBUILD (in the "
        "service's sandbox), print the .SRCINFO, then warnings and problems; exit 0 when "
        "nothing stops a build, 2 otherwise (or when makepkg refuses the PKGBUILD).",
    )
    check.add_argument("directory", metavar="DIR")
    check.add_argument("--variant", default="cpu", help="cpu (default) or cuda")
    check.set_defaults(handler=cmd_check)

    logs = commands.add_parser(
        "logs",
        parents=[common],
        help="print a job's narration",
        description="Print what a job has said so far; with --follow, keep printing until it "
        "ends (Ctrl-C stops following and leaves the job running).",
    )
    logs.add_argument("job_id", metavar="JOB")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the end")
    logs.set_defaults(handler=cmd_logs)

    jobs = commands.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--status", help="only jobs with this status (queued, running, ...)")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--offset", type=int, default=0)
    jobs.set_defaults(handler=cmd_jobs)

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a job",
        description="Cancel a job; returns once its container is gone.",
    )
    cancel.add_argument("job_id", metavar="JOB")
    cancel.set_defaults(handler=cmd_cancel)

    artifacts = commands.add_parser(
        "artifacts", parents=[common], help="list or download a job's packages"
    )
    artifacts.add_argument("job_id", metavar="JOB")
    artifacts.add_argument("-o", "--output", metavar="DIR", help="download them into DIR")
    artifacts.set_defaults(handler=cmd_artifacts)

    add_catalog_commands(commands, common)
    add_cache_commands(commands, common)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. Settings come from ORCHESTRATOR_* variables "
        "(see README).",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 7835)")
    serve.add_argument(
        "--drain",
        action="store_true",
        help="on SIGTERM/SIGINT wait for running builds to end before exiting (for a host "
        "that goes away); otherwise they are left running for the next start "
        "(ORCHESTRATOR_ON_STOP)",
    )
    serve.set_defaults(handler=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    return run(args)


__all__ = ["main"]
