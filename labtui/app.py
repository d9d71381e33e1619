"""The lab console: `labtui` with no arguments.

The session's sessions.runner.StudyRunner owns the queue; labtui.training.Training enqueues into
it, drains it in one thread worker and collects its events. A redraw timer applies the events
collected since the last tick to the run views (labtui.runview) and brings the widgets up to date,
only what changed, a few times a second. Export and report run in workers too;
Worker.StateChanged is the one place their results and errors arrive.

The other screens (labtui.widgets) do their slow work in workers of their own: the study chooser
(`s`) its estimates, the trade-off view (`w`) its table, the sample panel (`o`) its sample, the
session browser (`b`) its listing. Opening another session while runs train asks first, then
cancels them (resumable) and opens it once the drain has ended: one session, one writer, one
queue per console.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.worker import Worker, WorkerState

from core import events as ev
from core.events import SinkError
from core.spec import RunSpec, Study
from core.status import RESTARTABLE, TODO, RunStatus
from labtui import device_monitor
from labtui.errors import error_line
from labtui.launch import open_for_console
from labtui.messages import RunSelected
from labtui.runview import RunViews, overall_progress
from labtui.training import Training
from labtui.widgets.browser import SessionBrowser
from labtui.widgets.chooser import StudyChooser, study_choices
from labtui.widgets.console import ConsoleScreen
from labtui.widgets.forms import ConfirmQuit, ConfirmSwitch, NewRunForm
from labtui.widgets.header import HeaderInfo
from labtui.widgets.help import HelpScreen, TracebackScreen
from labtui.widgets.sample import SamplePanel
from labtui.widgets.tradeoff import TradeoffScreen
from sessions.errors import SessionError

REDRAW_S = 0.3  # events are applied and queue rows and header redrawn at most this often
PLOT_REDRAW_S = 1.0  # plots (the costly part) at most this often while data streams in
QUIT_WAIT_S = 60.0  # leaving without the quit dialog: how long to wait for the run in flight


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
        read_only_why: str | None = None,
        data_label: str | None = None,
        executor=None,
        executor_label: str | None = None,
        device_snapshot: Callable[[str], device_monitor.DeviceSnapshot] = device_monitor.snapshot,
    ) -> None:
        super().__init__()
        self.corpus = corpus
        self.session = session
        self.root = root
        self.device = device
        self.base = base_spec or RunSpec(device=device)
        self.study = study  # offered first by the study chooser (`s`), before the built-in ones
        self.session_name = session_name
        self.read_only_why = read_only_why  # why ``session`` is open read-only (open_for_console)
        self.data_label = data_label or _data_label(corpus)
        self.executor = executor  # None: the runner's default (local) executor
        self.executor_label = executor_label  # e.g. "ray: 2 nodes, 64 CPUs, 8 GPUs"
        self.device_snapshot = device_snapshot  # the header's (a fixed one in snapshot tests)
        self.views = RunViews()
        self.axes: list[str] = []  # the session's swept fields besides variant and seed
        self.selected: str | None = None
        self.trainer: Training | None = None
        self._waiting: set[str] = set()  # queued or running, as last drawn
        self._plotted_at = 0.0
        self._quitting = False  # quit confirmed: leaving once the drain has ended
        self._leaving = False  # exit() called: no key does anything any more
        self._switch_to: str | None = None  # a session to open once the drain has ended
        self.main_screen: ConsoleScreen | None = None

    # -- building the picture --------------------------------------------------------------------

    def get_default_screen(self) -> ConsoleScreen:
        return ConsoleScreen()

    def console_mounted(self, screen: ConsoleScreen) -> None:
        """Called by the console screen once its widgets exist."""
        self.main_screen = screen
        if self.session is not None:
            self.load_session()
            if self.read_only_why is not None:
                self.say_read_only(self.session.name, self.read_only_why)
        self.set_interval(REDRAW_S, self.redraw)
        screen.header.take_snapshot = self.device_snapshot
        label, watched = _device(self.device, self.executor)
        screen.header.watch_device(watched, label, self.executor_label)
        screen.queue.focus()

    def load_session(self) -> None:
        """Rebuild every view from the session folder (curves, statuses, results). Damaged
        files are said, not raised: the rest of the session is shown."""
        try:
            self.axes = self.session.axes()
            broken = self.views.load(self.session)
        except (SessionError, OSError) as err:
            broken = [f"cannot read session {self.session.name}: {error_line(err)}"]
        if broken:
            more = f"\n(and {len(broken) - 1} more)" if len(broken) > 1 else ""
            self.notify(
                f"{broken[0]}{more}\nThe session is shown without what cannot be read.",
                title="Damaged session files",
                severity="error",
                timeout=30,
            )
        self.redraw(force_plots=True)

    def apply_events(self) -> None:
        """Apply the engine events the runner sent since the last call to the run views."""
        if self.trainer is None or not self.is_running:
            return
        steps, news = self.views.apply(self.trainer.events.take())
        self.trainer.count_steps(steps)
        for event in news:
            view = self.views[event.run_id]
            if isinstance(event, ev.RunStarted):
                header = self.main_screen.header
                if header.device is not None and event.device != header.device:
                    header.watch_device(event.device, event.device_name, header.extra)
                selected = self.views.get(self.selected or "")
                if selected is None or selected.status != RunStatus.RUNNING:
                    self.main_screen.queue.select(view.run_id)
            elif view.status == RunStatus.FAILED:
                error = event.result.error or "see the traceback"
                self.notify(
                    f"{view.run_id} failed: {error}\n(select it and press t for the traceback)",
                    title="Run failed",
                    severity="error",
                    timeout=12,
                )

    @on(RunSelected)
    def select_run(self, message: RunSelected) -> None:
        if message.run_id != self.selected:
            self.selected = message.run_id
            self.redraw_curves()

    def redraw_curves(self) -> None:
        """Redraw the plots now (a key changed what they show)."""
        self.views.curves_changed = True
        self.redraw(force_plots=True)

    def redraw(self, force_plots: bool = False) -> None:
        """Apply the new events, then bring the widgets up to date with what changed.

        Plots redraw at most once per PLOT_REDRAW_S unless ``force_plots`` (a key was pressed).
        """
        screen = self.main_screen
        if screen is None or not self.is_running:  # not built yet, or being torn down
            return
        self.apply_events()
        views = self.views
        waiting = self.trainer.waiting() if self.trainer else set()
        views.changed |= waiting ^ self._waiting
        self._waiting = waiting
        with self.batch_update():
            if views.changed:
                screen.show_runs(views, views.changed, self.axes, waiting)
                views.changed = set()
                self.selected = self.selected or screen.queue.selected
            now = time.monotonic()
            if views.curves_changed and (force_plots or now - self._plotted_at >= PLOT_REDRAW_S):
                views.curves_changed, self._plotted_at = False, now
                screen.draw_curves(list(views.values()), self.selected)
            if views.results_changed and self.session is not None:
                views.results_changed = False
                screen.show_results(self.session.results(), self.axes)
                if isinstance(self.screen, TradeoffScreen):
                    self.screen.reload()
            screen.show_header(self.header_info())

    def header_info(self) -> HeaderInfo:
        done, total = overall_progress(self.views.values())
        if self.session is None:
            name = self.session_name or "new"
        else:
            name = self.session.name + ("" if self.session.writable else " (read-only)")
        return HeaderInfo(
            session=name,
            data=self.data_label,
            done=done,
            total=total,
            training=self.training,
            eta_s=self.trainer.eta(self.views) if self.trainer else None,
        )

    # -- workers: training, export, report ------------------------------------------------------

    @property
    def training(self) -> bool:
        return self.trainer is not None and self.trainer.training

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place the workers' results and errors arrive."""
        worker = event.worker
        if self.trainer is not None and worker is self.trainer.worker and worker.is_finished:
            self.training_ended(worker)
        elif event.state == WorkerState.ERROR:
            self.notify(f"{worker.name}: {error_line(worker.error)}", severity="error", timeout=15)
        elif event.state == WorkerState.SUCCESS and worker.group in ("export", "report"):
            self.notify(worker.result, title=worker.name, timeout=12)

    def training_ended(self, worker: Worker) -> None:
        failed = worker.state != WorkerState.SUCCESS
        self.apply_events()  # the last ones
        if isinstance(worker.error, SinkError):
            self.notify(
                f"cannot write session {self.session.name}: {worker.error}\nTraining stopped; "
                "the runs are saved up to their last checkpoint (resume them with r).",
                title="Session not writable",
                severity="error",
                timeout=30,
            )
        elif failed:
            self.notify(f"training stopped: {worker.error}", severity="error", timeout=15)
        if failed:  # runs cut off before their end show what their folders say (interrupted)
            self.views.settle(self.session)
        self.trainer.ended(failed)
        if self._quitting:
            self.finish()
        elif self._switch_to is not None and not self.training:
            name, self._switch_to = self._switch_to, None
            self.open_session(name)

    def enqueue(self, run_ids: list[str]) -> list[str]:
        """Queue runs in the runner (a drain starts if none runs); returns the ids added."""
        if self.corpus is None:
            self.notify("no corpus loaded: start labtui with --data", severity="error")
            return []
        if self.read_only() or self.switching():
            return []
        if self.trainer is None:
            self.trainer = Training(
                self, self.session, self.corpus, executor=self.executor, device=self.device
            )
        added = self.trainer.enqueue(run_ids)
        self.redraw()
        return added

    @work(thread=True, exclusive=True, group="export", name="Exported CSV", exit_on_error=False)
    def export_tables(self) -> str:
        """Every export of the session into its export/ folder (each file written atomically)."""
        from sessions.export import EXPORTS, export_csv

        out = self.session.path / "export"
        out.mkdir(exist_ok=True)
        for what in EXPORTS:
            export_csv(self.session, what, out / f"{what}.csv")
        return "\n".join(str(out / f"{what}.csv") for what in EXPORTS)

    @work(thread=True, exclusive=True, group="report", name="Report", exit_on_error=False)
    def write_report(self) -> str:
        from sessions.report import write_report

        result = write_report(self.session)
        return f"{result.status_line}\n{result.out_dir}"

    # -- actions ---------------------------------------------------------------------------------

    def ensure_session(self, study: Study) -> list[str] | None:
        """Create the session with ``study`` (its runs pending), or add the study's runs to it."""
        from sessions.startup import add_study, create_session

        if self.read_only() or self.switching():
            return None
        try:
            if self.session is None:
                self.session = create_session(
                    self.root, study, self.corpus, name=self.session_name, executor=self.executor
                )
                ids = self.session.run_ids()
            else:
                ids = add_study(self.session, study)
        except (SessionError, OSError) as err:
            self.notify(error_line(err), title="Session", severity="error")
            return None
        self.load_session()
        return ids

    def read_only(self) -> bool:
        """The session is open read-only (another process writes it): say so."""
        if self.session is None or self.session.writable:
            return False
        writer = self.session.writer()
        by = f" (being written by {writer})" if writer else ""
        self.notify(
            f"session {self.session.name} is open read-only{by}: nothing can be added or "
            "trained here; b opens another session, or this one again once it can be written",
            severity="warning",
        )
        return True

    def switching(self) -> bool:
        """Another session opens once the runs are cancelled: nothing starts here now."""
        if self._switch_to is None:
            return False
        self.notify(
            f"session {self._switch_to} opens once the runs of {self.session.name} are "
            "cancelled: nothing is added or started here now",
            severity="warning",
        )
        return True

    def action_queue_study(self) -> None:
        choices = study_choices(self.study, self.base.device)
        self.push_screen(StudyChooser(choices, measure=not self.training), self._add_study)

    def _add_study(self, study: Study | None) -> None:
        ids = self.ensure_session(study) if study is not None else None
        if ids is None:
            return
        if self.training:
            self.enqueue(ids)
        self.notify(f"{len(ids)} runs added" + ("" if self.training else ": enter starts them"))

    def action_new_run(self) -> None:
        seeds = [v.spec.seed for v in self.views.values()]
        self.push_screen(NewRunForm(self.base, max(seeds, default=-1) + 1), self._add_run)

    def _add_run(self, spec: RunSpec | None) -> None:
        ids = self.ensure_session(Study(base=spec, grid={})) if spec is not None else None
        if not ids:
            return
        self.main_screen.queue.select(ids[-1])
        if self.training:
            self.enqueue(ids)
        self.notify(f"{ids[-1]} added" + ("" if self.training else ": enter starts it"))

    def action_start_queue(self) -> None:
        todo = [v.run_id for v in self.views.values() if v.status in TODO]
        added = self.enqueue(todo) if todo else []
        if not todo:
            self.notify("nothing to start: s adds the study, n adds a run")
        elif added:
            self.notify(f"training {len(added)} run(s)")

    def action_cancel_run(self) -> None:
        run_id = self.selected
        where = self.trainer.cancel(run_id) if self.trainer and run_id else None
        if where == "training":
            self.notify(f"cancelling {run_id} (resumable with r)")
        elif where == "queued":
            self.notify(f"{run_id} taken off the queue")
        elif run_id:
            self.notify(f"{run_id} is not queued or training")
        self.redraw()

    def action_cancel_all(self) -> None:
        if self.training:
            self.trainer.cancel_all()
            self.notify("cancelling all runs")
        self.redraw()

    def action_resume_run(self) -> None:
        view = self.views.get(self.selected or "")
        if view is None:
            return
        if view.status not in RESTARTABLE:
            self.notify(f"{view.run_id} is {view.status}: nothing to resume", severity="warning")
        elif self.enqueue([view.run_id]):
            verb = "retrying" if view.status == RunStatus.FAILED else "resuming"
            self.notify(f"{verb} {view.run_id}")

    def action_traceback(self) -> None:
        view = self.views.get(self.selected or "")
        if view is None or not view.error:
            self.notify("the selected run has no error", severity="warning")
            return
        self.push_screen(TracebackScreen(view.run_id, view.error))

    def action_export(self) -> None:
        if self.session is None:
            self.notify("nothing to export yet", severity="warning")
            return
        self.export_tables()

    def action_report(self) -> None:
        if self.session is None:
            self.notify("no session yet: nothing to report", severity="warning")
            return
        self.notify("writing the report…")
        self.write_report()

    def action_tradeoff(self) -> None:
        if self.session is None:
            self.notify("no session yet: s adds a study", severity="warning")
        elif not self.axes:
            self.notify(
                f"session {self.session.name} sweeps nothing but variant and seed: no trade-off "
                "to draw (the lr-sweep and budget-sweep studies have one)",
                severity="warning",
            )
        else:
            self.push_screen(TradeoffScreen(self.session, self.axes))

    def action_sample(self) -> None:
        if self.session is None or self.selected not in self.views:
            self.notify("select a run first", severity="warning")
            return
        self.push_screen(SamplePanel(self.session, self.selected))

    def action_browse(self) -> None:
        current = self.session.path.name if self.session else None
        self.push_screen(SessionBrowser(self.root, current), self._browsed)

    def _browsed(self, name: str | None) -> None:
        """Open the session chosen in the browser: now, or after asking when runs train (they
        are cancelled, resumable, and training_ended opens it once the drain has ended)."""
        if name is None:
            return
        if self.session is not None and name == self.session.path.name:
            if not self.session.writable:  # read-only: opened again, it shows what is there now
                self.open_session(name)
                return
            self.notify(f"session {name} is the one open here")
            return
        if not self.training:
            self.open_session(name)
            return

        def answer(yes: bool | None) -> None:
            if yes and self.training:
                self._switch_to = name
                self.trainer.cancel_all()
                self.notify(f"cancelling the runs of {self.session.name}, then opening {name}…")
            elif yes:
                self.open_session(name)

        active = len(self.trainer.runner.active) or 1
        self.push_screen(ConfirmSwitch(self.session.name, name, active), answer)

    def open_session(self, name: str) -> None:
        """Open session ``name`` in place of the current one, as `labtui --session NAME` does
        (labtui.launch.open_for_console: read-only when it cannot be written)."""
        try:
            opened, why = open_for_console(self.root, name, self.corpus)
        except (SessionError, OSError) as err:
            self.notify(error_line(err), title="Session", severity="error", timeout=15)
            return
        if self.session is not None:
            self.session.close()
        self.session, self.trainer, self.selected = opened, None, None
        self.views, self._waiting = RunViews(), set()
        self.main_screen.clear_runs()
        self.load_session()
        if why is not None:
            self.say_read_only(name, why)
        else:
            self.notify(f"opened session {name}")

    def say_read_only(self, name: str, why: str) -> None:
        self.notify(
            f"session {name} {why}: opened read-only, as it is now", severity="warning", timeout=12
        )

    def action_help(self) -> None:
        self.push_screen(HelpScreen(ConsoleScreen.BINDINGS))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Once the console is leaving, keys do nothing (a screen opened now would be built on
        an app being torn down)."""
        return not (self._leaving or self._quitting)

    async def action_quit(self) -> None:
        if not self.training:
            self.finish()
            return
        if isinstance(self.screen, ConfirmQuit):
            return  # asked already

        def answer(yes: bool | None) -> None:
            if yes:  # the training worker's end finishes the quit (training_ended)
                self._quitting = True
                self.trainer.cancel_all()
                self.notify("cancelling and saving…")

        self.push_screen(ConfirmQuit(len(self.trainer.runner.active) or 1), answer)

    def finish(self) -> None:
        """Close the session (releasing its lock) and leave."""
        self._leaving = True
        if self.session is not None:
            self.session.close()
        self.exit()

    def on_unmount(self) -> None:
        # Leaving some other way (an error, ctrl+c in a test): stop training, keep it resumable.
        if self.trainer is not None:
            self.trainer.stop(QUIT_WAIT_S)


def _data_label(corpus) -> str:
    if corpus is None:
        return "—"
    return f"{Path(corpus.source).name} ({corpus.sha256[:8]})"


def _device(device: str, executor) -> tuple[str, str | None]:
    """The header's device label, and the local device to watch (None: Ray trains elsewhere)."""
    try:
        from core.device import device_name, resolve_device

        resolved = resolve_device(device)
    except Exception as err:  # the runs will report it; the header just says so
        return f"{device} (unavailable: {err})", None
    remote = getattr(executor, "name", "local") == "ray"
    return device_name(resolved), None if remote else resolved
