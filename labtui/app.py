"""The lab console: `labtui` with no arguments.

Training runs in one Textual thread worker that hands run ids, one at a time, to a
sessions.runner.StudyRunner. The runner writes every event into the session folder and passes it
on; the worker turns it into a message (labtui.messages) and the app applies it to the run views
(labtui.runview). Widgets redraw from a timer, only what changed, a few times a second.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.worker import Worker, WorkerState

from core.spec import RunSpec, Study
from labtui import messages as msg
from labtui.plotting import PlotOptions
from labtui.runview import RunView, overall_progress, results_frame
from labtui.widgets.console import ConsoleScreen
from labtui.widgets.forms import ConfirmQuit, NewRunForm
from labtui.widgets.gauge import NormGauge
from labtui.widgets.header import HeaderInfo, LabHeader
from labtui.widgets.help import HelpScreen, TracebackScreen
from labtui.widgets.plots import CurvePlot
from labtui.widgets.results_grid import ResultsGrid
from labtui.widgets.run_queue import RunQueue

REDRAW_S = 0.3  # queue rows and header refresh at most this often
PLOT_REDRAW_S = 1.0  # plots (the costly part) at most this often while data streams in
RESUMABLE = ("pending", "interrupted", "cancelled", "failed")


class LabApp(App[None]):
    """The console over one session (created on the first queued run when not given)."""

    CSS_PATH = Path(__file__).with_name("labtui.tcss")
    TITLE = "labtui"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True)
    ]

    def __init__(
        self,
        *,
        corpus=None,
        session=None,
        root: Path | None = None,
        base_spec: RunSpec | None = None,
        study: Study | None = None,
        device: str = "auto",
        session_name: str | None = None,
        data_label: str | None = None,
        device_label: str | None = None,
        executor=None,
        executor_label: str | None = None,
    ) -> None:
        super().__init__()
        self.corpus = corpus
        self.session = session
        self.root = root
        self.device = device
        self.base = base_spec or RunSpec(device=device)
        self.study = study or Study(base=self.base)
        self.session_name = session_name
        self.data_label = data_label or _data_label(corpus)
        self.device_label = device_label or _device_label(device)
        self.executor = executor  # None: the runner's default executor
        self.executor_label = executor_label  # e.g. "ray: 2 nodes, 64 CPUs, 8 GPUs"
        self.views: dict[str, RunView] = {}
        self.opts = PlotOptions()
        self.selected: str | None = None
        self.runner = None
        self._queue: deque[str] = deque()  # run ids waiting for the worker, in order
        self._lock = threading.Lock()  # guards _queue, _worker_live and _handed
        self._worker_live = False
        self._handed: set[str] = set()  # handed to the runner and not finished yet
        self._dirty_rows: set[str] = set()
        self._dirty_plots = False
        self._plotted_at = 0.0
        self._dirty_results = False
        self._quitting = False
        self._rate: tuple[float, int] | None = None  # (start time, steps) of this training spell
        self.main_screen: ConsoleScreen | None = None

    # -- building the screen ---------------------------------------------------------------------

    def get_default_screen(self) -> ConsoleScreen:
        return ConsoleScreen()

    def console_mounted(self, screen: ConsoleScreen) -> None:
        """Called by the console screen once its widgets exist."""
        self.main_screen = screen
        if self.session is not None:
            self.load_session()
        self.set_interval(REDRAW_S, self.redraw)
        self.set_interval(2.0, self.refresh_header)
        self.refresh_header()
        screen.query_one(RunQueue).focus()

    def load_session(self) -> None:
        """Rebuild every view from the session folder (curves, statuses, results)."""
        for record in self.session.runs():
            if record.run_id in self.views:
                continue
            self.views[record.run_id] = RunView.from_record(
                record, self.session.metrics(record.run_id), self.session.evals(record.run_id)
            )
            self._dirty_rows.add(record.run_id)
        self._dirty_plots = self._dirty_results = True
        self.redraw(force_plots=True)

    # -- messages from the training worker -------------------------------------------------------

    def post_event(self, event: object) -> None:
        """The runner's on_event: called in the training thread, hands the event to the UI."""
        message = msg.wrap(event)
        if message is not None:
            self.post_message(message)

    @on(msg.EngineEvent)
    def apply_event(self, message: msg.EngineEvent) -> None:
        view = self.views.get(message.run_id)
        if view is None:
            return
        view.apply(message.event)
        self._dirty_rows.add(view.run_id)
        self._dirty_plots = True
        if isinstance(message, msg.StepLogged) and self._rate is not None:
            self._rate = (self._rate[0], self._rate[1] + 1)
        elif isinstance(message, msg.RunStarted):
            self.device_label = message.event.device_name
            if self.selected is None or self.views[self.selected].status != "running":
                self.main_screen.query_one(RunQueue).select(view.run_id)
        elif isinstance(message, msg.RunFinished):
            with self._lock:
                self._handed.discard(view.run_id)
            self._dirty_results = True
            if view.status == "failed":
                error = message.event.result.error or "see the traceback"
                self.notify(
                    f"{view.run_id} failed: {error}\n(select it and press t for the traceback)",
                    title="Run failed",
                    severity="error",
                    timeout=12,
                )

    @on(msg.RunSelected)
    def select_run(self, message: msg.RunSelected) -> None:
        if message.run_id != self.selected:
            self.selected = message.run_id
            self._dirty_plots = True
            self.redraw(force_plots=True)

    def redraw(self, force_plots: bool = False) -> None:
        """Bring the widgets up to date with whatever changed since the last call.

        Plots redraw at most once per PLOT_REDRAW_S unless ``force_plots`` (a key was pressed).
        """
        screen = self.main_screen
        if screen is None:
            return
        with self.batch_update():
            if self._dirty_rows:
                queue = screen.query_one(RunQueue)
                queued = set(self._queue) | self._handed
                for run_id in list(self.views):
                    if run_id in self._dirty_rows:
                        queue.show_run(self.views[run_id], run_id in queued)
                self._dirty_rows.clear()
                if self.selected is None and queue.row_count:
                    self.selected = queue.selected
                self.refresh_header()
            now = time.monotonic()
            if self._dirty_plots and (force_plots or now - self._plotted_at >= PLOT_REDRAW_S):
                self._dirty_plots = False
                self._plotted_at = now
                views = list(self.views.values())
                for plot in screen.query(CurvePlot):
                    plot.draw(views, self.selected, self.opts)
                view = self.views.get(self.selected) if self.selected else None
                screen.query_one(NormGauge).show(
                    self.selected,
                    view.embed_norm if view else None,
                    view.spec.n_embd if view else None,
                )
            if self._dirty_results:
                self._dirty_results = False
                screen.query_one(ResultsGrid).show_results(results_frame(self.views.values()))

    def refresh_header(self) -> None:
        if self.main_screen is None:
            return
        done, total = overall_progress(self.views.values())
        self.main_screen.query_one(LabHeader).show(
            HeaderInfo(
                session=self.session.name if self.session else (self.session_name or "new"),
                device=" · ".join(filter(None, [self.device_label, self.executor_label])),
                gpu_mem_mib=_gpu_mem_mib(self.device_label),
                data=self.data_label,
                done=done,
                total=total,
                training=self.training,
                eta_s=self._eta(),
            )
        )

    def _eta(self) -> float | None:
        """Seconds left for the queued and running runs, at this spell's measured pace."""
        if not self._worker_live or self._rate is None:
            return None
        start, steps = self._rate
        if steps < 3:
            return None
        pace = steps / max(1e-6, time.monotonic() - start)
        with self._lock:
            todo = set(self._queue) | self._handed
        left = sum(
            v.spec.iters - min(v.step, v.spec.iters) for k, v in self.views.items() if k in todo
        )
        return left / pace

    # -- the training worker ---------------------------------------------------------------------

    def enqueue(self, run_ids: list[str]) -> int:
        """Queue runs for training (starting the worker if idle); returns how many were added."""
        if not run_ids:
            return 0
        if self.corpus is None:
            self.notify("no corpus loaded: start labtui with --data", severity="error")
            return 0
        if self.runner is None:
            from sessions.runner import StudyRunner

            self.runner = StudyRunner(
                self.session,
                self.corpus,
                executor=self.executor or "local",
                on_event=self.post_event,
                device=None if self.device == "auto" else self.device,
            )
        with self._lock:
            new = [r for r in run_ids if r not in self._queue and r not in self._handed]
            self._queue.extend(new)
            start = bool(new) and not self._worker_live
            if start:
                self._worker_live = True
        self._dirty_rows.update(new)
        if start:
            self._rate = (time.monotonic(), 0)
            self.train()
        self.redraw()
        return len(new)

    def _next_batch(self) -> list[str]:
        """Everything queued, handed to the runner at once (a grouped or Ray executor trains
        several runs together; the local one goes through them in order)."""
        with self._lock:
            self._handed = set(self._queue)
            batch = list(self._queue)
            self._queue.clear()
            if not batch:
                self._worker_live = False
            return batch

    @work(thread=True, exclusive=True, group="training", exit_on_error=False)
    def train(self) -> None:
        """Train queued runs until the queue is empty or cancelled."""
        while batch := self._next_batch():
            self.runner.run(batch, retry_failed=True)
        self.post_message(msg.QueueDrained())

    @on(msg.QueueDrained)
    def queue_drained(self) -> None:
        self._rate = None
        self._dirty_rows.update(self.views)
        self.refresh_header()
        if self._quitting:
            self.finish()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place a crashed training worker is reported."""
        if event.worker.group != "training" or event.state != WorkerState.ERROR:
            return
        with self._lock:
            self._queue.clear()
            self._worker_live = False
            self._handed = set()
        self.notify(f"training stopped: {event.worker.error}", severity="error", timeout=15)
        self._dirty_rows.update(self.views)
        if self._quitting:
            self.finish()

    @property
    def training(self) -> bool:
        return self._worker_live

    # -- actions ---------------------------------------------------------------------------------

    def ensure_session(self, study: Study) -> list[str] | None:
        """Create the session with ``study`` (its runs queued), or add the study's runs to it."""
        from sessions.store import SessionError

        try:
            if self.session is None:
                from sessions.provenance import collect
                from sessions.store import Session

                self.session = Session.create(
                    self.root,
                    study,
                    name=self.session_name,
                    provenance=collect(
                        self.corpus,
                        self.device,
                        precision=self.base.precision,
                        executor="ray" if self.executor_label else "local",
                        grouped=getattr(self.executor, "group", None),
                    ),
                )
                ids = self.session.run_ids()
            else:
                ids = self.session.add_runs(study.specs())
        except (SessionError, OSError) as err:
            self.notify(str(err), title="Session", severity="error")
            return None
        self.load_session()
        self.refresh_header()
        return ids

    def action_queue_study(self) -> None:
        ids = self.ensure_session(self.study)
        if ids is None:
            return
        if self.training:
            self.enqueue(ids)
        self.notify(f"{len(ids)} runs queued" + ("" if self.training else ": enter starts them"))

    def action_new_run(self) -> None:
        seeds = [v.spec.seed for v in self.views.values()]
        self.push_screen(NewRunForm(self.base, max(seeds, default=-1) + 1), self._add_run)

    def _add_run(self, spec: RunSpec | None) -> None:
        if spec is None:
            return
        ids = self.ensure_session(Study(base=spec, grid={}))
        if not ids:
            return
        self.main_screen.query_one(RunQueue).select(ids[-1])
        if self.training:
            self.enqueue(ids)
        self.notify(f"{ids[-1]} added" + ("" if self.training else ": enter starts it"))

    def action_start_queue(self) -> None:
        todo = [v.run_id for v in self.views.values() if v.status in ("pending", "interrupted")]
        if not todo:
            self.notify("nothing to start: s queues the study, n adds a run")
            return
        added = self.enqueue(todo)
        if added:
            self.notify(f"training {added} run(s)")

    def action_cancel_run(self) -> None:
        run_id = self.selected
        if run_id is None:
            return
        with self._lock:
            queued = run_id in self._queue
            if queued:
                self._queue.remove(run_id)
            current = run_id in self._handed
        if current and self.runner is not None:
            self.runner.cancel(run_id)
            self.notify(f"cancelling {run_id} (resumable with r)")
        elif queued:
            self.notify(f"{run_id} taken off the queue")
        else:
            self.notify(f"{run_id} is not queued or training")
        self._dirty_rows.add(run_id)
        self.redraw()

    def action_cancel_all(self) -> None:
        with self._lock:
            dropped = list(self._queue)
            self._queue.clear()
        if self.runner is not None:
            self.runner.cancel_all()
        self._dirty_rows.update(dropped)
        if self.training or dropped:
            self.notify("cancelling all runs")
        self.redraw()

    def action_resume_run(self) -> None:
        view = self.views.get(self.selected or "")
        if view is None:
            return
        if view.status not in RESUMABLE:
            self.notify(f"{view.run_id} is {view.status}: nothing to resume", severity="warning")
            return
        if self.enqueue([view.run_id]):
            verb = "retrying" if view.status == "failed" else "resuming"
            self.notify(f"{verb} {view.run_id}")

    def action_traceback(self) -> None:
        view = self.views.get(self.selected or "")
        if view is None or not view.error:
            self.notify("the selected run has no error", severity="warning")
            return
        self.push_screen(TracebackScreen(view.run_id, view.error))

    def action_toggle_grouped(self) -> None:
        self._set_opts(grouped=not self.opts.grouped)

    def action_cycle_x(self) -> None:
        self._set_opts(x=self.opts.next_x())

    def action_toggle_log(self) -> None:
        self._set_opts(log_y=not self.opts.log_y)

    def action_toggle_smooth(self) -> None:
        self._set_opts(smooth=not self.opts.smooth)

    def _set_opts(self, **changes) -> None:
        from dataclasses import replace

        self.opts = replace(self.opts, **changes)
        self._dirty_plots = True
        self.redraw(force_plots=True)

    def action_toggle_plot(self) -> None:
        for plot in self.main_screen.query(CurvePlot):
            plot.toggle_class("-off")

    def action_export(self) -> None:
        if self.session is None:
            self.notify("nothing to export yet", severity="warning")
            return
        out = self.session.path / "export"
        out.mkdir(exist_ok=True)
        paths = []
        for what in ("results", "metrics", "evals"):
            path = out / f"{what}.csv"
            self.session.export(what).to_csv(path, index=False)
            paths.append(path)
        self.notify("\n".join(str(p) for p in paths), title="Exported CSV", timeout=10)

    def action_report(self) -> None:
        if self.session is None:
            self.notify("no session yet: nothing to report", severity="warning")
            return
        self.notify("writing the report…")
        self.write_report()

    @work(thread=True, group="report", exit_on_error=False)
    def write_report(self) -> None:
        try:
            from sessions.report import write_report
        except ImportError as err:
            self.notify(f"report writer unavailable: {err}", severity="error")
            return
        try:
            result = write_report(self.session)
        except Exception as err:  # the report must never take the console down
            self.notify(f"report failed: {err}", severity="error", timeout=15)
            return
        line = getattr(result, "status_line", None)
        path = getattr(result, "path", None) or (self.session.path / "report")
        self.notify(f"{line}\n{path}" if line else str(path), title="Report", timeout=12)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(ConsoleScreen.BINDINGS))

    async def action_quit(self) -> None:
        if not self.training:
            self.finish()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._quitting = True
                self.action_cancel_all()
                self.notify("cancelling and saving…")

        self.push_screen(ConfirmQuit(len(self.runner.active) if self.runner else 1), answer)

    def finish(self) -> None:
        """Close the session (releasing its lock) and leave."""
        if self.session is not None:
            self.session.close()
        self.exit()

    def on_unmount(self) -> None:
        # Leaving some other way (an error, ctrl+c in a test): stop training, keep it resumable.
        if self.training and self.runner is not None:
            with self._lock:
                self._queue.clear()
            self.runner.cancel_all()


