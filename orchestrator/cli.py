"""The ``orchestrator`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web


def _serve(args: argparse.Namespace) -> int:
    from .api import InsecureBind, check_bind, create_app
    from .settings import Settings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    try:
        check_bind(settings)
    except InsecureBind as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=lambda msg: print(msg, flush=True),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Build PKGBUILDs in throwaway Docker containers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. Settings come from ORCHESTRATOR_* variables.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 7835)")
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result
