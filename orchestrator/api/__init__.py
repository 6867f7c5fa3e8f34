"""The HTTP API."""

from .app import InsecureBind, check_bind, create_app

__all__ = ["InsecureBind", "check_bind", "create_app"]
