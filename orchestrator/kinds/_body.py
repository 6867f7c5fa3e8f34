"""Reading a request's fields, shared by the kinds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput


def required_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"'{key}' is required (a non-empty string)")
    return value


def parse_cache(raw: str | None) -> bool:
    """``cache=off`` builds without the package's cache; ``on`` (the default) with it."""
    if raw is None or raw.lower() in ("", "on", "true", "1"):
        return True
    if raw.lower() in ("off", "false", "0"):
        return False
    raise InvalidInput(f"cache must be on or off, not {raw!r}")


def cache_request(cache: bool) -> dict[str, Any]:
    """What the record keeps of the cache flag (nothing for the default)."""
    return {} if cache else {"cache": False}


def cache_of(request: Mapping[str, Any]) -> bool:
    return request.get("cache", True) is not False
