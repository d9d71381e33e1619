"""A run's status, and the named sets of statuses every part of labtui decides by."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run stands. The values are what session files and tables hold."""

    PENDING = "pending"  # queued, never started
    RUNNING = "running"  # training now (in this process, or in the session's writer)
    FINISHED = "finished"  # trained every step and evaluated
    DIVERGED = "diverged"  # stopped by a non-finite loss or gradient
    CANCELLED = "cancelled"  # stopped on request; resumable from its checkpoint
    INTERRUPTED = "interrupted"  # its process or worker died; resumable from its checkpoint
    FAILED = "failed"  # raised an error; retried on request (from its checkpoint if it has one)


# The order tables list statuses in.
STATUS_ORDER = (
    RunStatus.FINISHED, RunStatus.DIVERGED, RunStatus.RUNNING, RunStatus.PENDING,
    RunStatus.INTERRUPTED, RunStatus.CANCELLED, RunStatus.FAILED,
)  # fmt: skip
# How a run can end: the statuses its result holds (never pending or running).
ENDED = frozenset(RunStatus) - {RunStatus.PENDING, RunStatus.RUNNING}
# The run ended by itself: nothing left to do, and it counts in a study's outcome.
DONE = frozenset({RunStatus.FINISHED, RunStatus.DIVERGED})
# A resumable checkpoint continues the run where it stopped.
RESUMABLE = frozenset({RunStatus.INTERRUPTED, RunStatus.CANCELLED})
# What "finish the study" trains: never started, or stopped before the end.
TODO = frozenset({RunStatus.PENDING}) | RESUMABLE
# What a user may send back to training by hand (a failed run continues from a valid resume.pt).
RESTARTABLE = TODO | {RunStatus.FAILED}
