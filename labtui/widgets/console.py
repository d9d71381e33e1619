"""The main screen: header, run queue, gauge, plots, results grid, footer; and its keys."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from labtui.widgets.gauge import NormGauge
from labtui.widgets.header import LabHeader
from labtui.widgets.plots import CurvePlot
from labtui.widgets.results_grid import ResultsGrid
from labtui.widgets.run_queue import RunQueue

MIN_SIZE = (80, 24)
COMPACT_BELOW = (110, 32)  # below either: narrower panes, one plot at a time (v switches)


class ConsoleScreen(Screen):
    """Everything the user watches; the actions live on the app."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "n",
            "app.new_run",
            "New",
            id="new_run",
            tooltip="New run: a form for variant, seed, iterations and learning rate",
        ),
        Binding(
            "s",
            "app.queue_study",
            "Study",
            id="queue_study",
            tooltip="Queue the whole default study (every variant x every seed)",
        ),
        # priority: the tables would take enter for themselves
        Binding(
            "enter",
            "app.start_queue",
            "Start",
            id="start_queue",
            priority=True,
            tooltip="Start the queue: train the pending and interrupted runs in order",
        ),
        Binding(
            "c",
            "app.cancel_run",
            "Cancel",
            id="cancel_run",
            tooltip="Cancel the selected run (it stays resumable) or take it off the queue",
        ),
        Binding(
            "C",
            "app.cancel_all",
            "Cancel all",
            id="cancel_all",
            show=False,
            tooltip="Cancel the run in flight and empty the queue",
        ),
        Binding(
            "r",
            "app.resume_run",
            "Resume",
            id="resume_run",
            tooltip="Resume an interrupted or cancelled run, or retry a failed one",
        ),
        Binding(
            "t",
            "app.traceback",
            "Traceback",
            id="traceback",
            show=False,
            tooltip="Show the traceback of the selected failed run",
        ),
        Binding(
            "g",
            "app.toggle_grouped",
            "Grouped",
            id="toggle_grouped",
            tooltip="Plots: one line per variant (mean over seeds, min-max band, N)",
        ),
        Binding(
            "x",
            "app.cycle_x",
            "X axis",
            id="cycle_x",
            tooltip="Plots: x-axis cycles step / tokens / seconds",
        ),
        Binding(
            "l",
            "app.toggle_log",
            "Log",
            id="toggle_log",
            tooltip="Plots: log-scale y (values <= 0 sit at the bottom)",
        ),
        Binding(
            "m",
            "app.toggle_smooth",
            "Smooth",
            id="toggle_smooth",
            tooltip="Plots: draw a smoothed curve over the raw one",
        ),
        Binding(
            "v",
            "app.toggle_plot",
            "Loss/grad",
            id="toggle_plot",
            show=False,
            tooltip="Small terminals: switch the plot between loss and gradient norm",
        ),
        Binding(
            "e",
            "app.export",
            "Export",
            id="export",
            tooltip="Export results, metrics and evals as CSV into the session's export/",
        ),
        Binding(
            "p",
            "app.report",
            "Report",
            id="report",
            tooltip="Write the report (stats, markdown, figures) into the session's report/",
        ),
        Binding("question_mark", "app.help", "Help", id="help", tooltip="This help"),
        Binding(
            "q",
            "app.quit",
            "Quit",
            id="quit",
            tooltip="Quit (asks when runs are training; they are cancelled and saved)",
        ),
    ]

    def compose(self) -> ComposeResult:
        yield LabHeader(id="header")
        with Vertical(id="main"):
            with Horizontal(id="top"):
                with Vertical(id="left"):
                    yield RunQueue(id="queue")
                    yield NormGauge(id="gauge")
                with Vertical(id="plots"):
                    yield CurvePlot("loss", "loss", id="loss-plot")
                    yield CurvePlot("grad_norm", "grad norm", id="grad-plot", classes="-off")
            yield ResultsGrid(id="results")
        yield Static("", id="too-small")
        yield Footer()

    def on_mount(self) -> None:
        self.app.console_mounted(self)

    def on_resize(self, event: events.Resize) -> None:
        self.fit(event.size.width, event.size.height)

    def fit(self, width: int, height: int) -> None:
        """Collapse panes on small terminals; below the minimum, say so instead."""
        too_small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        self.set_class(too_small, "-too-small")
        self.set_class(width < COMPACT_BELOW[0] or height < COMPACT_BELOW[1], "-compact")
        if too_small:
            self.query_one("#too-small", Static).update(
                f"labtui needs at least {MIN_SIZE[0]}×{MIN_SIZE[1]} (now {width}×{height})"
            )
