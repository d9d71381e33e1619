"""labtui's sessions layer: session folders, the study runner and its executors."""

from sessions.listing import SessionSummary, list_sessions
from sessions.runner import StudyRunner
from sessions.store import RunRecord, Session, SessionError, default_root

__all__ = [
    "RunRecord",
    "Session",
    "SessionError",
    "SessionSummary",
    "StudyRunner",
    "default_root",
    "list_sessions",
]
