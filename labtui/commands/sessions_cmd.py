"""`labtui sessions`: the sessions in the root: their study, runs counted per status, best PPL.

The console's session browser (labtui.widgets.browser) shows the same list
(sessions.listing.list_sessions).
"""

from __future__ import annotations

from labtui.commands.options import RootOption
from labtui.errors import fail


def sessions(root: RootOption = None) -> None:
    """List the sessions: name, creation time, study, runs per status and the best val PPL."""
    from rich.console import Console
    from rich.table import Table

    from sessions.listing import list_sessions, listed_statuses
    from sessions.store import default_root

    where = root if root is not None else default_root()
    if where.exists() and not where.is_dir():
        fail(f"session root {where} is not a folder")
    found = list_sessions(where)
    console = Console()
    if not found:
        console.print(f"no sessions in {where}", markup=False, highlight=False)
        return
    shown = listed_statuses(found)
    table = Table(title=str(where), title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("runs", justify="right", min_width=4)
    for status in shown:
        table.add_column(status, justify="right", min_width=4)
    table.add_column("best PPL", justify="right", min_width=7)
    table.add_column("study", min_width=12)  # wraps on a narrow terminal
    table.add_column("note")
    for s in found:
        counts = [str(s.counts.get(status, 0)) for status in shown]
        note = s.error or (f"written by {s.writer}" if s.writer else "")
        best = "—" if s.best_ppl is None else f"{s.best_ppl:.3f}"
        created = s.created[:16].replace("T", " ")
        table.add_row(s.name, created, str(s.total), *counts, best, s.study, note)
    console.print(table)
