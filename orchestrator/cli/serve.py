"""``orchestrator serve``: the HTTP service."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from aiohttp import web

from ..timeouts import SERVE_DRAIN_SHUTDOWN_TIMEOUT_S, SERVE_SHUTDOWN_TIMEOUT_S


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here so the client commands start fast and need nothing of the service.
    from pydantic import ValidationError

    from ..api import InsecureBind, check_bind, create_app
    from ..errors import OrchestratorError
    from ..settings import Settings

    overrides: dict[str, Any] = {
        k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None
    }
    if getattr(args, "drain", False):
        overrides["on_stop"] = "drain"
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        # Name the setting and the reason, never the value: it may be the token.
        for error in exc.errors():
            name = "ORCHESTRATOR_" + "_".join(str(part) for part in error["loc"]).upper()
            reason = error["msg"].removeprefix("Value error, ")
            print(f"orchestrator: bad setting {name}: {reason}", file=sys.stderr)
        return 2
    try:
        check_bind(settings)
    except InsecureBind as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            shutdown_timeout=SERVE_DRAIN_SHUTDOWN_TIMEOUT_S
            if settings.on_stop == "drain"
            else SERVE_SHUTDOWN_TIMEOUT_S,
            print=lambda msg: print(msg, flush=True),
        )
    except OrchestratorError as exc:
        # Start-up failures (no Docker socket, unreadable database) are the user's to fix:
        # say what is wrong without a traceback.
        print(f"orchestrator: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
