"""Help and traceback screens."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

ABOUT = (
    "Runs train one after another in a background thread; the screen stays live. "
    "Every event is saved in the session folder, so a session can be reopened with "
    "`labtui --session NAME` or b, and interrupted runs resumed with r. One session is open at "
    "a time: opening another while runs train asks first, then cancels them (resumable); a "
    "session another process writes opens read-only. s, enter, enter trains the protocol. "
    "Mouse works too: click a run to select it."
)


def keys_table(bindings: list[Binding]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for b in bindings:
        key = {"question_mark": "?", "enter": "enter"}.get(b.key, b.key)
        table.add_row(key, b.tooltip or b.description)
    return table


class HelpScreen(ModalScreen[None]):
    """The console's keys, with a sentence each."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help_close")
    ]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Label("labtui keys", classes="dialog-title")
            yield Static(keys_table(self.bindings))
            yield Static(Text(ABOUT, style="dim"), id="help-about")
            yield Label("escape closes", classes="dim")


class TracebackScreen(ModalScreen[None]):
    """The full traceback of a failed run."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,t", "close", "Close", id="tb_close")]

    def __init__(self, run_id: str, text: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="traceback"):
            yield Label(f"{self.run_id} failed", classes="dialog-title")
            yield Static(Text(self.text), id="traceback-text")
            yield Label("escape closes", classes="dim")

    def action_close(self) -> None:
        self.dismiss(None)
