"""`labtui sessions` (placeholder until its owner writes it)."""

from __future__ import annotations


def sessions() -> None:
    """Not written yet."""
    raise SystemExit("labtui sessions: not implemented yet")
