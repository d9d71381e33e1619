"""`labtui sessions`: the sessions in the root, with their runs counted per status."""

from __future__ import annotations

from labtui.commands.options import RootOption
from labtui.errors import fail


def sessions(root: RootOption = None) -> None:
    """List the sessions: name, creation time, runs and how many are in each status."""
    from rich.console import Console
    from rich.table import Table

    from core.status import STATUS_ORDER, RunStatus
    from sessions.store import default_root, list_sessions

    where = root if root is not None else default_root()
    if where.exists() and not where.is_dir():
        fail(f"session root {where} is not a folder")
    found = list_sessions(where)
    console = Console()
    if not found:
        console.print(f"no sessions in {where}", markup=False, highlight=False)
        return
    shown = [
        st
        for st in STATUS_ORDER
        if st == RunStatus.FINISHED or any(s.counts.get(st) for s in found)
    ]
    table = Table(title=str(where), title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("runs", justify="right")
    for status in shown:
        table.add_column(status, justify="right")
    table.add_column("note")
    for s in found:
        counts = [str(s.counts.get(status, 0)) for status in shown]
        note = s.error or (f"written by {s.writer}" if s.writer else "")
        table.add_row(s.name, s.created[:16].replace("T", " "), str(s.total), *counts, note)
    console.print(table)
