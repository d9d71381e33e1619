"""labtui's sessions layer: session folders, the study runner and its executors."""

from sessions.runner import StudyRunner
from sessions.store import (
    RunRecord,
    Session,
    SessionError,
    SessionSummary,
    default_root,
    list_sessions,
)

__all__ = [
    "RunRecord",
    "Session",
    "SessionError",
    "SessionSummary",
    "StudyRunner",
    "default_root",
    "list_sessions",
]
