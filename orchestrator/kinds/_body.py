"""Reading a request through its kind's model, shared by the kinds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import InvalidInput
from ..jobs import Work
from ..repo import Repositories
from ..repo.publishing import then_publish
from ..storage.store import JobRecord

# A field that is absent, or not a non-empty string, is said the one way whatever pydantic's
# reason: that is what a client needs to hear.
_MISSING = frozenset({"missing", "string_type", "string_too_short"})

M = TypeVar("M", bound=BaseModel)


def read(model: type[M], body: Mapping[str, Any]) -> M:
    """``body`` as ``model``, or ``InvalidInput`` naming the first field that is wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput(_say(model, exc.errors()[0])) from None


def _say(model: type[BaseModel], error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "the body"
    if error["type"] in _MISSING:
        return f"'{key}' is required (a non-empty string)"
    field = model.model_fields.get(key)
    if error["type"] == "string_pattern_mismatch" and field and field.description:
        return f"{key} must be {field.description}"  # the pattern, in words
    return f"'{key}': {error['msg']}"


def parse_cache(raw: str | None) -> bool:
    """``cache=off`` builds without the package's cache; ``on`` (the default) with it."""
    if raw is None or raw.lower() in ("", "on", "true", "1"):
        return True
    if raw.lower() in ("off", "false", "0"):
        return False
    raise InvalidInput(f"cache must be on or off, not {raw!r}")


def cache_request(cache: bool, *, publish: bool = False) -> dict[str, Any]:
    """What the record keeps of the cache and publish flags (nothing for the defaults)."""
    return {**({} if cache else {"cache": False}), **({"publish": True} if publish else {})}


def published(work: Work, record: JobRecord, repos: Repositories | None) -> Work:
    """``work``, followed by publishing its packages when the job was asked to (``repos`` is
    None only where a test runs a kind without the service)."""
    if record.request.get("publish") is not True or repos is None:
        return work
    return then_publish(work, repos, record.variant or "cpu")
