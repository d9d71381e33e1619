"""The study chooser (`s`): the built-in studies with their purpose, runs and estimated wall time.

The estimates (sessions.estimates) are made in a thread worker, one study after another, and
filled in as they come: the first may measure the step time on this device for a few seconds
(then it is cached). Closing the chooser cancels the worker before its next study.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static
from textual.worker import get_current_worker

from core.spec import Study
from labtui.plotting import format_duration

WIDTH = 110  # the dialog's width on a wide terminal (#chooser in labtui.tcss)
FIXED = {"name": 14, "runs": 5, "estimate": 10}  # columns other than the purpose
MEASURING = "measuring the step time of this model on this device (a few seconds, once)…"


def study_choices(given: Study | None, device: str) -> list[tuple[str, Study]]:
    """What the chooser offers: ``given`` (the console's own study) as "custom" when there is
    one, then the built-in studies (the protocol first) on ``device``, the console's."""
    from core.presets import load_preset, preset_names

    choices = [("custom", given)] if given is not None else []
    for name in preset_names():
        study = load_preset(name)
        choices.append((name, dataclasses.replace(study, base=study.base.replace(device=device))))
    return choices


class StudyChooser(ModalScreen[Study | None]):
    """Pick a study (``enter``) to add to the session; ``escape`` closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="chooser_close")
    ]

    def __init__(self, choices: list[tuple[str, Study]], measure: bool = True) -> None:
        super().__init__()
        self.choices = dict(choices)  # name -> study, in the order shown
        self.measure = measure  # False while runs train: a step timed now would be too slow
        self.hows: dict[str, str] = {}  # name -> how its estimate was made (or why it failed)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="chooser"):
            yield Label("Add a study to the session", classes="dialog-title")
            yield DataTable(id="studies", cursor_type="row", zebra_stripes=True)
            yield Static(MEASURING, id="estimate-how", classes="dim")
            yield Label("enter adds the highlighted study · escape closes", classes="dim")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        inner = min(WIDTH, self.app.size.width) - 6  # border and padding of the dialog
        purpose = max(16, inner - sum(FIXED.values()) - 2 * 4 - 2)  # cell padding, scrollbar
        table.add_column("study", key="name", width=FIXED["name"])
        table.add_column("purpose", key="purpose", width=purpose)
        table.add_column("runs", key="runs", width=FIXED["runs"])
        table.add_column("estimate", key="estimate", width=FIXED["estimate"])
        for name, study in self.choices.items():
            table.add_row(
                name,
                Text(study.description or "—", no_wrap=True, overflow="ellipsis"),
                Text(f"{study.size:,}", justify="right"),
                Text("…", justify="right"),
                key=name,
            )
        table.focus()
        self.estimate_all()

    @work(thread=True, exclusive=True, group="estimates", exit_on_error=False)
    def estimate_all(self) -> None:
        from sessions.estimates import NotMeasured, estimate

        worker = get_current_worker()
        for name, study in self.choices.items():
            if worker.is_cancelled:
                return
            try:
                guess = estimate(study, measure=self.measure)
                cell, how = f"~{format_duration(guess.seconds)}", guess.how
            except NotMeasured as err:
                cell, how = "—", f"{err}: not now, while runs train (`labtui studies` measures)"
            except Exception as err:  # e.g. a device this machine lacks: said, not raised
                cell, how = "—", f"no estimate: {type(err).__name__}: {err}"
            if worker.is_cancelled:
                return
            self.app.call_from_thread(self.show_estimate, name, cell, how)

    def show_estimate(self, name: str, cell: str, how: str) -> None:
        if not self.is_attached:
            return
        self.hows[name] = how
        self.query_one(DataTable).update_cell(name, "estimate", Text(cell, justify="right"))
        if self.highlighted == name:
            self._show_how(name)

    @property
    def highlighted(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show_how(event.row_key.value)

    def _show_how(self, name: str) -> None:
        how = self.hows.get(name)
        text = f"estimate ({name}): {how}" if how else MEASURING
        self.query_one("#estimate-how", Static).update(text)

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(self.choices[event.row_key.value])

    def action_close(self) -> None:
        self.dismiss(None)
