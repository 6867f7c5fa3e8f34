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
    from .build.runner import BuildRequest, BuildResult, Runner
    from .build.srcinfo import SrcInfo
    from .build.variants import Variant, VariantPlan
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
    from .jobs.cancel import CancelReason, CancelToken
    from .jobs.status import JobStatus
    from .narration.events import Action, Event, Level
    from .settings import Settings

# Public name → the submodule that defines it; a unit test keeps this, ``__all__`` and the
# imports above in step.
_LAZY: dict[str, str] = {
    "Action": "narration.events",
    "ArchiveError": "errors",
    "ArchiveTooLarge": "errors",
    "Backend": "backend",
    "BackendError": "errors",
    "BackendUnavailable": "errors",
    "BuildRequest": "build.runner",
    "BuildResult": "build.runner",
    "CancelReason": "jobs.cancel",
    "CancelToken": "jobs.cancel",
    "ContainerGone": "errors",
    "Engine": "engine",
    "Event": "narration.events",
    "ImageNotFound": "errors",
    "InvalidInput": "errors",
    "JobStatus": "jobs.status",
    "Level": "narration.events",
    "OrchestratorError": "errors",
    "OutputChunk": "backend",
    "PkgbuildError": "errors",
    "Runner": "build.runner",
    "Settings": "settings",
    "SrcInfo": "build.srcinfo",
    "Step": "backend",
    "Variant": "build.variants",
    "VariantError": "errors",
    "VariantPlan": "build.variants",
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
