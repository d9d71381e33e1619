"""The trade-off view (`w`): final PPL against a swept axis, one line per variant.

The numbers are core.tradeoff.sweep_table's over the session's results, with the loss at
initialization of sessions.report.initial_loss: the same table as `labtui report`'s (a diverged
run counts as the vocabulary size, and each cell says how many diverged). They are computed in a
thread worker, again whenever a run ends while the view is open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState
from textual_plotext import PlotextPlot

from core.stats import fmt, variant_order
from core.status import DONE
from labtui import plotting as P
from labtui.widgets.console import COMPACT_BELOW
from labtui.widgets.plots import OTHER_COLORS, VARIANT_COLORS

DIVERGED = (255, 60, 60)
DIVERGED_MARK = "✗"
# key, label: the columns of the report's per-cell table that the view shows (sweep_cell_rows)
COLUMNS = (
    ("variant", "variant"),
    ("n_done", "done"),
    ("n_diverged", "diverged"),
    ("n_spiked", "spiked"),
    ("final_ppl", "final PPL"),
    ("ppl_mean", "PPL (finished)"),
    ("ci", "95% CI"),
)


@dataclass(frozen=True)
class Sweep:
    """What the view shows: core.tradeoff.sweep_table along ``axis`` and where loss0 came from."""

    axis: str
    axes: list[str]  # every swept axis of the session (besides variant and seed)
    others: list[str]
    table: pd.DataFrame
    loss0: float
    note: str  # sessions.report.initial_loss's line
    waiting: int  # runs not done yet (pending, running, cancelled...)


def compute(session, axis: str) -> Sweep:
    """The sweep table of ``session`` along ``axis`` (its other swept axes as cells)."""
    from core.tradeoff import sweep_table
    from sessions.report import initial_loss

    axes = session.axes()
    records = session.runs()
    loss0, note = initial_loss(session, records)
    others = [a for a in axes if a != axis]
    table = sweep_table(session.results(), axis, loss0, others)
    waiting = sum(1 for r in records if r.status not in DONE)
    return Sweep(axis, axes, others, table, loss0, note, waiting)


def cell_rows(sweep: Sweep) -> list[list[str]]:
    """The table's rows as the report prints them (core.stats.fmt)."""
    from sessions.report import ci_text

    rows = []
    for r in sweep.table.itertuples():
        spiked = r.n_spiked if math.isnan(r.n_spiked) else int(r.n_spiked)
        rows.append(
            [
                *(fmt(getattr(r, a)) for a in (*sweep.others, sweep.axis)),
                r.variant,
                str(r.n_done),
                str(r.n_diverged),
                fmt(spiked),
                fmt(r.final_ppl),
                fmt(r.ppl_mean),
                ci_text(r.ppl_ci_low, r.ppl_ci_high),
            ]
        )
    return rows


class TradeoffPlot(PlotextPlot):
    """Final PPL against the swept axis: a line per variant (and cell of the other axes), each
    cell where runs diverged marked with ✗ and how many."""

    def draw(self, sweep: Sweep, log_y: bool) -> None:
        plt = self.plt
        plt.clear_figure()
        mono = self.app.no_color
        table = sweep.table
        x_axis = P.sweep_axis(sweep.axis, table[sweep.axis])
        plotted = []  # (x, y) of every point drawn
        diverged: dict[tuple[float, float], int] = {}  # runs diverged at each point drawn
        lines = table.groupby([*sweep.others, "variant"], sort=False, dropna=False)
        order = variant_order(table["variant"])
        for i, (key, rows) in enumerate(sorted(lines, key=lambda g: _line_order(g[0], order))):
            variant = key[-1] if isinstance(key, tuple) else key
            rows = rows[rows["final_ppl"].notna()].sort_values(sweep.axis)
            if rows.empty:
                continue
            xs = [x_axis.positions[v] for v in rows[sweep.axis]]
            ys = list(rows["final_ppl"].astype(float))
            if log_y:
                ys = list(np.log10(ys))
            color = "default" if mono else VARIANT_COLORS.get(variant, OTHER_COLORS[i % 3])
            label = " ".join([variant, *(f"{a}={_short(v)}" for a, v in _cell(key, sweep))])
            plt.plot(xs, ys, color=color, marker="braille", label=label)
            plt.scatter(xs, ys, color=color, marker="●" if not mono else "•")
            for x, y, n in zip(xs, ys, rows["n_diverged"], strict=True):
                if n:  # lines that meet at a point (all diverged) share one mark
                    diverged[(x, y)] = diverged.get((x, y), 0) + int(n)
            plotted += list(zip(xs, ys, strict=True))
        for (x, y), n in diverged.items():
            plt.text(f"{DIVERGED_MARK}{n}", x, y, color="default" if mono else DIVERGED)
        plt.xticks(x_axis.ticks, x_axis.labels)
        if plotted:
            lo, hi = min(x for x, _ in plotted), max(x for x, _ in plotted)
            pad = 0.08 * (hi - lo) if hi > lo else 0.5
            plt.xlim(lo - pad, hi + pad)
        if log_y and plotted:
            ticks, labels = P.log_ticks(min(y for _, y in plotted), max(y for _, y in plotted))
            plt.yticks(ticks, labels)
        parts = [f"final PPL vs {sweep.axis}"]
        parts += ["log x"] if x_axis.log else []
        parts += ["log y"] if log_y else []
        parts += [] if plotted else ["no run done yet"]
        plt.title(" · ".join(parts))
        self.refresh()


