"""The one table of how a job ends, worded with its kind's noun ("Build", "Install", "Download").

Whoever notices a cancel asks ``cancel_result`` for the job's result; whoever ends the job asks
``ending_event`` for its last narration line. Nothing else words an ending.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..narration.events import Action, Event, Level
from .cancel import CancelReason, CancelToken
from .result import JobResult
from .status import JobStatus


@dataclass(frozen=True, slots=True)
class Ending:
    status: JobStatus
    action: Action
    message: str  # with {noun}: the kind's noun


ENDINGS: dict[CancelReason, Ending] = {
    CancelReason.USER: Ending(JobStatus.CANCELLED, Action.CANCELLED, "❌ {noun} cancelled by user"),
    CancelReason.TIMEOUT: Ending(JobStatus.TIMED_OUT, Action.TIMED_OUT, "⏱️ {noun} timed out"),
    CancelReason.SHUTDOWN: Ending(
        JobStatus.INTERRUPTED,
        Action.INTERRUPTED,
        "⚠️ {noun} interrupted: the service is shutting down",
    ),
    # A failure, not a choice: the job is stopped because its results could not be kept.
    CancelReason.DISK_FULL: Ending(
        JobStatus.FAILED, Action.FAILED, "stopped: the data disk is full"
    ),
}


def cancel_result(
    reason: CancelReason | CancelToken,
    noun: str,
    *,
    after_s: float | None = None,
    detail: str | None = None,
) -> JobResult:
    """How a job of ``noun`` that was stopped for ``reason`` (or by a token, with what it
    recorded) ended."""
    if isinstance(reason, CancelToken):
        assert reason.reason is not None, "the token was not cancelled"
        after_s, detail, reason = reason.after_s, reason.detail, reason.reason
    message = ENDINGS[reason].message.format(noun=noun)
    if reason is CancelReason.TIMEOUT and after_s is not None:
        message += f" after {after_s:g} s"
    if detail:
        message += f" ({detail})"
    return JobResult(ENDINGS[reason].status, message)


def unstarted_result(noun: str) -> JobResult:
    """A job cancelled by its user while it still waited in the queue."""
    return JobResult(
        JobStatus.CANCELLED,
        f"{ENDINGS[CancelReason.USER].message.format(noun=noun)} before it started",
    )


def interrupted_result(noun: str) -> JobResult:
    """A job whose task was cancelled under it: the service stopped without the token."""
    return JobResult(JobStatus.INTERRUPTED, f"the service stopped during the {noun.lower()}")


def stopped_by(reason: CancelReason | None, status: JobStatus) -> bool:
    """Whether a job that ended with ``status`` was stopped for ``reason`` (a cancel that came
    too late to stop anything leaves the job's own ending)."""
    return reason is not None and ENDINGS[reason].status is status


def ending_event(result: JobResult, noun: str) -> Event:
    """The last narration line of a job: how it ended (cancel reasons are whole sentences)."""
    for ending in ENDINGS.values():
        if result.status is ending.status and ending.status is not JobStatus.FAILED:
            level = Level.ERROR if ending.status is JobStatus.TIMED_OUT else Level.WARNING
            return Event(ending.action, result.reason, level)
    if result.status is JobStatus.SUCCEEDED:
        return Event(Action.SUCCEEDED, result.ending or f"✅ {noun} succeeded: {result.reason}")
    return Event(Action.FAILED, f"❌ {noun} failed: {result.reason}", Level.ERROR)
