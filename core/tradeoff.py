"""Sweep trade-offs: how each variant fares along a learning-rate or budget sweep.

Pure functions of a results table (core.stats's input) and one swept axis. Divergence is data, never
dropped: per cell it is a diverged fraction, and in the final loss a diverged run counts as the
loss at initialization, ln(vocabulary size), the loss of a uniform guess (its PPL is the vocabulary
size). Spikes come from the per-run columns loss_spikes and grad_spikes when the session has them.

- ``sweep_table``: per cell x variant, the runs, divergences, spikes, final loss and PPL.
- ``sweep_summary``: per variant, the best cell, the learning-rate sensitivity of Wortsman et al.
  (2023) (mean over the grid of min(final loss, initial loss) minus the best final loss) and the
  stable range (cells where no seed diverged or spiked).
- ``winners``: per cell, the variant with the lowest final PPL (a diverged run counted as the
  vocabulary size: divergence loses), against the baseline with core.stats.compare's paired
  interval and p-value (over the seeds where both finished).
- ``flip_paragraph``: where the winner changes along the axis and where each variant crosses the
  baseline, in words, from those tables.
- ``analyse``: all of them for one swept axis, per cell of any other swept axes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core import stats
from core.stats import fmt
from core.status import DONE, RunStatus

LR_AXIS = "lr"
BUDGET_AXIS = "iters"  # the budget in tokens is iters x batch_size x block_size
SPIKE_COLUMNS = ("loss_spikes", "grad_spikes")
TABLE_COLUMNS = (
    "variant", "n_done", "n_finished", "n_diverged", "diverged_frac", "n_spiked", "n_other",
    "final_loss", "final_ppl", "ppl_mean", "ppl_ci_low", "ppl_ci_high", "stable",
)  # fmt: skip
WINNER_COLUMNS = (
    "ranking", "winner", "winner_ppl", "challenger", "baseline", "baseline_ppl", "n_pairs",
    "diff", "ci_low", "ci_high", "p_value",
)  # fmt: skip


def init_loss(vocab_size: int) -> float:
    """The loss of a uniform guess over the vocabulary: a model's loss at initialization."""
    if vocab_size < 2:
        raise ValueError(f"a vocabulary has at least 2 symbols, got {vocab_size}")
    return math.log(vocab_size)


def spikes_known(df: pd.DataFrame) -> bool:
    """Whether ``df`` records spike counts (sessions from before them do not)."""
    return all(c in df.columns and df[c].notna().any() for c in SPIKE_COLUMNS)


def sweep_table(df: pd.DataFrame, axis: str, loss0: float, others=()) -> pd.DataFrame:
    """Per cell of ``axis`` (and of the ``others`` swept axes) x variant:

    n_done (finished + diverged), n_finished, n_diverged, diverged_frac (of n_done), n_spiked (done
    runs with a loss or gradient spike; NaN when not recorded), n_other (runs not done: pending,
    cancelled, failed...), final_loss and final_ppl (mean over the done runs, a diverged run
    counted as ``loss0`` and exp(loss0)), ppl_mean / ppl_ci_low / ppl_ci_high (val PPL of the
    finished runs, 95% t-interval) and stable (done runs, none diverged or spiked).
    """
    known = spikes_known(df)
    rows = []
    for cell, cell_df in stats.cells(df, [*others, axis]):
        for variant in stats.variant_order(cell_df["variant"]):
            runs = cell_df[cell_df["variant"] == variant]
            done = runs[runs["status"].isin(DONE)]
            div = done["status"] == RunStatus.DIVERGED
            fin = done[done["status"] == RunStatus.FINISHED]
            loss = done["val_loss"].where(~div, loss0).dropna().to_numpy(dtype=float)
            ppl = fin["val_ppl"].dropna().to_numpy(dtype=float)
            n_spiked = math.nan
            if known:
                counts = done[list(SPIKE_COLUMNS)].fillna(0).astype(float)
                n_spiked = int((counts > 0).any(axis=1).sum())
            lo, hi = stats.t_interval(ppl)
            rows.append(
                {
                    **cell,
                    "variant": variant,
                    "n_done": len(done),
                    "n_finished": len(fin),
                    "n_diverged": int(div.sum()),
                    "diverged_frac": div.mean() if len(done) else math.nan,
                    "n_spiked": n_spiked,
                    "n_other": len(runs) - len(done),
                    "final_loss": loss.mean() if len(loss) else math.nan,
                    "final_ppl": np.exp(loss).mean() if len(loss) else math.nan,
                    "ppl_mean": ppl.mean() if len(ppl) else math.nan,
                    "ppl_ci_low": lo,
                    "ppl_ci_high": hi,
                    "stable": bool(len(done)) and not div.any() and not (n_spiked > 0),
                }
            )
    return pd.DataFrame(rows, columns=[*others, axis, *TABLE_COLUMNS])


