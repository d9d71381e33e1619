"""The report's PNG figures, drawn headless with matplotlib's Agg canvas.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas and never through pyplot: no
global backend switch, no window, safe from a worker thread. Every figure is 8 x 5 inches at
100 dpi: 800 x 500 pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from core.stats import METRICS, t_interval, variant_order
from sessions import atomic

SIZE = (8, 5)  # inches
DPI = 100
COLORS = {"none": "tab:gray", "layernorm": "tab:blue", "rmsnorm": "tab:orange"}


def _color(variant: str, i: int) -> str:
    return COLORS.get(variant, f"C{(i + 3) % 10}")


def _figure(n_panels: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    axs = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axs[n_panels:]:
        ax.set_visible(False)
    return fig, axs[:n_panels]


def _cell_title(cell: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items())


def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG whole or not at all (a kill or a full disk never leaves half a figure)."""
    atomic.write_with(path, lambda f: fig.savefig(f, dpi=DPI, format="png"))
    return path


def curves(
    series: dict[str, list[pd.DataFrame]],
    column: str,
    ylabel: str,
    title: str,
    path: Path,
    cells: dict[str, dict] | None = None,
    log: bool = False,
) -> Path:
    """One line per variant: the mean of ``column`` over its runs against step, min-max band.

    ``series`` maps a key (variant, or "variant|cell" when ``cells`` gives each key's cell) to
    the metrics tables of that variant's runs; a panel is drawn per cell.
    """
    cells = cells or {key: {} for key in series}
    ordered = sorted({tuple(c.items()) for c in cells.values()}, key=lambda c: [v for _, v in c])
    panels = [_cell_title(dict(c)) for c in ordered]
    fig, axs = _figure(max(len(panels), 1))
    variants = variant_order(key.split("|")[0] for key in series)
    for key, tables in series.items():
        variant = key.split("|")[0]
        ax = axs[panels.index(_cell_title(cells[key]))]
        runs = [t.set_index("step")[column] for t in tables if column in t and len(t)]
        if not runs:
            continue
        table = pd.concat(runs, axis=1).sort_index()
        color = _color(variant, variants.index(variant))
        ax.plot(table.index, table.mean(axis=1), color=color, lw=1.2, label=variant)
        if len(runs) > 1:
            ax.fill_between(
                table.index, table.min(axis=1), table.max(axis=1), color=color, alpha=0.2, lw=0
            )
    for ax, panel in zip(axs, panels or [""], strict=False):
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(panel or title, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if panels and panels != [""]:
        fig.suptitle(title)
    return _save(fig, path)


def final_metric(df: pd.DataFrame, metric: str, path: Path, axes=()) -> Path:
    """Final metric per variant: one point per seed, the mean and its 95% t-interval."""
    label = METRICS.get(metric, (metric, None))[0]
    cells = [((), df)] if not axes else list(df.groupby(list(axes), sort=True))
    fig, axs = _figure(max(len(cells), 1))
    rng = np.random.default_rng(0)  # fixed jitter: the same picture every time
    for ax, (key, cell_df) in zip(axs, cells, strict=False):
        variants = variant_order(cell_df["variant"])
        for i, variant in enumerate(variants):
            values = cell_df.loc[cell_df["variant"] == variant, metric].dropna().to_numpy(float)
            if not len(values):
                continue
            color = _color(variant, i)
            x = i + rng.uniform(-0.12, 0.12, len(values)) - 0.15
            ax.scatter(x, values, s=18, color=color, alpha=0.7, label="seeds" if i == 0 else None)
            lo, hi = t_interval(values)
            mean = values.mean()
            yerr = None if math.isnan(lo) else [[mean - lo], [hi - mean]]
            ax.errorbar(
                i + 0.15,
                mean,
                yerr=yerr,
                fmt="o",
                color="black",
                capsize=4,
                ms=5,
                label="mean, 95% CI" if i == 0 else None,
            )
        ax.set_xticks(range(len(variants)), variants)
        ax.set_ylabel(label)
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(_cell_title(dict(zip(axes, key, strict=False))) or f"final {label}")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    return _save(fig, path)


def metric_vs_axis(summary: pd.DataFrame, metric: str, axis: str, axes, path: Path) -> Path:
    """Mean final metric (95% CI bars) against a swept axis, one line per variant.

    With more than one swept axis, each combination of the others gets its own line. An axis
    of words (precision, schedule) or of yes/no is drawn as evenly spaced categories.
    """
    label = METRICS.get(metric, (metric, None))[0]
    rows = summary[summary["metric"] == metric]
    others = [a for a in axes if a != axis]
    fig, (ax,) = _figure(1)
    variants = variant_order(rows["variant"])
    numeric = pd.api.types.is_numeric_dtype(rows[axis]) and not pd.api.types.is_bool_dtype(
        rows[axis]
    )
    categories = [] if numeric else sorted(set(rows[axis]), key=str)
    position = categories.index if categories else (lambda v: v)
    for (variant, *rest), line in rows.groupby(["variant", *others], sort=False):
        line = line.sort_values(axis)
        name = variant + (
            "" if not rest else f" ({_cell_title(dict(zip(others, rest, strict=True)))})"
        )
        yerr = np.vstack([line["mean"] - line["ci_low"], line["ci_high"] - line["mean"]])
        ax.errorbar(
            [position(v) for v in line[axis]],
            line["mean"],
            yerr=np.nan_to_num(yerr),
            fmt="o-",
            capsize=3,
            color=_color(variant, variants.index(variant)) if not others else None,
            label=name,
        )
    if categories:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        ax.set_xlim(-0.5, len(categories) - 0.5)
    else:
        values = rows[axis].to_numpy(dtype=float)
        if len(values) and values.min() > 0 and values.max() / values.min() >= 3:
            ax.set_xscale("log")
        ticks = np.unique(values)
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks], minor=False)
    ax.minorticks_off()
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{label} (mean, 95% CI)")
    ax.set_title(f"final {label} against {axis}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def tradeoff(table: pd.DataFrame, axis: str, path: Path, xlabel: str, x=None, others=()) -> Path:
    """Final val PPL of the finished runs (mean, 95% t-interval) against a swept axis, one line
    per variant (and cell of ``others``), from a core.tradeoff sweep table.

    ``x`` maps an axis value to its position (e.g. iters to training tokens). Diverged runs have
    no PPL: an x in a band above the data marks them, with their count.
    """
    fig, (ax,) = _figure(1)
    variants = variant_order(table["variant"])
    others = list(others)
    position = (lambda v: x[v]) if x else (lambda v: v)
    diverged = []  # (x, row of the band, color, count)
    for row, ((variant, *rest), line) in enumerate(table.groupby(["variant", *others], sort=False)):
        line = line.sort_values(axis)
        color = _color(variant, variants.index(variant)) if not others else None
        name = variant + (f" ({_cell_title(dict(zip(others, rest, strict=True)))})" if rest else "")
        xs = np.array([position(v) for v in line[axis]], dtype=float)
        mean = line["ppl_mean"].to_numpy(dtype=float)
        yerr = np.vstack([mean - line["ppl_ci_low"], line["ppl_ci_high"] - mean])
        bars = ax.errorbar(
            xs, mean, yerr=np.nan_to_num(yerr), fmt="o-", capsize=3, color=color, label=name
        )
        color = bars.lines[0].get_color()
        diverged += [(xp, row, color, n) for xp, n in zip(xs, line["n_diverged"], strict=True) if n]
    xs = np.unique([position(v) for v in table[axis]]).astype(float)
    if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 3:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{v:g}" for v in xs], minor=False)
    ax.minorticks_off()
    ppl = table[["ppl_ci_low", "ppl_mean", "ppl_ci_high"]].to_numpy(dtype=float)
    ppl = ppl[np.isfinite(ppl)]
    if len(ppl) and ppl.min() > 0 and ppl.max() / ppl.min() >= 3:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if diverged:
        _band_on_top(ax, len(table.groupby(["variant", *others])))
        band = ax.get_xaxis_transform()  # x in data, y in axes fraction
        for xpos, row, color, n in diverged:
            y = 0.96 - 0.05 * row
            ax.plot(xpos, y, "x", color=color, ms=7, mew=2, transform=band)
            ax.annotate(
                str(n), (xpos, y), xycoords=band, xytext=(5, -4), textcoords="offset points",
                color=color, fontsize=8,
            )  # fmt: skip
        ax.plot([], [], "x", color="black", mew=2, label="diverged runs (count)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final val PPL (finished runs, mean and 95% CI)")
    ax.set_title(f"final val PPL against {xlabel}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _band_on_top(ax, rows: int) -> None:
    """Raise the top of the y axis so that the data leave a band of ``rows`` marker rows free."""
    free = min(0.05 * rows + 0.04, 0.5)
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        ax.set_ylim(lo, lo * (hi / lo) ** (1 / (1 - free)))
    else:
        ax.set_ylim(lo, lo + (hi - lo) / (1 - free))
