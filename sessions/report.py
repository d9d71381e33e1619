"""A session's report: statistics (stats.csv, pairs.csv), figures and report.md in its report/.

Reads the session only through sessions.store; works on a session that is partly finished (only
finished runs enter the numbers, and the report says how many there are).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core import stats
from core.status import DONE, STATUS_ORDER, RunStatus
from sessions import figures
from sessions.store import SessionError

CURVES = (  # figure file, metrics.csv column, y label, title, log scale
    ("loss.png", "loss", "training loss (nats/char)", "training loss", False),
    ("grad_norm.png", "grad_norm", "total gradient norm", "gradient norm", True),
    ("embed_norm.png", "embed_norm", "first-block input norm", "first-block input norm", True),
)
FINAL_METRIC = "val_ppl"


@dataclass
class ReportResult:
    """What the report found and the files it wrote."""

    name: str
    out_dir: Path
    files: list[Path]
    summary: pd.DataFrame
    comparison: pd.DataFrame
    pairs: pd.DataFrame
    problems: list[str]  # budget check and unpaired seeds, one line each
    status_counts: dict[RunStatus, int]  # in STATUS_ORDER, statuses with no run left out
    planned: int  # runs in the study
    n_finished: int
    baseline: str
    axes: list[str] = field(default_factory=list)
    results: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # every run

    @property
    def partial(self) -> bool:
        """Some runs are still to do (pending, running, interrupted, cancelled or failed)."""
        done = sum(n for status, n in self.status_counts.items() if status in DONE)
        return done < self.planned

    @property
    def status_line(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.status_counts.items())
        head = f"{self.n_finished} of {self.planned} runs finished"
        return (f"partial: {head}" if self.partial else head) + (f" ({counts})" if counts else "")


def write_report(session, out_dir: str | Path | None = None) -> ReportResult:
    """Compute the statistics of ``session`` and write stats.csv, pairs.csv, report.md, figures."""
    out = Path(out_dir) if out_dir is not None else Path(session.path) / "report"
    out.mkdir(parents=True, exist_ok=True)
    study = session.study
    records = list(session.runs())
    df = _results(session, records)
    axes = [a for a in session.axes() if a in df.columns]
    fin = stats.finished(df)
    variants = stats.variant_order(fin["variant"])
    baseline = "none" if "none" in variants or not variants else variants[0]

    summary = stats.summarize(df, axes)
    comparison = stats.compare(df, baseline, axes)
    metrics = stats.metrics_in(fin) or ["val_ppl"]
    pairs = pd.concat(
        [stats.paired_differences(df, m, baseline, axes) for m in metrics], ignore_index=True
    )
    problems = stats.budget_check(df, axes) + _unpaired_lines(comparison, axes)
    counts = Counter(r.status for r in records)
    status_counts = {s: counts[s] for s in STATUS_ORDER if counts[s]}
    planned = max(len(study.specs()), len(records))

    result = ReportResult(
        name=session.name,
        out_dir=out,
        files=[],
        summary=summary,
        comparison=comparison,
        pairs=pairs,
        problems=problems,
        status_counts=status_counts,
        planned=planned,
        n_finished=len(fin),
        baseline=baseline,
        axes=axes,
        results=df,
    )
    result.files.append(_write_csv(_stats_table(summary, comparison, axes), out / "stats.csv"))
    result.files.append(_write_csv(pairs, out / "pairs.csv"))
    if len(fin):
        result.files += _figures(session, fin, summary, axes, out)
    report_md = out / "report.md"
    report_md.write_text(_markdown(result, session), encoding="utf-8")
    result.files.insert(2, report_md)
    return result


def _results(session, records) -> pd.DataFrame:
    """Every run: the rows of results.csv, then the runs without a result yet (status only)."""
    df = session.results()
    have = set(df["run_id"])
    waiting = pd.DataFrame(
        [
            {
                "run_id": r.run_id,
                "variant": r.spec.variant,
                "seed": r.spec.seed,
                "status": r.status,
                **{a: getattr(r.spec, a) for a in session.axes()},
            }
            for r in records
            if r.run_id not in have
        ]
    )
    if len(waiting):
        parts = [t for t in (df, waiting) if len(t)]
        df = pd.concat(parts, ignore_index=True).reindex(columns=df.columns)
    for i in df.index[df["best_val_loss"].isna() & (df["status"] == RunStatus.FINISHED)]:
        evals = _read(session.evals, df.at[i, "run_id"])
        if evals is not None and "val_loss" in evals and evals["val_loss"].notna().any():
            df.at[i, "best_val_loss"] = float(evals["val_loss"].min())
    return df


def _read(reader, run_id) -> pd.DataFrame | None:
    """A run's table, or None when the run left none."""
    try:
        table = reader(run_id)
    except (OSError, SessionError, pd.errors.EmptyDataError):
        return None  # a broken or missing file: that run is left out of the figure
    return table if table is not None and len(table) else None


