"""The HTTP API."""

from ..errors import InsecureBind
from .app import check_bind, create_app

__all__ = ["InsecureBind", "check_bind", "create_app"]