def sweep_summary(table: pd.DataFrame, axis: str, loss0: float, others=()) -> pd.DataFrame:
    """Per variant (and cell of ``others``), from a ``sweep_table``:

    best (the ``axis`` value of the lowest final loss; the smaller value on a tie), best_loss,
    best_ppl (final_ppl there), sensitivity (mean over the grid of min(final loss, loss0) minus
    best_loss), stable (the ``axis`` values where no seed diverged or spiked, ascending) and
    n_cells (cells with a done run).
    """
    rows = []
    for cell, cell_df in stats.cells(table, others):
        for variant in stats.variant_order(cell_df["variant"]):
            line = cell_df[cell_df["variant"] == variant].sort_values(axis)
            line = line[line["n_done"] > 0]
            losses = line["final_loss"].to_numpy(dtype=float)
            ok = ~np.isnan(losses)
            if ok.any():
                i = int(np.nanargmin(losses))
                best, best_loss, best_ppl = line[axis].iloc[i], losses[i], line["final_ppl"].iloc[i]
                sensitivity = float(np.mean(np.minimum(losses[ok], loss0)) - best_loss)
            else:
                best = best_loss = best_ppl = sensitivity = math.nan
            rows.append(
                {
                    **cell,
                    "variant": variant,
                    "best": best,
                    "best_loss": best_loss,
                    "best_ppl": best_ppl,
                    "sensitivity": sensitivity,
                    "stable": tuple(line.loc[line["stable"], axis]),
                    "n_cells": int(ok.sum()),
                }
            )
    columns = [*others, "variant", "best", "best_loss", "best_ppl", "sensitivity", "stable"]
    return pd.DataFrame(rows, columns=[*columns, "n_cells"])


def stable_text(values, grid) -> str:
    """The stable values in words: "0.0001 to 0.001" for a run of neighbours in ``grid``, else a
    list; "none" when empty."""
    grid = sorted(grid)
    values = sorted(values)
    if not values:
        return "none"
    idx = [grid.index(v) for v in values]
    if len(values) > 1 and idx == list(range(idx[0], idx[0] + len(idx))):
        return f"{fmt(values[0])} to {fmt(values[-1])}"
    return ", ".join(fmt(v) for v in values)


