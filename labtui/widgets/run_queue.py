"""The run queue: one row per run; moving the cursor selects the run the other panes show."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from labtui.messages import RunSelected
from labtui.runview import RunView

COLUMNS = (  # key, label, width
    ("id", "run", 17),
    ("status", "status", 13),
    ("progress", "progress", 9),
    ("ppl", "val PPL", 7),
    ("variant", "variant", 9),
    ("seed", "seed", 4),
)
STATUS_STYLE = {
    "running": ("▶ running", "bold cyan"),
    "finished": ("✓ finished", "green"),
    "failed": ("✗ failed", "bold red"),
    "diverged": ("✗ diverged", "bold red"),
    "cancelled": ("■ cancelled", "yellow"),
    "interrupted": ("‖ interrupted", "yellow"),
    "queued": ("… queued", ""),
    "pending": ("· pending", "dim"),
}


def status_text(status: str) -> Text:
    label, style = STATUS_STYLE.get(status, (status, ""))
    return Text(
        label,
        style=style.replace("$accent", "cyan")
        .replace("green", "green")
        .replace("$error", "red")
        .replace("yellow", "yellow"),
    )


def progress_text(view: RunView, width: int = 4) -> Text:
    filled = round(view.progress * width)
    bar = "█" * filled + "░" * (width - filled)
    return Text(f"{bar} {100 * view.progress:3.0f}%")


class RunQueue(DataTable):
    """The runs of the session, in queue order."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.border_title = "Runs"

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def cells(self, view: RunView, queued: bool) -> dict[str, object]:
        status = (
            "queued"
            if queued and view.status in ("pending", "interrupted", "cancelled", "failed")
            else view.status
        )
        ppl = view.val_ppl
        return {
            "id": view.run_id,
            "status": status_text(status),
            "progress": progress_text(view),
            "ppl": Text(f"{ppl:.3f}" if ppl is not None else "—", justify="right"),
            "variant": view.variant,
            "seed": Text(str(view.spec.seed), justify="right"),
        }

    def show_run(self, view: RunView, queued: bool = False) -> None:
        """Add the run's row, or update it in place."""
        cells = self.cells(view, queued)
        if view.run_id not in self.rows:
            self.add_row(*(cells[k] for k, _, _ in COLUMNS), key=view.run_id)
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
