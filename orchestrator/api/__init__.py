"""The HTTP API.

``create_app`` and ``check_bind`` resolve on first use, so that the CLI can read the route table
(``routes``) without loading the service's engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..errors import InsecureBind
    from .app import check_bind, create_app

__all__ = ["InsecureBind", "check_bind", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "InsecureBind":
        from ..errors import InsecureBind

        return InsecureBind
    if name in ("check_bind", "create_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
