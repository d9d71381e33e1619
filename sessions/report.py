"""A session's report: statistics (stats.csv, pairs.csv), figures and report.md in its report/.

Reads the session only through sessions.store; works on a session that is partly finished (only
finished runs enter the numbers, and the report says how many there are). A session holding the
controls of a normalization (none, scaled, <norm>-small, <norm>) also gets their factorial
contrasts (factorial.csv); a learning-rate or budget sweep gets its trade-off (core.tradeoff:
tradeoff_lr.csv / tradeoff_budget.csv and a figure each), where diverged runs count as data.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core import stats, tradeoff
from core.stats import fmt
from core.status import DONE, STATUS_ORDER, RunStatus
from sessions import atomic, figures
from sessions.store import SessionError

CURVES = (  # figure file, metrics.csv column, y label, title, log scale
    ("loss.png", "loss", "training loss (nats/char)", "training loss", False),
    ("grad_norm.png", "grad_norm", "total gradient norm", "gradient norm", True),
    ("embed_norm.png", "embed_norm", "first-block input norm", "first-block input norm", True),
)
FINAL_METRIC = "val_ppl"
# swept axis -> (name of its files, section title, x label of its figure)
SWEEPS = {
    tradeoff.LR_AXIS: ("tradeoff_lr", "Learning-rate trade-off", "learning rate"),
    tradeoff.BUDGET_AXIS: ("tradeoff_budget", "Budget trade-off", "training tokens"),
}
VOCAB_KEY = "corpus_vocab_size"  # the provenance key of the corpus's vocabulary size


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
    factorial: pd.DataFrame = field(default_factory=pd.DataFrame)  # stats.factorial
    sweeps: list[tradeoff.Sweep] = field(default_factory=list)  # lr and/or budget trade-off
    init_note: str = ""  # where the loss at initialization of the sweeps came from

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
    axes = _axes(session)
    df = _results(session, records, axes)
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
        factorial=stats.factorial(df, axes),
    )
    if df["status"].isin(DONE).any():
        sweeps = [a for a in SWEEPS if a in axes]
        if sweeps:
            loss0, result.init_note = initial_loss(session, records)
        for axis in sweeps:
            others = [a for a in axes if a != axis]
            result.sweeps.append(tradeoff.analyse(df, axis, loss0, baseline, others))
    result.files.append(_write_csv(_stats_table(summary, comparison, axes), out / "stats.csv"))
    result.files.append(_write_csv(pairs, out / "pairs.csv"))
    if len(result.factorial):
        result.files.append(_write_csv(result.factorial, out / "factorial.csv"))
    for sweep in result.sweeps:
        if sweep.axis == tradeoff.BUDGET_AXIS:
            _add_tokens(sweep, records)
        result.files.append(_write_csv(sweep.table, out / f"{SWEEPS[sweep.axis][0]}.csv"))
    if len(fin):
        result.files += _figures(session, fin, summary, axes, out)
    for sweep in result.sweeps:
        name, _, xlabel = SWEEPS[sweep.axis]
        x = None
        if "tokens" in sweep.table:  # a budget: plotted against the training tokens
            x = dict(zip(sweep.table[sweep.axis], sweep.table["tokens"], strict=True))
        path = out / f"{name}.png"
        result.files.append(
            figures.tradeoff(sweep.table, sweep.axis, path, xlabel, x, sweep.others)
        )
    report_md = out / "report.md"
    atomic.write_bytes(report_md, _markdown(result, session).encode("utf-8"))
    result.files.insert(2, report_md)
    return result


def _axes(session) -> list[str]:
    """The swept fields other than variant and seed, those that are result columns too (iters)
    included."""
    return list(dict.fromkeys([*session.study.axes, *session.axes()]))


def _results(session, records, axes) -> pd.DataFrame:
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
                **{a: getattr(r.spec, a) for a in axes},
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


def initial_loss(session, records) -> tuple[float, str]:
    """The loss at initialization that a diverged run counts as, and a line saying where it
    came from: ln V from the provenance's corpus_vocab_size, or else (older sessions) the largest
    first-step training loss of the session's runs, which is about ln V at initialization."""
    vocab = session.provenance.get(VOCAB_KEY)
    if isinstance(vocab, int) and vocab >= 2:
        loss0 = tradeoff.init_loss(vocab)
        return loss0, (
            f"A diverged run counts as the loss at initialization ln V = ln {vocab} = "
            f"{fmt(loss0)} (V: {VOCAB_KEY} of the session's provenance), its PPL as V."
        )
    firsts = []
    for record in records:
        table = _read(session.metrics, record.run_id)
        if table is not None and (table["step"] == 1).any():
            firsts.append(float(table.loc[table["step"] == 1, "loss"].iloc[0]))
    if not firsts:
        return math.nan, (
            f"The session records no {VOCAB_KEY} and no first training step: a diverged run "
            "counts only in the diverged fraction, its final loss is unknown (–)."
        )
    loss0 = max(firsts)
    return loss0, (
        f"The session records no {VOCAB_KEY}: a diverged run counts as the loss at "
        f"initialization estimated by the largest first-step training loss of its runs, "
        f"{fmt(loss0)} (of {len(firsts)} runs), its PPL as exp of it, {fmt(math.exp(loss0))}."
    )


