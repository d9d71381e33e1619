"""The one-line header: session, overall progress and ETA, the device and the data source.

The header watches the training device itself: every DEVICE_S seconds a thread worker takes a
labtui.device_monitor snapshot (GPU name, this process's memory / total, utilization; on a CPU
the threads and the load against the cores), so the UI thread never waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from labtui import device_monitor
from labtui.device_monitor import DeviceSnapshot
from labtui.plotting import format_duration

DEVICE_S = 2.0


@dataclass(frozen=True)
class HeaderInfo:
    session: str = "new session"
    data: str = "—"
    done: int = 0  # steps done over all runs
    total: int = 0
    training: bool = False
    eta_s: float | None = None  # for every queued and running run; None: not known (yet)


class LabHeader(Static):
    """Shows a HeaderInfo (replaced as a whole by ``show``) and the watched device's state."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.info = HeaderInfo()
        self.device: str | None = None  # the local device to watch; None: nothing to watch
        self.label = "CPU"  # shown until the first snapshot, or when nothing is watched
        self.extra: str | None = None  # e.g. the Ray cluster
        self.snapshot: DeviceSnapshot | None = None
        self.take_snapshot: Callable[[str], DeviceSnapshot] = device_monitor.snapshot
        self._warned = False

    def on_mount(self) -> None:
        self.set_interval(DEVICE_S, self.sample)
        self.show(self.info, force=True)

    def watch_device(self, device: str | None, label: str, extra: str | None = None) -> None:
        """Watch ``device`` ("cpu", "cuda:0"...; None: none, e.g. Ray trains elsewhere)."""
        self.device, self.label, self.extra = device, label, extra
        self.sample()

    def sample(self) -> None:
        if self.device is not None:
            self._sample(self.device)

    @work(thread=True, exclusive=True, group="device", exit_on_error=False)
    def _sample(self, device: str) -> DeviceSnapshot:
        return self.take_snapshot(device)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "device" or event.state != WorkerState.SUCCESS:
            return
        self.snapshot = event.worker.result
        self.show(self.info, force=True)
        if self.snapshot.warning and not self._warned:
            self._warned = True
            self.notify(self.snapshot.warning, title="CPU overloaded", severity="warning")

    @property
    def device_line(self) -> str:
        snap = self.snapshot
        device = device_monitor.format_line(snap) if snap else self.label
        return " · ".join(filter(None, [device, self.extra]))

    def show(self, info: HeaderInfo, force: bool = False) -> None:
        if info == self.info and not force:
            return
        self.info = info
        pct = 100 * info.done / info.total if info.total else 0.0
        progress = f"{pct:3.0f}%" if info.total else "no runs"
        eta = f"ETA {format_duration(info.eta_s)}" if info.training else "idle"
        overloaded = self.snapshot is not None and self.snapshot.overloaded
        # most wanted first: a narrow terminal cuts the end of the line
        text = Text.assemble(
            ("labtui", "bold"),
            " │ ",
            (info.session, "bold"),
            " │ ",
            (progress, "bold"),
            f" {info.done}/{info.total} steps │ ",
            eta,
            " │ ",
            (self.device_line, "bold yellow" if overloaded else ""),
            " │ data ",
            info.data,
            no_wrap=True,
            overflow="ellipsis",
        )
        self.update(text)
