"""Live training curves (plotext through textual-plotext).

One CurvePlot per metric. ``draw()`` rebuilds the figure from the run views; the app calls it
from a timer, only when new data arrived, so a fast run never floods the screen. The loss and
gradient-norm plots mark the selected run's spikes (core.metrics.spike_steps) with SPIKE_MARKER.
"""

from __future__ import annotations

import numpy as np
from textual_plotext import PlotextPlot

from labtui import plotting as P
from labtui.runview import RunView

SELECTED = (0, 160, 230)
SELECTED_RAW = (90, 130, 160)  # the raw curve under a smoothed one
SMOOTHED = (255, 165, 0)
FAINT = (95, 95, 95)
VARIANT_COLORS = {"none": (0, 130, 200), "layernorm": (60, 180, 75), "rmsnorm": (230, 25, 75)}
OTHER_COLORS = [(245, 130, 48), (145, 30, 180), (70, 240, 240)]
MONO_MARKERS = ["braille", "•", "+", "x", "o"]
SPIKE = (255, 60, 60)
SPIKE_MARKER = "▲"
NO_POINTS = (np.empty(0), np.empty(0))


class CurvePlot(PlotextPlot):
    """A training curve of one metric: the selected run bright, the others faint."""

    def __init__(self, metric: str, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.metric = metric
        self.title = title
        self._version = 0  # bumped by draw(); render() rebuilds only when it or the size changed
        self._cached: tuple[tuple, object] | None = None
        self._spikes: dict[tuple[str, int], P.Spikes] = {}  # per (run, generation)
        self.marks = NO_POINTS  # (x, y) of the spikes marked in the last draw

    def render(self):
        key = (self._version, self.size, self.app.theme, self.theme)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, super().render())
        return self._cached[1]

    def draw(self, views: list[RunView], selected: str | None, opts: P.PlotOptions) -> None:
        """Rebuild the figure from the views and refresh."""
        plt = self.plt
        plt.clear_figure()
        mono = self.app.no_color
        lines = (
            self._grouped(views, opts, mono)
            if opts.grouped
            else self._single(views, selected, opts, mono)
        )
        chosen = next((v for v in views if v.run_id == selected), None)
        self.marks = NO_POINTS if opts.grouped else self._spike_marks(chosen, opts.x)
        series = [y for _, y, *_ in lines]
        floor = P.log_floor(*series) if opts.log_y else None
        plotted = 0
        for x, y, color, marker, label in lines:
            if opts.log_y:
                y = P.log_y(y, floor)
                if len(y) == 0:
                    continue
            plt.plot(list(x), list(y), color=color, marker=marker, label=label)
            plotted += 1
        mx, my = self.marks
        if len(mx) and plotted:
            my = P.log_y(my, floor) if opts.log_y else my
            color = "default" if mono else SPIKE
            label = f"{len(mx)} spike{'s' if len(mx) > 1 else ''}"
            plt.scatter(list(mx), list(my), color=color, marker=SPIKE_MARKER, label=label)
        parts = [self.title, P.X_LABELS[opts.x]]
        if opts.grouped:
            parts.append("seed mean, min–max")
        if opts.log_y:
            parts.append("log")
        if opts.smooth:
            parts.append("smooth")
        if not plotted:
            parts.append("no data yet")
        title = " · ".join(parts)
        plt.title(title if len(title) < self.size.width - 4 else " · ".join(parts[:1] + parts[2:]))
        if opts.log_y and plotted:
            ys = np.concatenate([P.log_y(y, floor) for y in series if len(y)])
            ticks, labels = P.log_ticks(float(ys.min()), float(ys.max()))
            plt.yticks(ticks, labels)
        self._version += 1
        self.refresh()

    def _spike_marks(self, view: RunView | None, x_name: str):
        """The selected run's spikes of this plot's metric, as (x, y) points."""
        factor = P.SPIKE_FACTORS.get(self.metric)
        if view is None or factor is None:
            return NO_POINTS
        key = (view.run_id, view.generation)
        spikes = self._spikes.setdefault(key, P.Spikes(factor)).update(view.curves[self.metric])
        if not spikes:
            return NO_POINTS
        x = np.asarray(view.curves[x_name], dtype=float)[spikes]
        y = np.asarray(view.curves[self.metric], dtype=float)[spikes]
        return x, y

    def _budget(self) -> int:
        return max(40, 2 * self.size.width)  # braille: two points per cell

    def _series(self, view: RunView, x_name: str):
        xs, ys = P.finite(view.curves[x_name], view.curves[self.metric])
        return xs, ys

    def _single(self, views, selected, opts, mono):
        """Other runs faint, then the selected run (raw, and smoothed over it when asked)."""
        lines = []
        budget = self._budget()
        chosen = None
        for view in views:
            x, y = self._series(view, opts.x)
            if not len(x):
                continue
            if view.run_id == selected:
                chosen = (x, y)
                continue
            dx, dy = P.decimate(x, y, budget // 2)  # faint: coarser is enough
            lines.append((dx, dy, "default" if mono else FAINT, "·" if mono else "braille", None))
        if chosen is not None:
            x, y = chosen
            dx, dy = P.decimate(x, y, budget)
            raw_color = SELECTED_RAW if opts.smooth else SELECTED
            lines.append((dx, dy, "default" if mono else raw_color, "braille", selected))
            if opts.smooth:
                sx, sy = P.decimate(x, P.smooth(y), budget)
                lines.append(
                    (
                        sx,
                        sy,
                        "default" if mono else SMOOTHED,
                        "•" if mono else "braille",
                        "smoothed",
                    )
                )
        return lines

    def _grouped(self, views, opts, mono):
        """One line per variant: the mean over its seeds, with a min-max band and N."""
        by_variant: dict[str, list[RunView]] = {}
        for view in views:
            if view.curves["step"]:
                by_variant.setdefault(view.variant, []).append(view)
        lines = []
        budget = self._budget()
        for i, (variant, members) in enumerate(by_variant.items()):
            curves = [(v.curves["step"], v.curves[opts.x], v.curves[self.metric]) for v in members]
            x, mean, low, high = P.group_band(curves)
            if not len(x):
                continue
            color = VARIANT_COLORS.get(variant, OTHER_COLORS[i % len(OTHER_COLORS)])
            band = "default" if mono else tuple(c // 2 + 40 for c in color)
            for edge in (low, high):
                dx, dy = P.decimate(x, edge, budget)
                lines.append((dx, dy, band, "·" if mono else "braille", None))
            mid = P.smooth(mean) if opts.smooth else mean
            dx, dy = P.decimate(x, mid, budget)
            marker = MONO_MARKERS[i % len(MONO_MARKERS)] if mono else "braille"
            label = f"{variant} N={len(members)}"
            lines.append((dx, dy, "default" if mono else color, marker, label))
        return lines