def _cell(key, sweep: Sweep) -> list[tuple[str, object]]:
    values = key if isinstance(key, tuple) else (key,)
    return list(zip(sweep.others, values[:-1], strict=True))


def _line_order(key, order: list[str]) -> tuple:
    values = key if isinstance(key, tuple) else (key,)
    variant = values[-1]
    return (*map(str, values[:-1]), order.index(variant) if variant in order else len(order))


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class TradeoffScreen(Screen):
    """The trade-off of the session along one swept axis; `a` moves to the next axis."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,w", "close", "Close", id="tradeoff_close"),
        Binding("a", "next_axis", "Next axis", id="tradeoff_axis"),
        Binding("l", "toggle_log", "Log PPL", id="tradeoff_log"),
    ]

    def __init__(self, session, axes: list[str]) -> None:
        super().__init__()
        self.session = session
        self.axes = list(axes)
        self.axis = self.axes[0]
        self.log_y = False
        self.sweep: Sweep | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="tradeoff-title")
        yield TradeoffPlot(id="tradeoff-plot")
        yield DataTable(id="tradeoff-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="tradeoff-note", classes="dim")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tradeoff-title", Static).update(self._title("computing…"))
        self.reload()

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.height < COMPACT_BELOW[1], "-compact")

    def _title(self, state: str) -> Text:
        return Text.assemble(
            ("trade-off", "bold"), " │ ", (self.session.name, "bold"), f" │ {self.axis} │ ", state
        )

    def reload(self) -> None:
        """Compute the table again (a run ended, or the axis changed)."""
        session, axis = self.session, self.axis
        self.run_worker(
            lambda: compute(session, axis),
            name="trade-off",
            group="tradeoff",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "tradeoff":
            return
        if event.state == WorkerState.SUCCESS and event.worker.result.axis == self.axis:
            self.show(event.worker.result)
        elif event.state == WorkerState.ERROR:
            error = f"cannot compute the trade-off: {event.worker.error}"
            self.query_one("#tradeoff-note", Static).update(Text(error, style="bold red"))

    def show(self, sweep: Sweep) -> None:
        self.sweep, self.axes = sweep, sweep.axes
        runs = "every run done" if not sweep.waiting else f"{sweep.waiting} run(s) not done yet"
        self.query_one("#tradeoff-title", Static).update(self._title(runs))
        self.query_one(TradeoffPlot).draw(sweep, self.log_y)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        for key in (*sweep.others, sweep.axis):
            table.add_column(key, key=key)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        for i, row in enumerate(cell_rows(sweep)):
            cells = [Text(v, justify="right") for v in row]
            at = len(sweep.others) + 1  # the variant, left-aligned
            cells[at] = Text(row[at])
            n = int(sweep.table["n_diverged"].iloc[i])
            if n:
                cells[at + 2] = Text(row[at + 2], style="bold red", justify="right")
            table.add_row(*cells, key=str(i))
        self.query_one("#tradeoff-note", Static).update(
            f"{DIVERGED_MARK}n: n runs of the cell diverged. {sweep.note}"
        )

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_next_axis(self) -> None:
        if len(self.axes) > 1:
            self.axis = self.axes[(self.axes.index(self.axis) + 1) % len(self.axes)]
            self.query_one("#tradeoff-title", Static).update(self._title("computing…"))
            self.reload()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        if self.sweep is not None:
            self.query_one(TradeoffPlot).draw(self.sweep, self.log_y)
