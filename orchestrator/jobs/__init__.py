"""The job vocabulary, below every kind of job and the registry that runs them: status, cancel
token, result, sink, the one table of endings, the time limit, and what a kind declares."""

from .cancel import CancelReason, CancelToken
from .endings import (
    ENDINGS,
    Ending,
    cancel_result,
    ending_event,
    interrupted_result,
    stopped_by,
    unstarted_result,
)
from .kind import Adoptable, Concludable, Job, Kind, Plan, Submission
from .result import JobResult, Sink, Work, failed_after
from .run import parse_timeout, perform
from .status import JobStatus
from .subjects import Subjects

__all__ = [
    "ENDINGS",
    "Adoptable",
    "CancelReason",
    "CancelToken",
    "Concludable",
    "Ending",
    "Job",
    "JobResult",
    "JobStatus",
    "Kind",
    "Plan",
    "Sink",
    "Subjects",
    "Submission",
    "Work",
    "cancel_result",
    "ending_event",
    "failed_after",
    "interrupted_result",
    "parse_timeout",
    "perform",
    "stopped_by",
    "unstarted_result",
]
