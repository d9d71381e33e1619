"""Progress of `labtui run` on stderr: rich bars on a terminal, one line per run otherwise."""

from __future__ import annotations

import math
import threading

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from core.events import RunFinished, RunStarted, StepLogged
from core.status import RunStatus


class RunProgress:
    """Turns engine events into an overall bar (steps of all runs, ETA) and a per-run bar.

    ``plan`` maps each run id to the steps it still has to train, as estimated beforehand.
    Events arrive from the training thread; rich's Progress is thread-safe.
    """

    def __init__(self, plan: dict[str, int], console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.plan = dict(plan)
        self.n_runs = len(plan)
        self.done = 0
        self.ended: dict[str, str] = {}  # run id -> status, for the runs that ended here
        self.live = self.console.is_terminal
        self._mutex = threading.Lock()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.live,
        )
        self.overall = self.progress.add_task(
            self._overall_text(), total=max(1, sum(plan.values())), info=""
        )
        self.current = self.progress.add_task("waiting", total=1, info="", visible=False)

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_event(self, event: object) -> None:
        if isinstance(event, StepLogged):
            self.progress.update(
                self.current,
                completed=event.step,
                info=f"loss {event.loss:.4f}  {event.tokens_per_s:,.0f} tok/s",
            )
            self.progress.advance(self.overall)
        elif isinstance(event, RunStarted):
            planned = self.plan.get(event.run_id, event.spec.iters)
            actual = event.spec.iters - event.start_step
            if actual != planned:  # resumed from an earlier checkpoint than estimated
                total = self.progress.tasks[self.overall].total or 0
                self.progress.update(self.overall, total=total + actual - planned)
            self.progress.reset(
                self.current,
                total=event.spec.iters,
                completed=event.start_step,
                description=event.run_id,
                info="resumed" if event.start_step else "",
                visible=True,
            )
            start = f", resumed at step {event.start_step}" if event.start_step else ""
            self.console.print(
                f"{event.run_id}: {event.n_params:,} parameters on {event.device_name}{start}",
                markup=False,
                highlight=False,
            )
        elif isinstance(event, RunFinished):
            self._finished(event)

    def note(self, text: str) -> None:
        self.console.print(text)

    def _finished(self, event: RunFinished) -> None:
        result = event.result
        with self._mutex:
            self.done += 1
            self.ended[event.run_id] = result.status
        self.progress.update(self.overall, description=self._overall_text())
        line = f"[{self.done}/{self.n_runs}] {event.run_id} {result.status}"
        if result.val_loss is not None:
            line += f"  val_loss {result.val_loss:.4f}  val_ppl {result.val_ppl:.3f}"
        if result.error:
            line += f"  ({result.error})"
        line += f"  {result.wall_s:.1f}s"
        self.console.print(line, markup=False, highlight=False)

    def _overall_text(self) -> str:
        return f"overall {self.done}/{self.n_runs} runs"


def results_table(frame) -> Table:
    """A compact table of a session's results frame; a diverged run reads "diverged"."""
    table = Table(show_edge=False, pad_edge=False)
    columns = ["run_id", "status", "val_loss", "val_ppl", "accuracy", "max_grad_norm", "wall_s"]
    for column in columns:
        left = column in ("run_id", "status")
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for row in frame.itertuples(index=False):
        values = []
        for column in columns:
            value = getattr(row, column)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            if missing:
                value = "diverged" if row.status == RunStatus.DIVERGED else "–"
            elif isinstance(value, float):
                value = f"{value:.4f}"
            values.append(str(value))
        table.add_row(*values)
    return table
