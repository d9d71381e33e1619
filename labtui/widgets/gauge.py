"""The embedding-norm gauge: the selected run's first-block input norm against sqrt(width).

A LayerNorm / RMSNorm with unit gain puts every position at norm ~ sqrt(n_embd); the raw sum of
token and position embeddings starts far below it. The mark shows which side a run is on.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

from labtui.plotting import gauge_scale


class NormGauge(Static):
    """A horizontal bar from 0 to the gauge's scale, with sqrt(width) marked."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Embedding norm"
        self.value: float | None = None
        self.width_: int | None = None  # the model width (n_embd)
        self.run_id: str | None = None

    def show(self, run_id: str | None, value: float | None, n_embd: int | None) -> None:
        if (run_id, value, n_embd) == (self.run_id, self.value, self.width_):
            return
        self.run_id, self.value, self.width_ = run_id, value, n_embd
        self.refresh()

    def render(self) -> Text:
        if self.run_id is None or self.width_ is None:
            return Text("no run selected", style="dim")
        mark = math.sqrt(self.width_)
        value = self.value if self.value is not None and math.isfinite(self.value) else None
        top = gauge_scale(value, mark)
        cells = max(10, self.content_size.width)
        mark_at = min(cells - 1, round(mark / top * (cells - 1)))
        fill = 0 if value is None else min(cells, round(value / top * cells))
        bar = Text()
        for i in range(cells):
            if i == mark_at:
                bar.append("┃", style="bold")
            elif i < fill:
                bar.append("█", style="cyan")
            else:
                bar.append("─", style="dim")
        now = "—" if value is None else f"{value:.3g}"
        ratio = "" if value is None else f"  ({value / mark:.2f}×√d)"
        head = Text.assemble(("‖x‖ ", "bold"), (now, "bold"), ratio, f"   ┃ √d = {mark:.3g}")
        head.truncate(cells, overflow="ellipsis")
        return Text("\n").join([head, bar])