def _add_tokens(sweep: tradeoff.Sweep, records) -> None:
    """The training tokens of each budget cell, from the runs' specs, next to the axis."""
    tokens = {r.spec.iters: r.spec.tokens for r in records}
    at = sweep.table.columns.get_loc(sweep.axis) + 1
    sweep.table.insert(at, "tokens", [tokens.get(v) for v in sweep.table[sweep.axis]])


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
    atomic.write_bytes(path, table.to_csv(index=False).encode("utf-8"))
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


def verdict_lines(result: ReportResult, table: str = "comparison") -> list[str]:
    """Each row's verdict in ``result.comparison`` (or ``result.factorial``), after its cell."""
    lines = []
    for r in getattr(result, table).itertuples():
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

    if len(result.factorial):
        md += ["## Factorial contrasts: scale x normalization", "", FACTORIAL_NOTE, ""]
        md += [_md_table(*factorial_rows(result)), "", "### Verdicts (factorial)", ""]
        md += [f"- {line}" for line in verdict_lines(result, "factorial")] + [""]
    for sweep in result.sweeps:
        md += _sweep_markdown(result, sweep)

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


# ---- factorial contrasts and sweep trade-offs (report.md and the terminal) ------------------

FACTORIAL_NOTE = (
    "The controls form a 2 x 2 design per normalization N (layernorm, rmsnorm): scale small "
    "(`none`, `N-small`) or large (`scaled`, `N`) x normalization no (`none`, `scaled`) or yes "
    "(`N-small`, `N`). Per seed with all four runs finished: scale = "
    "`((scaled - none) + (N - N-small)) / 2`, normalization = "
    "`((N-small - none) + (N - scaled)) / 2`, interaction = `(N - N-small) - (scaled - none)`. "
    "Estimate: the mean over seeds; 95% CI and p as in the paired comparison; d_z: estimate / sd "
    "over seeds."
)


