"""The main screen: header, run queue, gauge, plots, results grid, footer; and its keys."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from labtui.plotting import PlotOptions
from labtui.widgets.gauge import NormGauge
from labtui.widgets.header import HeaderInfo, LabHeader
from labtui.widgets.plots import CurvePlot
from labtui.widgets.results_grid import ResultsGrid
from labtui.widgets.run_queue import RunQueue

if TYPE_CHECKING:
    import pandas as pd

    from labtui.runview import RunView

MIN_SIZE = (80, 24)
COMPACT_BELOW = (110, 32)  # below either: narrower panes, one plot at a time (v switches)


class ConsoleScreen(Screen):
    """Everything the user watches. How the plots are drawn (``opts``) is the screen's; the
    actions on runs and the session live on the app."""

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
            tooltip="Add a study: a chooser of the built-in ones, with runs and estimated time",
        ),
        # priority: the tables would take enter for themselves
        Binding(
            "enter",
            "app.start_queue",
            "Start",
            id="start_queue",
            priority=True,
            tooltip="Start: queue the pending, interrupted and cancelled runs, train them in order",
        ),
        Binding(
            "c",
            "app.cancel_run",
            "Cancel",
            id="cancel_run",
            tooltip="Cancel the selected run (it stays resumable), or take it off the queue",
        ),
        Binding(
            "C",
            "app.cancel_all",
            "Cancel all",
            id="cancel_all",
            show=False,
            tooltip="Cancel the runs in flight and empty the queue",
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
            "toggle_grouped",
            "Grouped",
            id="toggle_grouped",
            tooltip="Plots: one line per variant (mean over seeds, min-max band, N)",
        ),
        Binding(
            "x",
            "cycle_x",
            "X axis",
            id="cycle_x",
            tooltip="Plots: x-axis cycles step / tokens / seconds",
        ),
        Binding(
            "l",
            "toggle_log",
            "Log",
            id="toggle_log",
            tooltip="Plots: log-scale y (values <= 0 sit at the bottom)",
        ),
        Binding(
            "m",
            "toggle_smooth",
            "Smooth",
            id="toggle_smooth",
            tooltip="Plots: draw a smoothed curve over the raw one",
        ),
        Binding(
            "v",
            "toggle_plot",
            "Loss/grad",
            id="toggle_plot",
            show=False,
            tooltip="Small terminals: switch the plot between loss and gradient norm",
        ),
        Binding(
            "w",
            "app.tradeoff",
            "Trade-off",
            id="tradeoff",
            show=False,
            tooltip="Trade-off: final PPL against the swept axis (lr, iters...) per variant",
        ),
        Binding(
            "o",
            "app.sample",
            "Sample",
            id="sample",
            show=False,
            tooltip="Sample text from the selected run's latest checkpoint (on the CPU)",
        ),
        Binding(
            "b",
            "app.browse",
            "Sessions",
            id="browse",
            show=False,
            tooltip="Sessions: browse them, open one (asks first while runs train)",
        ),
        Binding(
            "e",
            "app.export",
            "Export",
            id="export",
            tooltip="Export results, metrics and evals as CSV into the session's export/ "
            "(in the background)",
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

    def __init__(self) -> None:
        super().__init__()
        self.opts = PlotOptions()

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

    # -- drawing: the app decides what changed, these bring the widgets up to date -------------

    def show_header(self, info: HeaderInfo) -> None:
        self.query_one(LabHeader).show(info)

    def show_runs(
        self, views: dict[str, RunView], changed: set[str], axes: list[str], waiting: set[str]
    ) -> None:
        """Add or update the rows of the ``changed`` runs ("queued" for those in ``waiting``)."""
        queue = self.query_one(RunQueue)
        every = queue.set_axes(axes)  # new columns: every row again
        for run_id, view in views.items():
            if every or run_id in changed:
                queue.show_run(view, run_id in waiting)

    def draw_curves(self, views: list[RunView], selected: str | None) -> None:
        for plot in self.query(CurvePlot):
            plot.draw(views, selected, self.opts)
        view = next((v for v in views if v.run_id == selected), None)
        self.query_one(NormGauge).show(
            selected, view.embed_norm if view else None, view.spec.n_embd if view else None
        )

    def clear_runs(self) -> None:
        """Forget every run shown (another session is being opened)."""
        self.query_one(RunQueue).reset()

    def show_results(self, df: pd.DataFrame, axes: list[str]) -> None:
        self.query_one(ResultsGrid).show_results(df, axes)

    @property
    def queue(self) -> RunQueue:
        return self.query_one(RunQueue)

    @property
    def header(self) -> LabHeader:
        return self.query_one(LabHeader)

    # -- the plot keys ---------------------------------------------------------------------------

    def action_toggle_grouped(self) -> None:
        self._set_opts(grouped=not self.opts.grouped)

    def action_cycle_x(self) -> None:
        self._set_opts(x=self.opts.next_x())

    def action_toggle_log(self) -> None:
        self._set_opts(log_y=not self.opts.log_y)

    def action_toggle_smooth(self) -> None:
        self._set_opts(smooth=not self.opts.smooth)

    def _set_opts(self, **changes) -> None:
        self.opts = replace(self.opts, **changes)
        self.app.redraw_curves()

    def action_toggle_plot(self) -> None:
        for plot in self.query(CurvePlot):
            plot.toggle_class("-off")

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
