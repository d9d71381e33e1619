"""The run queue: one row per run; moving the cursor selects the run the other panes show.

A run's row shows its variant, seed and the value of every swept axis (e.g. lr) in columns of
their own, so two cells of a sweep never look alike.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from core.status import RESTARTABLE, RunStatus
from labtui.messages import RunSelected
from labtui.runview import RunView, axis_text, short_id

HEAD = (("id", "run", 4), ("variant", "variant", 9), ("seed", "seed", 4))  # key, label, width
TAIL = (("status", "status", 13), ("progress", "progress", 9), ("ppl", "val PPL", 8))
QUEUED = "queued"  # shown for a run in the runner's queue, or handed over and not started yet
STATUS_STYLE = {
    RunStatus.RUNNING: ("▶ running", "bold cyan"),
    RunStatus.FINISHED: ("✓ finished", "green"),
    RunStatus.FAILED: ("✗ failed", "bold red"),
    RunStatus.DIVERGED: ("✗ diverged", "bold red"),
    RunStatus.CANCELLED: ("■ cancelled", "yellow"),
    RunStatus.INTERRUPTED: ("‖ interrupted", "yellow"),
    RunStatus.PENDING: ("· pending", "dim"),
    QUEUED: ("… queued", ""),
}


def status_text(status: str) -> Text:
    label, style = STATUS_STYLE.get(status, (status, ""))
    return Text(label, style=style)


def progress_text(view: RunView, width: int = 4) -> Text:
    filled = round(view.progress * width)
    bar = "█" * filled + "░" * (width - filled)
    return Text(f"{bar} {100 * view.progress:3.0f}%")


def ppl_text(view: RunView) -> Text:
    if view.status == RunStatus.DIVERGED:
        return Text("diverged", style="bold red", justify="right")
    ppl = view.val_ppl
    return Text(f"{ppl:.3f}" if ppl is not None else "—", justify="right")


class RunQueue(DataTable):
    """The runs of the session, in queue order."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.border_title = "Runs"
        self.axes: tuple[str, ...] = ()

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        axes = tuple((a, a, max(5, len(a))) for a in self.axes)
        for key, label, width in (*HEAD, *axes, *TAIL):
            self.add_column(label, key=key, width=width)

    def reset(self) -> None:
        """No rows, no axis columns."""
        self.axes = ()
        self.clear(columns=True)
        self._add_columns()

    def set_axes(self, axes: list[str]) -> bool:
        """Give every swept axis a column; True when that emptied the table (show_run each
        run again)."""
        if tuple(axes) == self.axes:
            return False
        self.axes = tuple(axes)
        self.clear(columns=True)
        self._add_columns()
        return True

    def cells(self, view: RunView, queued: bool) -> dict[str, object]:
        status = QUEUED if queued and view.status in RESTARTABLE else view.status
        return {
            "id": short_id(view.run_id),
            "variant": view.variant,
            "seed": Text(str(view.spec.seed), justify="right"),
            **{a: Text(axis_text(getattr(view.spec, a)), justify="right") for a in self.axes},
            "status": status_text(status),
            "progress": progress_text(view),
            "ppl": ppl_text(view),
        }

    def show_run(self, view: RunView, queued: bool = False) -> None:
        """Add the run's row, or update it in place."""
        cells = self.cells(view, queued)
        if view.run_id not in self.rows:
            self.add_row(*cells.values(), key=view.run_id)
            return
        for key, value in cells.items():
            self.update_cell(view.run_id, key, value)

    @property
    def selected(self) -> str | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def select(self, run_id: str) -> None:
        if run_id in self.rows:
            self.move_cursor(row=self.get_row_index(run_id))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value is not None:
            self.post_message(RunSelected(event.row_key.value))
