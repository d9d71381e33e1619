"""The results grid. Per cell of the swept axes (e.g. each learning rate): one row per variant
with the mean and 95% CI over its finished runs and the paired change against the baseline;
then one row per run that ended by itself (finished or diverged), with its stability numbers.

The statistics are core.stats.summarize and core.stats.compare over the session's results table
and axes: the same functions, table and axes as sessions.report, so the two show the same numbers.
"""

from __future__ import annotations

import math

import pandas as pd
from rich.text import Text
from textual.widgets import DataTable

from core import stats
from core.status import DONE, RunStatus
from labtui.runview import axis_text, short_id

HEAD = (("run", "run"), ("variant", "variant"))  # key, label; the swept axes come next
TAIL = (
    ("n", "n/seed"),
    ("ppl", "val PPL"),
    ("ci", "95% CI"),
    ("delta", "Δ vs baseline"),
    ("p", "p"),
    ("acc", "accuracy"),
    ("norm", "‖x‖"),
    ("grad", "max ‖g‖"),
    ("spikes", "spikes l/g"),
    ("logit", "max logit"),
)
SUMMARY_METRICS = ("val_ppl", "accuracy", "embed_norm")
COMPARED = "val_ppl"


def baseline_for(variants: list[str]) -> str:
    """The variant the others are compared with: "none" when present (as in sessions.report)."""
    return "none" if "none" in variants or not variants else variants[0]


def num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def _cell(text: str, style: str = "") -> Text:
    return Text(text, style=style, justify="right")


def _key(row, axes) -> tuple:
    return tuple(row[a] for a in axes)


def variant_rows(df: pd.DataFrame, axes: list[str]) -> list[dict[str, object]]:
    """Per cell x variant: n, mean and CI of the finished runs, the change against the baseline."""
    fin = stats.finished(df)
    if fin.empty:
        return []
    summary = stats.summarize(df, axes, [m for m in SUMMARY_METRICS if m in fin.columns])
    baseline = baseline_for(stats.variant_order(fin["variant"]))
    comparison = stats.compare(df, baseline, axes, metrics=[COMPARED])
    values = {(*_key(r, axes), r["variant"], r["metric"]): r for _, r in summary.iterrows()}
    changes = {(*_key(r, axes), r["variant"]): r for _, r in comparison.iterrows()}
    diverged = df[df["status"] == RunStatus.DIVERGED]

    out = []
    for _, row in summary.drop_duplicates([*axes, "variant"]).iterrows():
        key, variant = _key(row, axes), row["variant"]

        def stat(metric: str, column: str, key=key, variant=variant):
            found = values.get((*key, variant, metric))
            return None if found is None else found[column]

        lost = diverged[diverged["variant"] == variant]
        for a, v in zip(axes, key, strict=True):
            lost = lost[lost[a] == v]
        n = f"n={stat(COMPARED, 'n') or 0}" + (f" +{len(lost)} diverged" if len(lost) else "")
        cells: dict[str, object] = {
            "run": Text("mean", style="bold"),
            "variant": Text(variant, style="bold"),
            **{a: _cell(axis_text(v), "bold") for a, v in zip(axes, key, strict=True)},
            "n": _cell(n),
            "ppl": _cell(num(stat(COMPARED, "mean")), "bold"),
            "ci": _cell(f"[{num(stat(COMPARED, 'ci_low'))}, {num(stat(COMPARED, 'ci_high'))}]"),
            "delta": _cell("baseline" if variant == baseline else "—"),
            "p": _cell(""),
            "acc": _cell(num(stat("accuracy", "mean"))),
            "norm": _cell(num(stat("embed_norm", "mean"), 2)),
            "grad": _cell(""),
            "spikes": _cell(""),
            "logit": _cell(""),
        }
        change = changes.get((*key, variant))
        if change is not None and change["n_pairs"]:
            better, worse = change["ci_high"] < 0, change["ci_low"] > 0  # False when NaN
            style = "bold green" if better else "bold red" if worse else ""
            rel = change["rel_change_pct"]
            text = f"{change['mean_diff']:+.3f} ({rel:+.1f}%)" if math.isfinite(rel) else "—"
            cells["delta"] = _cell(text, style)
            p = change["p_value"]
            cells["p"] = _cell(f"{p:.3g}" if math.isfinite(p) else "—")
        out.append(cells)
    return out


def run_rows(df: pd.DataFrame, axes: list[str]) -> list[dict[str, object]]:
    """One row per run that ended by itself (finished or diverged)."""
    out = []
    for _, r in df[df["status"].isin(DONE)].iterrows():
        diverged = r["status"] == RunStatus.DIVERGED
        spikes = [r.get("loss_spikes"), r.get("grad_spikes")]
        out.append(
            {
                "run": short_id(r["run_id"]),
                "variant": r["variant"],
                **{a: _cell(axis_text(r[a])) for a in axes},
                "n": _cell(str(r["seed"])),
                "ppl": _cell("diverged", "bold red") if diverged else _cell(num(r.get("val_ppl"))),
                "ci": _cell(""),
                "delta": _cell(""),
                "p": _cell(""),
                "acc": _cell(num(r.get("accuracy"))),
                "norm": _cell(num(r.get("embed_norm"), 2)),
                "grad": _cell(num(r.get("max_grad_norm"), 2)),
                "spikes": _cell("/".join("—" if pd.isna(s) else str(int(s)) for s in spikes)),
                "logit": _cell(num(r.get("max_logit"), 1)),
            }
        )
    return out


class ResultsGrid(DataTable):
    """Statistics per cell and variant, then the runs that ended; rebuilt whenever a run ends."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.border_title = "Results"
        self.axes: list[str] = []

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for key, label in (*HEAD, *((a, a) for a in self.axes), *TAIL):
            self.add_column(label, key=key)

    def show_results(self, df: pd.DataFrame, axes: list[str]) -> None:
        """Show a results table (columns of sessions' results.csv) with its swept ``axes``."""
        self.clear(columns=list(axes) != self.axes)
        if list(axes) != self.axes:
            self.axes = list(axes)
            self._add_columns()
        if df.empty:
            return
        for i, cells in enumerate(variant_rows(df, self.axes) + run_rows(df, self.axes)):
            self.add_row(*cells.values(), key=f"row{i}")
