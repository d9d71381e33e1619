"""The one-line header: session, device, data source, overall progress and ETA."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from labtui.plotting import format_duration


@dataclass(frozen=True)
class HeaderInfo:
    session: str = "new session"
    device: str = "CPU"
    gpu_mem_mib: float | None = None  # memory in use, on CUDA only
    data: str = "—"
    done: int = 0  # steps done over all runs
    total: int = 0
    training: bool = False
    eta_s: float | None = None  # None: not known (yet)


class LabHeader(Static):
    """Shows a HeaderInfo; `info` is replaced as a whole."""

    def __init__(self, info: HeaderInfo | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.info = info or HeaderInfo()

    def on_mount(self) -> None:
        self.show(self.info)

    def show(self, info: HeaderInfo) -> None:
        self.info = info
        device = info.device
        if info.gpu_mem_mib is not None:
            device += f" {info.gpu_mem_mib:,.0f} MiB"
        pct = 100 * info.done / info.total if info.total else 0.0
        progress = f"{pct:3.0f}%" if info.total else "no runs"
        eta = f"ETA {format_duration(info.eta_s)}" if info.training else "idle"
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
            device,
            " │ data ",
            info.data,
            no_wrap=True,
            overflow="ellipsis",
        )
        self.update(text)