def _unpaired_lines(comparison: pd.DataFrame, axes) -> list[str]:
    """One line per variant (and cell) whose seeds did not all find a pair."""
    groups: dict[tuple, list[str]] = {}
    for row in comparison[comparison["n_unpaired"] > 0].itertuples():
        where = "".join(f" at {a}={fmt(getattr(row, a))}" for a in axes)
        key = (row.variant, row.baseline, where, row.n_unpaired, row.n_pairs)
        groups.setdefault(key, []).append(row.label)
    n_metrics = comparison["metric"].nunique()
    return [
        f"{variant} vs {baseline}{'' if len(labels) == n_metrics else ', ' + ', '.join(labels)}"
        f"{where}: {unpaired} seed(s) without a pair left out, {n} pair(s) used"
        for (variant, baseline, where, unpaired, n), labels in groups.items()
    ]


def _stats_table(summary: pd.DataFrame, comparison: pd.DataFrame, axes) -> pd.DataFrame:
    """One row per cell x variant x metric: the summary, then the comparison with the baseline."""
    comp = comparison.drop(columns=["label"]).rename(
        columns={"ci_low": "diff_ci_low", "ci_high": "diff_ci_high"}
    )
    return summary.merge(comp, on=[*axes, "variant", "metric"], how="left")


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _figures(session, fin: pd.DataFrame, summary, axes, out: Path) -> list[Path]:
    series: dict[str, list[pd.DataFrame]] = {}
    cells: dict[str, dict] = {}
    for row in fin.itertuples():
        cell = {a: getattr(row, a) for a in axes}
        key = row.variant + ("|" + figures._cell_title(cell) if axes else "")
        cells[key] = cell
        table = _read(session.metrics, row.run_id)
        series.setdefault(key, [])
        if table is not None:
            series[key].append(table)
    files = [
        figures.curves(series, column, ylabel, title, out / name, cells=cells, log=log)
        for name, column, ylabel, title, log in CURVES
    ]
    if FINAL_METRIC in fin and fin[FINAL_METRIC].notna().any():
        files.append(figures.final_metric(fin, FINAL_METRIC, out / f"{FINAL_METRIC}.png", axes))
        for axis in axes:
            path = out / f"{FINAL_METRIC}_vs_{axis}.png"
            files.append(figures.metric_vs_axis(summary, FINAL_METRIC, axis, axes, path))
    return files


# ---- report.md ----------------------------------------------------------------------------


def fmt(value) -> str:
    """A table cell: 4 significant digits, '–' for a missing number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def ci_text(low, high) -> str:
    return "–" if math.isnan(low) else f"[{fmt(low)}, {fmt(high)}]"


def summary_rows(result: ReportResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (shared by report.md and the rich tables)."""
    head = [*result.axes, "variant", "metric", "n", "mean", "sd", "95% CI"]
    rows = [
        [
            *(fmt(getattr(r, a)) for a in result.axes),
            r.variant,
            r.label,
            str(r.n),
            fmt(r.mean),
            fmt(r.std),
            ci_text(r.ci_low, r.ci_high),
        ]
        for r in result.summary.itertuples()
    ]
    return head, rows