def winners(
    df: pd.DataFrame, table: pd.DataFrame, axis: str, baseline: str = "none", others=()
) -> pd.DataFrame:
    """Per cell: ranking (variants by final PPL, a diverged run counted as at initialization;
    those without a done run named apart, unranked), the winner and its final PPL; challenger
    (the winner, or the best other variant when the baseline wins) against the baseline:
    n_pairs, diff (paired mean over seeds where both finished, challenger - baseline), ci_low,
    ci_high and p_value from core.stats.compare."""
    keys = [*others, axis]
    comp = stats.compare(df, baseline, keys, metrics=["val_ppl"])
    rows = []
    for cell, cell_df in stats.cells(table, keys):
        ranked = _ranked(cell_df)
        rated = [v for v in ranked if not math.isnan(_ppl(cell_df, v))]
        winner = rated[0] if rated else None
        others_rated = [v for v in rated if v != baseline]
        challenger = winner if winner != baseline else (others_rated or [None])[0]
        ranking = _ranking_text(ranked, cell_df)
        row = {
            **cell,
            "ranking": ranking,
            "winner": _best(ranking) if winner is not None else None,  # "a tie (a = b)" on a tie
            "winner_ppl": _ppl(cell_df, winner),
            "challenger": challenger,
            "baseline": baseline,
            "baseline_ppl": _ppl(cell_df, baseline),
            "n_pairs": 0,
            "diff": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": math.nan,
        }
        match = comp[comp["variant"] == challenger]
        for name, value in cell.items():
            match = match[match[name] == value]
        if challenger is not None and len(match):
            m = match.iloc[0]
            row.update(
                n_pairs=int(m.n_pairs),
                diff=m.mean_diff,
                ci_low=m.ci_low,
                ci_high=m.ci_high,
                p_value=m.p_value,
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *WINNER_COLUMNS])


def _ppl(cell_df: pd.DataFrame, variant) -> float:
    """The variant's final PPL in a cell (a diverged run counted as the vocabulary size)."""
    values = cell_df.loc[cell_df["variant"] == variant, "final_ppl"]
    return float(values.iloc[0]) if len(values) else math.nan


def _ranking_text(ranked: list[str], cell_df: pd.DataFrame) -> str:
    """ "rmsnorm < none = layernorm": ties (equal final PPL) joined by "="; variants without a
    done run are not ranked but named: "none < rmsnorm (no run done: layernorm)"."""
    rated = [v for v in ranked if not math.isnan(_ppl(cell_df, v))]
    text = rated[0] if rated else ""
    for a, b in itertools.pairwise(rated):
        text += (" = " if _ppl(cell_df, a) == _ppl(cell_df, b) else " < ") + b
    if unrated := [v for v in ranked if v not in rated]:
        text += f"{' ' if text else ''}(no run done: {', '.join(unrated)})"
    return text


def _ranked(cell_df: pd.DataFrame) -> list[str]:
    order = stats.variant_order(cell_df["variant"])
    ppl = {v: _ppl(cell_df, v) for v in order}
    return sorted(order, key=lambda v: (math.isnan(ppl[v]), ppl[v], order.index(v)))


def flip_paragraph(table: pd.DataFrame, wins: pd.DataFrame, axis: str) -> str:
    """Where the winner changes along ``axis`` and where each variant crosses the baseline (by
    final PPL), or that the ranking never flips in the grid. For one cell of any other axes
    (filter the tables first); every number is an ``axis`` value or a PPL of ``table``, printed
    as the tables print it (``fmt``)."""
    wins = wins.sort_values(axis)
    cells = [r for r in wins.itertuples() if not pd.isna(r.winner)]
    if not cells:
        return f"No run finished or diverged in any {axis} cell: there is no ranking yet."
    values = [getattr(r, axis) for r in cells]
    head = (
        f"Ranked by final PPL (mean over seeds, a diverged run counted as the vocabulary size; "
        f"lower is better) over {axis} = {', '.join(fmt(v) for v in values)}"
    )
    segments = [
        f"{best} at {_span(axis, [getattr(r, axis) for r in group])}"
        for best, group in itertools.groupby(cells, key=lambda r: _best(r.ranking))
    ]
    if len(segments) == 1 and len({r.ranking for r in cells}) == 1:
        sentences = [
            f"{head}, the ranking never flips in the grid: {cells[0].ranking} at every {axis}."
        ]
    else:
        sentences = [f"{head}, the best variant is " + ", then ".join(segments) + "."]
        sentences += _crossings(table, cells, values, axis)
    diverged = table[table["n_diverged"] > 0].sort_values(axis)
    if len(diverged):
        listing = ", ".join(
            f"{d.variant} {d.n_diverged} of {d.n_done} at {fmt(getattr(d, axis))}"
            for d in diverged.itertuples()
        )
        sentences.append(f"Diverged runs (counted in the final PPL): {listing}.")
    return " ".join(sentences)