def _data_label(corpus) -> str:
    if corpus is None:
        return "—"
    return f"{Path(corpus.source).name} ({corpus.sha256[:8]})"


def _device_label(device: str) -> str:
    try:
        from core.device import device_name, resolve_device

        return device_name(resolve_device(device))
    except Exception as err:  # the runs will report it; the header just says so
        return f"{device} (unavailable: {err})"


def _gpu_mem_mib(device_label: str) -> float | None:
    """GPU memory in use by this process, when training on CUDA."""
    import torch

    if device_label == "CPU" or not torch.cuda.is_available():
        return None
    return torch.cuda.memory_allocated() / 2**20


def run_console(
    data=None,
    session=None,
    root=None,
    device: str = "auto",
    executor: str = "local",
    address: str | None = None,
    gpus_per_run: float | None = None,
    group: bool | None = None,
) -> None:
    """Load the corpus and the session, then run the console. Bad input: one line, exit 2."""
    from core.spec import SpecError
    from labtui.commands.data_cmd import load_or_fail
    from labtui.commands.options import check_ray_flags
    from labtui.errors import fail
    from sessions.executors import make_executor
    from sessions.store import Session, SessionError

    check_ray_flags(executor, address, gpus_per_run)
    try:
        base = RunSpec(device=device)
        the_executor = make_executor(
            executor, group=group, address=address, gpus_per_run=gpus_per_run, device=device
        )
    except (SpecError, SessionError) as err:
        fail(str(err))
    corpus = load_or_fail(data, progress=True)
    executor_label = None
    if executor == "ray":
        print("starting Ray…", file=sys.stderr)
        try:
            the_executor.connect()
        except SessionError as err:
            fail(str(err))
        executor_label = the_executor.describe()
    opened = None
    if session is not None:
        try:
            opened = Session.open(root, session, write=True)
        except SessionError as err:
            fail(str(err))
    app = LabApp(
        corpus=corpus,
        session=opened,
        root=root,
        base_spec=base,
        device=device,
        executor=the_executor,
        executor_label=executor_label,
    )
    try:
        app.run()
    finally:
        if app.session is not None:
            app.session.close()
