"""`labtui run` (placeholder until its owner writes it)."""

from __future__ import annotations


def run() -> None:
    """Not written yet."""
    raise SystemExit("labtui run: not implemented yet")
