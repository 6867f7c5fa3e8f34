"""orchestrator: builds PKGBUILDs in throwaway Docker containers, with live narration and cancel."""

from ._version import __version__
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