def comparison_rows(result: ReportResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paired comparison table."""
    head = [
        *result.axes,
        "variant",
        "metric",
        "pairs",
        "diff",
        "change",
        "95% CI",
        "p",
        "d_z",
        "P(better)",
    ]
    rows = [
        [
            *(fmt(getattr(r, a)) for a in result.axes),
            r.variant,
            r.label,
            str(r.n_pairs),
            fmt(r.mean_diff),
            "–" if math.isnan(r.rel_change_pct) else f"{r.rel_change_pct:+.2f}%",
            ci_text(r.ci_low, r.ci_high),
            fmt(r.p_value),
            fmt(r.effect_size),
            fmt(r.p_improve),
        ]
        for r in result.comparison.itertuples()
    ]
    return head, rows


def verdict_lines(result: ReportResult) -> list[str]:
    lines = []
    for r in result.comparison.itertuples():
        where = ", ".join(f"{a}={fmt(getattr(r, a))}" for a in result.axes)
        lines.append((f"{where}: " if where else "") + r.verdict)
    return lines


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(result: ReportResult, session) -> str:
    study = session.study
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"# labtui report: {result.name}", "", f"Generated {now} from `{session.path}`.", ""]
    md += [f"**Runs:** {result.status_line}.", ""]
    if result.partial:
        md += [
            "> This session is only partly finished: the statistics cover the finished runs.",
            "",
        ]

    md += ["## Study", ""]
    grid = [[k, ", ".join(map(str, v))] for k, v in study.grid.items()]
    md += [_md_table(["swept field", "values"], grid), "", f"Order: {study.order}.", ""]
    base = [[k, fmt(v)] for k, v in study.base.to_dict().items() if k not in study.grid]
    md += ["Base spec:", "", _md_table(["field", "value"], base), ""]

    md += ["## Environment", ""]
    env = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in session.provenance.items()]
    md += [_md_table(["key", "value"], env) if env else "(no provenance recorded)", ""]

    if not result.n_finished:
        md += ["## Statistics", "", "No run has finished yet: no statistics and no figures.", ""]
    else:
        md += ["## Summary", "", "Finished runs; mean, sample sd and 95% t-interval.", ""]
        md += [_md_table(*summary_rows(result)), ""]
        md += [f"## Paired comparison with `{result.baseline}`", ""]
        md += [_methods_note(result.comparison), ""]
        if len(result.comparison):
            md += [_md_table(*comparison_rows(result)), "", "### Verdicts", ""]
            md += [f"- {line}" for line in verdict_lines(result)] + [""]
            md += ["### Per-seed differences", "", "delta = variant - baseline.", ""]
            md += [_md_table(*_pair_rows(result)), ""]
        else:
            md += ["No variant has runs to pair with the baseline.", ""]

    md += ["## Budget check", ""]
    if result.problems:
        md += [f"- **{p}**" for p in result.problems] + [""]
    else:
        md += [_budget_ok(stats.finished(result.results)), ""]

    pngs = [p for p in result.files if p.suffix == ".png"]
    if pngs:
        md += ["## Figures", ""]
        md += [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    return "\n".join(md)


def _budget_ok(fin: pd.DataFrame) -> str:
    if not len(fin) or "tokens" not in fin:
        return "Nothing to check yet."
    tokens = sorted(set(fin["tokens"].dropna().astype(int)))
    return (
        f"Every compared run finished and saw the same budget of {', '.join(map(str, tokens))} "
        "training tokens (per cell)."
    )


def _methods_note(comparison: pd.DataFrame) -> str:
    ci = sorted(set(comparison["ci_method"]) - {"none"})
    p = sorted(set(comparison["p_method"]) - {"none"})
    return (
        "Paired by seed; diff = variant - baseline, change relative to the paired baseline mean. "
        f"95% CI: percentile bootstrap of the mean difference ({', '.join(ci) or '–'}). "
        f"p: two-sided sign-flip permutation test ({', '.join(p) or '–'}). "
        "d_z: mean difference / sd of differences. P(better): share of pairs where the variant "
        "is better (– for metrics without a better direction). "
    ) + small_n_note(comparison)


def small_n_note(comparison: pd.DataFrame) -> str:
    """A caution when few pairs were compared (empty from 10 pairs on)."""
    n = comparison.loc[comparison["n_pairs"] >= 2, "n_pairs"]
    if not len(n) or n.min() >= 10:
        return ""
    k = int(n.min())
    return (
        f"With {k} pairs the smallest possible p is 2/2^{k} = {2 / 2**k:.3g}, and a bootstrap "
        "interval from fewer than about 10 pairs is narrower than it should be: read it with care."
    )


def _pair_rows(result: ReportResult) -> tuple[list[str], list[list[str]]]:
    head = [*result.axes, "variant", "metric", "seed", "baseline", "variant value", "delta"]
    rows = [
        [
            *(fmt(getattr(r, a)) for a in result.axes),
            r.variant,
            stats.METRICS[r.metric][0],
            str(r.seed),
            fmt(r.baseline_value),
            fmt(r.variant_value),
            fmt(r.delta),
        ]
        for r in result.pairs.itertuples()
    ]
    return head, rows
