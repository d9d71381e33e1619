"""A session's tables as CSV text or files: the one writer of `labtui export` and the console."""

from __future__ import annotations

from pathlib import Path

from sessions import atomic
from sessions.tables import EXPORTS

__all__ = ["EXPORTS", "csv_text", "export_csv"]


def csv_text(session, what: str = "results") -> tuple[str, int]:
    """``session.export(what)`` as CSV text, and its number of rows (SessionError: bad ``what``)."""
    frame = session.export(what)
    return frame.to_csv(index=False), len(frame)


def export_csv(session, what: str, path: Path | str) -> int:
    """Write ``session.export(what)`` to ``path`` atomically (whole, or not at all); returns
    the rows written. Raises SessionError or OSError."""
    text, rows = csv_text(session, what)
    atomic.write_text(Path(path), text)
    return rows
