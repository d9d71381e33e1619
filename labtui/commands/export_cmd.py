"""`labtui export` (placeholder until its owner writes it)."""

from __future__ import annotations


def export() -> None:
    """Not written yet."""
    raise SystemExit("labtui export: not implemented yet")
