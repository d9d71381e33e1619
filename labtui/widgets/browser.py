"""The session browser (`b`): every session under the root, as `labtui sessions` lists them.

sessions.listing.list_sessions reads them in a thread worker (a root of many sessions takes a
moment); `enter` dismisses the browser with the chosen session's folder name and the app opens
it. Rows go by folder name: a session folder copied under another name holds the same name in
its session.json, and each copy is a row of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static
from textual.worker import Worker, WorkerState

SWITCHING = (
    "enter opens the highlighted session here · escape closes. While runs train, opening "
    "another session asks first: they are cancelled and stay resumable. A session another "
    "process writes opens read-only; enter on it again shows it as it is now."
)


class SessionBrowser(ModalScreen[str | None]):
    """Pick a session (``enter``); ``escape`` closes. ``current`` is the folder name of the
    console's own."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="browser_close")
    ]

    def __init__(self, root: Path | None, current: str | None) -> None:
        super().__init__()
        self.root = root
        self.current = current
        self.found: dict[str, object] = {}  # folder name -> sessions.listing.SessionSummary

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="browser"):
            yield Label("Sessions", classes="dialog-title", id="browser-title")
            yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
            yield Static("reading the sessions…", id="browser-note", classes="dim")

    def on_mount(self) -> None:
        from sessions.listing import list_sessions
        from sessions.store import default_root

        root = self.root if self.root is not None else default_root()
        self.query_one("#browser-title", Label).update(f"Sessions in {shown_path(root)}")
        self.run_worker(
            lambda: list_sessions(root),
            name="sessions",
            group="sessions",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "sessions":
            return
        note = self.query_one("#browser-note", Static)
        if event.state == WorkerState.SUCCESS:
            self.show(event.worker.result)
            note.update(SWITCHING if self.found else "no sessions yet · escape closes")
        elif event.state == WorkerState.ERROR:
            note.update(Text(f"cannot list the sessions: {event.worker.error}", style="bold red"))

    def show(self, found: list) -> None:
        from sessions.listing import listed_statuses

        self.found = {s.path.name: s for s in found}
        statuses = listed_statuses(found)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # what tells sessions apart first: a narrow terminal scrolls to the rest
        for key in ("session", "study", "best PPL", "created", *statuses, "runs", "note"):
            table.add_column(key, key=key)
        for s in reversed(found):  # the newest first
            folder = s.path.name
            note = s.error or (
                "open here"
                if folder == self.current
                else f"written by {s.writer}: read-only"
                if s.writer
                else ""
            )
            style = "bold red" if s.error else "bold" if folder == self.current else ""
            mark = " (open)" if folder == self.current else " (locked)" if s.writer else ""
            table.add_row(
                Text(folder + mark, style=style),
                s.study,
                Text("—" if s.best_ppl is None else f"{s.best_ppl:.3f}", justify="right"),
                s.created[:16].replace("T", " "),
                *(Text(str(s.counts.get(st, 0)), justify="right") for st in statuses),
                Text(str(s.total), justify="right"),
                Text(note, style="red" if s.error else "dim"),
                key=folder,
            )
        table.focus()

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        summary = self.found.get(event.row_key.value)
        if summary is None:
            return
        if summary.error:
            self.notify(f"{summary.name}: {summary.error}", title="Session", severity="error")
            return
        self.dismiss(summary.path.name)

    def action_close(self) -> None:
        self.dismiss(None)


def shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (the default root is)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (OSError, ValueError):
        return str(path)
