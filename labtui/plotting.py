"""Pure helpers for the console's plots: decimation, smoothing, log scale, seed bands, spikes.

Nothing here imports Textual or plotext; every function takes and returns plain sequences or
numpy arrays, so the tests check the numbers directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.metrics import GRAD_SPIKE_FACTOR, LOSS_SPIKE_FACTOR, SPIKE_WINDOW, spike_steps

X_AXES = ("step", "tokens", "elapsed_s")
X_LABELS = {"step": "step", "tokens": "tokens", "elapsed_s": "seconds"}
SPIKE_FACTORS = {"loss": LOSS_SPIKE_FACTOR, "grad_norm": GRAD_SPIKE_FACTOR}  # curves with spikes


@dataclass(frozen=True)
class PlotOptions:
    """How the curves are drawn; the console's keys change these."""

    x: str = "step"  # one of X_AXES
    log_y: bool = False
    smooth: bool = False
    grouped: bool = False

    def next_x(self) -> str:
        return X_AXES[(X_AXES.index(self.x) + 1) % len(X_AXES)]


def finite(xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points whose x and y are both finite (NaN losses of a diverged run drop out)."""
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def decimate(xs: Sequence[float], ys: Sequence[float], max_points: int):
    """At most ``max_points`` points: each bucket of consecutive points keeps its min and max.

    Spikes survive (a bucket's extreme is always kept) and the order along x is preserved.
    """
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    n = len(x)
    if n <= max_points or n == 0:
        return x, y
    buckets = max(1, max_points // 2)
    edges = np.unique(np.linspace(0, n, buckets + 1).astype(int))
    bucket = np.repeat(np.arange(len(edges) - 1), np.diff(edges))
    order = np.lexsort((y, bucket))  # by bucket, then by value within it
    keep = np.unique(np.concatenate([order[edges[:-1]], order[edges[1:] - 1]]))
    return x[keep], y[keep]


def smooth(ys: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """Exponential moving average with bias correction (the first points are not pulled to 0)."""
    y = np.asarray(ys, dtype=float)
    out = np.empty_like(y)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(y):
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = avg / norm
    return out


def log_floor(*series: Sequence[float]) -> float | None:
    """The smallest positive value over all series (None when nothing is positive)."""
    lows = [float(np.min(y[y > 0])) for y in map(np.asarray, series) if np.any(y > 0)]
    return min(lows) if lows else None


def log_y(ys: Sequence[float], floor: float | None = None) -> np.ndarray:
    """log10 of the values; values <= 0 sit at ``floor`` (default: the smallest positive value).

    Empty when there is no positive value to put them at.
    """
    y = np.asarray(ys, dtype=float)
    if floor is None:
        floor = log_floor(y)
    if floor is None or floor <= 0:
        return np.empty(0)
    return np.log10(np.maximum(y, floor))


def log_ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], list[str]]:
    """Tick positions (in log10 units) between lo and hi, labelled with the real values."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [], []
    if hi - lo >= 2:  # several decades: one tick per power of ten
        first, last = math.ceil(lo), math.floor(hi)
        step = max(1, math.ceil((last - first + 1) / count))
        ticks = [float(k) for k in range(first, last + 1, step)]
    elif hi > lo:
        ticks = list(np.linspace(lo, hi, count))
    else:
        ticks = [lo]
    return ticks, [format_value(10**t) for t in ticks]


def format_value(v: float) -> str:
    """A short label for an axis tick or a table cell."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.3g}"


def group_band(curves: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float]]]):
    """Mean and min-max band over seeds, aligned on step.

    ``curves`` holds (steps, xs, ys) per run. Returns (x, mean, low, high) arrays over the steps
    any run reached; x is the mean x at that step (tokens or seconds differ between runs).
    """
    rows: dict[float, list[tuple[float, float]]] = {}
    for steps, xs, ys in curves:
        for s, x, y in zip(steps, xs, ys, strict=False):
            if math.isfinite(x) and math.isfinite(y):
                rows.setdefault(s, []).append((x, y))
    if not rows:
        empty = np.empty(0)
        return empty, empty, empty, empty
    order = sorted(rows)
    x = np.array([np.mean([p[0] for p in rows[s]]) for s in order])
    vals = [np.array([p[1] for p in rows[s]]) for s in order]
    mean = np.array([v.mean() for v in vals])
    low = np.array([v.min() for v in vals])
    high = np.array([v.max() for v in vals])
    return x, mean, low, high


class Spikes:
    """The spikes (0-based step indices) of one growing per-step series, by
    core.metrics.spike_steps. A step is judged by the SPIKE_WINDOW steps before it, so an answer
    never changes: each update looks only at the steps added since the last one."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.seen = 0  # steps already judged
        self.found: list[int] = []

    def update(self, values: Sequence[float]) -> list[int]:
        if len(values) < self.seen:  # cut back (a resumed run): judge again from the start
            self.seen, self.found = 0, []
        start = max(0, self.seen - SPIKE_WINDOW)
        new = spike_steps(values[start:], self.factor, SPIKE_WINDOW)
        self.found += [start + i for i in new if start + i >= self.seen]
        self.seen = len(values)
        return self.found


def gauge_scale(value: float | None, mark: float) -> float:
    """The full-scale value of the embedding-norm gauge: room for the value and for sqrt(width)."""
    top = 2 * mark
    if value is not None and math.isfinite(value):
        top = max(top, 1.15 * value)
    return top


def format_duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `12s`; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass(frozen=True)
class SweepAxis:
    """Where a swept axis's values go on a plot's x axis, and their tick labels."""

    name: str
    positions: dict  # axis value -> x
    ticks: list[float]
    labels: list[str]
    log: bool


def sweep_axis(name: str, values: Sequence) -> SweepAxis:
    """x positions of a swept axis: log10 for a learning rate and for any positive axis that
    spans a decade or more, the values themselves for other numbers, 0, 1, ... for anything else
    (a schedule, a precision)."""
    numbers = all(_is_number(v) for v in values)
    values = sorted(set(values), key=lambda v: v if numbers else str(v))
    positive = numbers and bool(values) and min(values) > 0
    log = positive and (name == "lr" or max(values) / min(values) >= 10)
    if log:
        positions = {v: math.log10(v) for v in values}
    elif numbers:
        positions = {v: float(v) for v in values}
    else:
        positions = {v: float(i) for i, v in enumerate(values)}
    labels = [f"{v:g}" if numbers else str(v) for v in values]
    return SweepAxis(name, positions, [positions[v] for v in values], labels, log)


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
