"""The results grid: one row per variant (mean and CI, change against the baseline), then one row
per finished run. Numbers come from core.stats, the same functions the report uses.
"""

from __future__ import annotations

import math

import pandas as pd
from rich.text import Text
from textual.widgets import DataTable

from core import stats

COLUMNS = (
    ("run", "run"),
    ("variant", "variant"),
    ("n", "n/seed"),
    ("ppl", "val PPL"),
    ("ci", "95% CI"),
    ("delta", "Δ vs none"),
    ("p", "p"),
    ("acc", "accuracy"),
    ("norm", "‖x‖"),
)
BASELINE = "none"


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def _cell(text: str, style: str = "") -> Text:
    return Text(text, style=style, justify="right")


def variant_rows(df: pd.DataFrame) -> list[dict[str, object]]:
    """Mean ± CI per variant and the paired change against the baseline, as table cells."""
    fin = stats.finished(df)
    if fin.empty:
        return []
    summary = stats.summarize(
        fin, metrics=[m for m in ("val_ppl", "accuracy", "embed_norm") if m in fin.columns]
    )
    has_base = BASELINE in set(fin["variant"]) and fin["variant"].nunique() > 1
    comparison = stats.compare(fin, BASELINE, metrics=["val_ppl"]) if has_base else None

    def value(variant: str, metric: str, column: str):
        rows = summary[(summary["variant"] == variant) & (summary["metric"] == metric)]
        return rows[column].iloc[0] if len(rows) else None

    out = []
    for variant in stats.variant_order(fin["variant"]):
        cells: dict[str, object] = {
            "run": Text("mean", style="bold"),
            "variant": Text(variant, style="bold"),
            "n": _cell(f"n={value(variant, 'val_ppl', 'n') or 0}"),
            "ppl": _cell(_num(value(variant, "val_ppl", "mean")), "bold"),
            "ci": _cell(
                f"[{_num(value(variant, 'val_ppl', 'ci_low'))}, "
                f"{_num(value(variant, 'val_ppl', 'ci_high'))}]"
            ),
            "delta": _cell("baseline" if variant == BASELINE else "—"),
            "p": _cell(""),
            "acc": _cell(_num(value(variant, "accuracy", "mean"))),
            "norm": _cell(_num(value(variant, "embed_norm", "mean"), 2)),
        }
        if comparison is not None and variant != BASELINE:
            row = comparison[comparison["variant"] == variant]
            if len(row):
                r = row.iloc[0]
                rel = r["rel_change_pct"]
                better = r["ci_high"] < 0 if r["ci_high"] == r["ci_high"] else False
                worse = r["ci_low"] > 0 if r["ci_low"] == r["ci_low"] else False
                style = "bold green" if better else "bold red" if worse else ""
                diff = r["mean_diff"]
                cells["delta"] = _cell(
                    f"{diff:+.3f} ({rel:+.1f}%)" if math.isfinite(rel) else "—", style
                )
                cells["p"] = _cell(f"{r['p_value']:.3g}" if math.isfinite(r["p_value"]) else "—")
        out.append(cells)
    return out


def run_rows(df: pd.DataFrame) -> list[dict[str, object]]:
    """One row per run that ended by itself (finished or diverged)."""
    out = []
    done = df[df["status"].isin(("finished", "diverged"))]
    for _, r in done.iterrows():
        diverged = r["status"] == "diverged"
        out.append(
            {
                "run": r["run_id"],
                "variant": r["variant"],
                "n": _cell(str(r["seed"])),
                "ppl": _cell(
                    "diverged" if diverged else _num(r.get("val_ppl")), "red" if diverged else ""
                ),
                "ci": _cell(""),
                "delta": _cell(""),
                "p": _cell(""),
                "acc": _cell(_num(r.get("accuracy"))),
                "norm": _cell(_num(r.get("embed_norm"), 2)),
            }
        )
    return out


class ResultsGrid(DataTable):
    """Finished runs and per-variant statistics; rebuilt whenever a run ends."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.border_title = "Results"

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show_results(self, df: pd.DataFrame) -> None:
        self.clear()
        if df.empty:
            return
        rows = variant_rows(df) + run_rows(df)
        for i, cells in enumerate(rows):
            self.add_row(*(cells[k] for k, _ in COLUMNS), key=f"row{i}")