def factorial_rows(result: ReportResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the factorial contrasts table."""
    head = [*result.axes, "family", "metric", "effect", "seeds", "estimate", "95% CI", "p", "d_z"]
    rows = [
        [
            *(fmt(getattr(r, a)) for a in result.axes),
            r.family,
            r.label,
            r.effect,
            str(r.n_seeds),
            fmt(r.estimate),
            ci_text(r.ci_low, r.ci_high),
            fmt(r.p_value),
            fmt(r.effect_size),
        ]
        for r in result.factorial.itertuples()
    ]
    return head, rows


def sweep_title(sweep: tradeoff.Sweep) -> str:
    return f"{SWEEPS[sweep.axis][1]} ({sweep.axis})"


def sweep_cell_rows(sweep: tradeoff.Sweep) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a sweep's per-cell table."""
    t = sweep.table
    first = [*sweep.others, sweep.axis, *(["tokens"] if "tokens" in t else [])]
    head = [
        *first, "variant", "done", "diverged", "spiked", "not done", "final loss", "final PPL",
        "PPL (finished)", "95% CI", "stable",
    ]  # fmt: skip
    rows = [
        [
            *(fmt(getattr(r, a)) for a in first),
            r.variant,
            str(r.n_done),
            str(r.n_diverged),
            fmt(r.n_spiked if math.isnan(r.n_spiked) else int(r.n_spiked)),
            str(r.n_other),
            fmt(r.final_loss),
            fmt(r.final_ppl),
            fmt(r.ppl_mean),
            ci_text(r.ppl_ci_low, r.ppl_ci_high),
            "yes" if r.stable else "no",
        ]
        for r in t.itertuples()
    ]
    return head, rows


def sweep_summary_rows(sweep: tradeoff.Sweep) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a sweep's per-variant summary."""
    axis = sweep.axis
    head = [
        *sweep.others, "variant", f"best {axis}", "final loss there", "final PPL there",
        f"{axis} sensitivity", f"stable {axis}", "cells",
    ]  # fmt: skip
    rows = [
        [
            *(fmt(getattr(r, a)) for a in sweep.others),
            r.variant,
            fmt(r.best),
            fmt(r.best_loss),
            fmt(r.best_ppl),
            fmt(r.sensitivity),
            tradeoff.stable_text(r.stable, sweep.grid),
            str(r.n_cells),
        ]
        for r in sweep.summary.itertuples()
    ]
    return head, rows


def sweep_winner_rows(sweep: tradeoff.Sweep) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a sweep's winners per cell."""
    first = [*sweep.others, sweep.axis]
    baseline = sweep.winners["baseline"].iloc[0] if len(sweep.winners) else "none"
    head = [
        *first, "ranking (final PPL)", "winner", "final PPL", f"vs {baseline}", "diff", "95% CI",
        "p",
        "pairs",
    ]  # fmt: skip
    rows = [
        [
            *(fmt(getattr(r, a)) for a in first),
            r.ranking,
            "–" if pd.isna(r.winner) else r.winner,
            fmt(r.winner_ppl),
            "–" if pd.isna(r.challenger) else r.challenger,
            fmt(r.diff),
            ci_text(r.ci_low, r.ci_high),
            fmt(r.p_value),
            str(r.n_pairs),
        ]
        for r in sweep.winners.itertuples()
    ]
    return head, rows


def sweep_paragraphs(sweep: tradeoff.Sweep) -> list[str]:
    """The sweep's paragraphs, each prefixed by its cell of the other axes when there are some."""
    return [
        (f"At {figures._cell_title(cell)}: " if cell else "") + text
        for cell, text in sweep.paragraphs
    ]


def _sweep_markdown(result: ReportResult, sweep: tradeoff.Sweep) -> list[str]:
    axis = sweep.axis
    md = [f"## {sweep_title(sweep)}", "", result.init_note, ""]
    md += [
        "Per cell: done = finished + diverged runs; spiked = done runs with a loss or gradient "
        "spike (– when the session does not record spikes); final loss and final PPL: mean over "
        "the done runs, a diverged run counted as at initialization; PPL (finished): val PPL of "
        "the finished runs, mean and 95% t-interval; stable: no seed diverged or spiked.",
        "",
        _md_table(*sweep_cell_rows(sweep)),
        "",
    ]
    if axis == tradeoff.LR_AXIS:
        md += [
            "### Per variant",
            "",
            f"Best {axis}: the lowest final loss. {axis} sensitivity (Wortsman et al. 2023): the "
            f"mean over the {axis} grid of min(final loss, loss at initialization) minus the best "
            "final loss; lower is more robust to the choice of learning rate.",
            "",
            _md_table(*sweep_summary_rows(sweep)),
            "",
        ]
    md += [
        "### Winners",
        "",
        "Per cell, the variant with the lowest final PPL (a diverged run counted as the "
        "vocabulary size: divergence loses); the winner (or, where the baseline wins, the best "
        f"other variant) against `{result.baseline}`, paired by seed over the seeds where both "
        "finished (diff in val PPL).",
        "",
        _md_table(*sweep_winner_rows(sweep)),
        "",
    ]
    md += [p for text in sweep_paragraphs(sweep) for p in (text, "")]
    return md