def _best(ranking: str) -> str:
    """The best of a ranking text: "rmsnorm", or "a tie (none = rmsnorm)" when several share the
    lowest final PPL (every run diverged, say): the winner of a tie is no winner."""
    first = ranking.split(" (no run done")[0].split(" < ")[0]
    return f"a tie ({first})" if " = " in first else first


def _crossings(table: pd.DataFrame, cells: list, values: list, axis: str) -> list[str]:
    """One sentence per variant: on which side of the baseline it is, and where it crosses."""
    sentences = []
    baseline = cells[0].baseline
    for variant in stats.variant_order(table["variant"]):
        if variant == baseline:
            continue
        sides = []  # (axis value, "better" | "worse" | "level", variant PPL, baseline PPL)
        for value in values:
            rows = table[table[axis] == value]
            mine, base = _ppl(rows, variant), _ppl(rows, baseline)
            if not (math.isnan(mine) or math.isnan(base)):
                side = "better" if mine < base else "worse" if mine > base else "level"
                sides.append((value, side, mine, base))
        if not sides:
            continue
        runs = [list(group) for _, group in itertools.groupby(sides, key=lambda s: s[1])]
        parts = [f"{group[0][1]} at {_span(axis, [s[0] for s in group])}" for group in runs]
        if len(runs) == 1:
            side = {"better": "better than", "worse": "worse than", "level": "level with"}
            text = (
                f"{variant} is {side[runs[0][0][1]]} {baseline} at every {axis}: it never "
                "crosses it in the grid"
            )
        else:
            changes = ", ".join(
                f"{_change(a[-1][1], b[0][1])} {baseline} between {fmt(a[-1][0])} "
                f"({fmt(a[-1][2])} vs {fmt(a[-1][3])}) and {fmt(b[0][0])} "
                f"({fmt(b[0][2])} vs {fmt(b[0][3])})"
                for a, b in itertools.pairwise(runs)
            )
            text = f"Against {baseline}, {variant} is {', '.join(parts)}: it {changes}"
        sentences.append(text[0].upper() + text[1:] + ".")
    return sentences


def _change(before: str, after: str) -> str:
    """How a variant moves against the baseline from one side ("better", "worse", "level") to
    another: only better to worse (or back) crosses it."""
    if after == "level":
        return "draws level with"
    return "parts from" if before == "level" else "crosses"


def _span(axis: str, values: list) -> str:
    """ "lr = 0.001" or "lr = 0.001 to 0.01" for neighbouring grid values."""
    if len(values) == 1:
        return f"{axis} = {fmt(values[0])}"
    return f"{axis} = {fmt(values[0])} to {fmt(values[-1])}"


@dataclass
class Sweep:
    """The trade-off along one swept axis: the tables above and one paragraph per cell of the
    other swept axes ({} when there are none)."""

    axis: str
    others: list[str]
    loss0: float
    table: pd.DataFrame
    summary: pd.DataFrame
    winners: pd.DataFrame
    paragraphs: list[tuple[dict, str]] = field(default_factory=list)

    @property
    def grid(self) -> list:
        return sorted(set(self.table[self.axis]))


def analyse(df: pd.DataFrame, axis: str, loss0: float, baseline: str = "none", others=()) -> Sweep:
    """``sweep_table``, ``sweep_summary``, ``winners`` and ``flip_paragraph`` along ``axis``."""
    others = list(others)
    table = sweep_table(df, axis, loss0, others)
    wins = winners(df, table, axis, baseline, others)
    paragraphs = []
    for cell, cell_wins in stats.cells(wins, others):
        cell_table = table
        for name, value in cell.items():
            cell_table = cell_table[cell_table[name] == value]
        paragraphs.append((cell, flip_paragraph(cell_table, cell_wins, axis)))
    summary = sweep_summary(table, axis, loss0, others)
    return Sweep(axis, others, loss0, table, summary, wins, paragraphs)
