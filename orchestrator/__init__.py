"""orchestrator: builds PKGBUILDs in throwaway Docker containers, with live narration and cancel.

The public names load on first use (PEP 562), so ``import orchestrator.cli`` (the client a CI
pipeline runs) does not pay for docker, tenacity and pydantic-settings, which only the service
needs. The ``TYPE_CHECKING`` imports keep the names visible to type checkers and editors.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .backend import Backend, OutputChunk, Step
    from .cancel import CancelReason, CancelToken
    from .engine import Engine
    from .errors import (
        ArchiveError,
        ArchiveTooLarge,
        BackendError,
        BackendUnavailable,
        ContainerGone,
        ImageNotFound,
        InvalidInput,
        OrchestratorError,
        PkgbuildError,
        VariantError,
        VariantRefused,
    )
    from .events import Action, Event, Level
    from .runner import BuildRequest, BuildResult, Runner
    from .settings import Settings
    from .srcinfo import SrcInfo
    from .status import JobStatus
    from .variants import Variant, VariantPlan

# Public name → the submodule that defines it; a unit test keeps this, ``__all__`` and the
# imports above in step.
_LAZY: dict[str, str] = {
    "Action": "events",
    "ArchiveError": "errors",
    "ArchiveTooLarge": "errors",
    "Backend": "backend",
    "BackendError": "errors",
    "BackendUnavailable": "errors",
    "BuildRequest": "runner",
    "BuildResult": "runner",
    "CancelReason": "cancel",
    "CancelToken": "cancel",
    "ContainerGone": "errors",
    "Engine": "engine",
    "Event": "events",
    "ImageNotFound": "errors",
    "InvalidInput": "errors",
    "JobStatus": "status",
    "Level": "events",
    "OrchestratorError": "errors",
    "OutputChunk": "backend",
    "PkgbuildError": "errors",
    "Runner": "runner",
    "Settings": "settings",
    "SrcInfo": "srcinfo",
    "Step": "backend",
    "Variant": "variants",
    "VariantError": "errors",
    "VariantPlan": "variants",
    "VariantRefused": "errors",
}

__all__ = [
    "Action",
    "ArchiveError",
    "ArchiveTooLarge",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "BuildRequest",
    "BuildResult",
    "CancelReason",
    "CancelToken",
    "ContainerGone",
    "Engine",
    "Event",
    "ImageNotFound",
    "InvalidInput",
    "JobStatus",
    "Level",
    "OrchestratorError",
    "OutputChunk",
    "PkgbuildError",
    "Runner",
    "Settings",
    "SrcInfo",
    "Step",
    "Variant",
    "VariantError",
    "VariantPlan",
    "VariantRefused",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
