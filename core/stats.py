"""Study statistics: per-variant summaries and paired comparisons against a baseline.

Pure functions of a results table (the columns of a session's results.csv: run_id, variant, seed,
status, the metrics, tokens, ... plus one column per swept study axis). Only runs whose status is
"finished" enter the numbers; ``budget_check`` says what was left out and why.

Paired comparisons pair a variant's run with the baseline's run of the same seed (and the same
cell of any extra axes, e.g. the same learning rate). The 95% confidence interval of the mean
difference is a percentile bootstrap over the pairs: every one of the n^n resamples when
n^n <= 100,000 (n <= 6 pairs), else ``resamples`` draws from np.random.default_rng(seed). The
two-sided p-value is a sign-flip permutation test of the mean difference (scipy.stats): exact over
all 2^n sign patterns when 2^n <= 100,000 (n <= 16), else Monte Carlo with the same fixed seed.

The controls (none, scaled, <norm>-small, <norm>) form a 2 x 2 design, scale x normalization;
``factorial`` gives its main effects and interaction as per-seed contrasts with the same
interval and test.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from core.spec import VARIANTS
from core.status import RunStatus

# name -> (label, lower_is_better); None: no better direction (a norm is only described).
METRICS: dict[str, tuple[str, bool | None]] = {
    "val_ppl": ("val PPL", True),
    "val_loss": ("val loss", True),
    "best_val_loss": ("best val loss", True),
    "final_grad_norm": ("final grad norm", None),
    "accuracy": ("accuracy", False),
    "macro_accuracy": ("macro accuracy", False),
    "embed_norm": ("embedding norm", None),
    # stability (core.metrics): fewer spikes is better; the maxima are described, not ranked
    "max_grad_norm": ("max grad norm", None),
    "loss_spikes": ("loss spikes", True),
    "grad_spikes": ("grad spikes", True),
    "max_logit": ("max logit", None),
    "max_attn_logit": ("max attention logit", None),
}
EXACT_LIMIT = 100_000  # enumerate resamples / sign patterns up to this many
FINISHED = RunStatus.FINISHED


def finished(df: pd.DataFrame) -> pd.DataFrame:
    """The runs that enter statistics."""
    return df[df["status"] == FINISHED]


def variant_order(variants) -> list[str]:
    """Known variants in their protocol order (none, layernorm, rmsnorm), then any others."""
    present = list(dict.fromkeys(variants))
    known = [v for v in VARIANTS if v in present]
    return known + sorted(v for v in present if v not in VARIANTS)


def metrics_in(df: pd.DataFrame) -> list[str]:
    """The METRICS that have at least one value in ``df``."""
    return [m for m in METRICS if m in df.columns and df[m].notna().any()]


def cells(df: pd.DataFrame, axes) -> list[tuple[dict, pd.DataFrame]]:
    """Split ``df`` by the values of ``axes``: [({axis: value}, rows)], one entry when no axes."""
    axes = list(axes)
    if not axes:
        return [({}, df)]
    out = []
    for key, rows in df.groupby(axes, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append((dict(zip(axes, key, strict=True)), rows))
    return out


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean; NaN for fewer than two values."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, sem = values.mean(), values.std(ddof=1) / math.sqrt(n)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sem
    return float(mean - half), float(mean + half)


def summarize(df: pd.DataFrame, axes=(), metrics=None) -> pd.DataFrame:
    """n, mean, std and 95% t-interval per cell x variant x metric (finished runs only)."""
    df = finished(df)
    metrics = metrics_in(df) if metrics is None else list(metrics)
    rows = []
    for cell, cell_df in cells(df, axes):
        for variant in variant_order(cell_df["variant"]):
            vdf = cell_df[cell_df["variant"] == variant]
            for metric in metrics:
                values = vdf[metric].dropna().to_numpy(dtype=float)
                n = len(values)
                lo, hi = t_interval(values)
                rows.append(
                    {
                        **cell,
                        "variant": variant,
                        "metric": metric,
                        "label": METRICS[metric][0],
                        "n": n,
                        "mean": values.mean() if n else math.nan,
                        "std": values.std(ddof=1) if n > 1 else math.nan,
                        "ci_low": lo,
                        "ci_high": hi,
                    }
                )
    columns = [*axes, "variant", "metric", "label", "n", "mean", "std", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def paired_differences(df: pd.DataFrame, metric: str, baseline: str = "none", axes=()):
    """Per-seed pairs of each variant with the baseline: seed, baseline_value, variant_value, delta.

    delta = variant_value - baseline_value. Seeds present on one side only are left out.
    """
    df = finished(df)
    rows = []
    for cell, cell_df in cells(df, axes):
        cell_df = cell_df.dropna(subset=[metric]).drop_duplicates(["variant", "seed"], keep="last")
        base = cell_df[cell_df["variant"] == baseline].set_index("seed")[metric]
        for variant in variant_order(cell_df["variant"]):
            if variant == baseline:
                continue
            other = cell_df[cell_df["variant"] == variant].set_index("seed")[metric]
            for seed in sorted(set(base.index) & set(other.index)):
                b, v = float(base[seed]), float(other[seed])
                rows.append(
                    {
                        **cell,
                        "variant": variant,
                        "metric": metric,
                        "seed": int(seed),
                        "baseline_value": b,
                        "variant_value": v,
                        "delta": v - b,
                    }
                )
    columns = [*axes, "variant", "metric", "seed", "baseline_value", "variant_value", "delta"]
    return pd.DataFrame(rows, columns=columns)


@functools.lru_cache(maxsize=8)
def _all_resamples(n: int) -> np.ndarray:
    """Every bootstrap resample of n items as an index array of shape (n^n, n)."""
    return np.array(list(itertools.product(range(n), repeat=n)), dtype=np.intp)


def bootstrap_ci(diffs, resamples: int = 10_000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval of the mean: exact when n^n <= 100,000, else Monte Carlo.

    Returns (low, high, method) with method "exact" or "monte carlo"; NaN below two values.
    """
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    if n < 2:
        return math.nan, math.nan, "none"
    if np.ptp(diffs) == 0:  # every resample has the same mean
        return float(diffs[0]), float(diffs[0]), "exact"
    if n**n <= EXACT_LIMIT:
        idx, method = _all_resamples(n), "exact"
    else:
        idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
        method = "monte carlo"
    means = diffs[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi), method


def sign_flip_p(diffs, resamples: int = 10_000, seed: int = 0) -> tuple[float, str]:
    """Two-sided p-value that the mean difference is 0 (sign-flip permutation test).

    Exact over all 2^n sign patterns when 2^n <= 100,000, else ``resamples`` random patterns
    from a fixed seed. Returns (p, method); NaN below two values.
    """
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    if n < 2:
        return math.nan, "none"
    if not diffs.any():
        return 1.0, "exact"
    exact = 2**n <= EXACT_LIMIT
    result = stats.permutation_test(
        (diffs,),
        np.mean,
        permutation_type="samples",
        vectorized=True,
        axis=-1,
        n_resamples=np.inf if exact else resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue), "exact" if exact else "monte carlo"


def fmt(value) -> str:
    """A number as tables and verdicts print it: 4 significant digits, '–' when missing."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def verdict(
    variant: str, metric: str, n: int, mean_diff, rel_pct, ci, p, unit: str = "pairs"
) -> str:
    """One line in words, e.g. "layernorm lowers val PPL by 0.52 (-3.1%) [95% CI ...], p = ..."."""
    label = METRICS.get(metric, (metric, None))[0]
    if n < 2:
        return f"{variant}: not enough {unit} to compare {label} (n = {n} {unit})"
    tail = f"[95% CI {fmt(ci[0])}, {fmt(ci[1])}], p = {p:.3g}, n = {n} {unit}"
    if mean_diff == 0:
        return f"{variant}: no difference in {label} {tail}"
    verb = "lowers" if mean_diff < 0 else "raises"
    rel = "" if not math.isfinite(rel_pct) else f" ({rel_pct:+.1f}%)"
    line = f"{variant} {verb} {label} by {fmt(abs(mean_diff))}{rel} {tail}"
    return line + ("; the CI includes 0" if ci[0] <= 0 <= ci[1] else "")


COMPARE_COLUMNS = (
    "variant", "baseline", "metric", "label", "n_pairs", "n_unpaired", "baseline_mean",
    "variant_mean", "mean_diff", "rel_change_pct", "ci_low", "ci_high", "ci_method", "p_value",
    "p_method", "effect_size", "p_improve", "verdict",
)  # fmt: skip


def compare(
    df: pd.DataFrame,
    baseline: str = "none",
    axes=(),
    resamples: int = 10_000,
    seed: int = 0,
    metrics=None,
) -> pd.DataFrame:
    """Each variant against the baseline, paired by seed, per cell x variant x metric.

    Columns: n_pairs (seeds on both sides), n_unpaired (seeds on one side only), mean_diff
    (variant - baseline), rel_change_pct (of the paired baseline mean), ci_low/ci_high (bootstrap),
    p_value (sign-flip test), effect_size (Cohen's d_z = mean diff / sd of diffs; NaN when the sd
    is 0 and the mean is not), p_improve (share of pairs where the variant is better; NaN for a
    metric without a better direction) and verdict (one line).
    """
    if resamples < 10_000:
        raise ValueError(f"resamples must be at least 10,000, got {resamples}")
    fin = finished(df)
    metrics = metrics_in(fin) if metrics is None else list(metrics)
    rows = []
    for cell, cell_df in cells(fin, axes):
        variants = [v for v in variant_order(cell_df["variant"]) if v != baseline]
        for metric in metrics:
            valid = cell_df.dropna(subset=[metric])
            base_seeds = set(valid.loc[valid["variant"] == baseline, "seed"])
            pairs = paired_differences(cell_df, metric, baseline)
            for variant in variants:
                p = pairs[pairs["variant"] == variant]
                seeds = set(valid.loc[valid["variant"] == variant, "seed"])
                rows.append(
                    {
                        **cell,
                        **_compare_one(variant, baseline, metric, p, resamples, seed),
                        "n_unpaired": len(seeds ^ base_seeds),
                    }
                )
    return pd.DataFrame(rows, columns=[*axes, *COMPARE_COLUMNS])


def _contrast(d: np.ndarray, metric: str, resamples: int, seed: int) -> dict:
    """The statistics of per-seed differences ``d``: their mean, bootstrap CI, sign-flip p,
    Cohen's d_z and the share of seeds where the difference is an improvement."""
    n = len(d)
    mean_diff = float(d.mean()) if n else math.nan
    if n and np.ptp(d) == 0:
        mean_diff = float(d[0])  # exact, not a rounded sum
    lo, hi, ci_method = bootstrap_ci(d, resamples, seed)
    p, p_method = sign_flip_p(d, resamples, seed)
    sd = d.std(ddof=1) if n > 1 else math.nan
    if n < 2:
        effect = math.nan
    elif sd > 0:
        effect = mean_diff / sd
    else:
        effect = 0.0 if mean_diff == 0 else math.nan
    lower_better = METRICS.get(metric, (metric, None))[1]
    if n == 0 or lower_better is None:
        p_improve = math.nan
    else:
        p_improve = float(np.mean(d < 0 if lower_better else d > 0))
    return {
        "n": n,
        "mean_diff": mean_diff,
        "ci_low": lo,
        "ci_high": hi,
        "ci_method": ci_method,
        "p_value": p,
        "p_method": p_method,
        "effect_size": effect,
        "p_improve": p_improve,
    }


def _compare_one(variant, baseline, metric, pairs, resamples, seed) -> dict:
    c = _contrast(pairs["delta"].to_numpy(dtype=float), metric, resamples, seed)
    n, mean_diff = c.pop("n"), c["mean_diff"]
    base_mean = pairs["baseline_value"].mean() if n else math.nan
    rel = 100 * mean_diff / base_mean if n and base_mean != 0 else math.nan
    return {
        "variant": variant,
        "baseline": baseline,
        "metric": metric,
        "label": METRICS.get(metric, (metric, None))[0],
        "n_pairs": n,
        "baseline_mean": base_mean,
        "variant_mean": pairs["variant_value"].mean() if n else math.nan,
        "rel_change_pct": rel,
        **c,
        "verdict": verdict(
            variant, metric, n, mean_diff, rel, (c["ci_low"], c["ci_high"]), c["p_value"]
        ),
    }


def budget_check(df: pd.DataFrame, axes=()) -> list[str]:
    """Problems that would make a comparison unfair, one line each (empty when all is well).

    Flags runs that did not finish (left out of the statistics), finished runs whose token
    budget differs from the others of their cell, and repeated variant/seed runs in a cell.
    """
    problems = []
    unfinished = df[df["status"] != FINISHED]
    if len(unfinished):
        listing = ", ".join(f"{r.run_id} ({r.status})" for r in unfinished.itertuples())
        problems.append(f"{len(unfinished)} of {len(df)} runs not finished, left out: {listing}")
    for cell, cell_df in cells(finished(df), axes):
        where = "".join(f" at {k}={v}" for k, v in cell.items())
        tokens = cell_df["tokens"].dropna()
        if tokens.nunique() > 1:
            counts = tokens.astype(int).value_counts()
            usual = counts.index[0]
            odd = cell_df[cell_df["tokens"] != usual]
            listing = ", ".join(f"{r.run_id} ({int(r.tokens)})" for r in odd.itertuples())
            problems.append(f"unequal budgets{where}: most runs saw {usual} tokens, but {listing}")
        dups = cell_df[cell_df.duplicated(["variant", "seed"], keep=False)]
        if len(dups):
            listing = ", ".join(dups["run_id"].astype(str))
            problems.append(f"repeated variant/seed runs{where} (the last one is used): {listing}")
    return problems


# ---- the 2 x 2 controls: scale x normalization ----------------------------------------------

# Per normalization, its four variants in the order (scale, normalized): (small, no),
# (large, no), (small, yes), (large, yes). "scaled" is the baseline's embedding at the normalized
# variants' scale; "-small" normalizes and then scales down to the baseline's scale.
FAMILIES: dict[str, tuple[str, str, str, str]] = {
    norm: ("none", "scaled", f"{norm}-small", norm) for norm in ("layernorm", "rmsnorm")
}
FAMILY_ROLES = ("none", "scaled", "norm_small", "norm")  # column names of the four, any family
# effect -> its per-seed value from the four (a = none, b = scaled, c = norm_small, d = norm)
EFFECTS = {
    "scale": lambda a, b, c, d: ((b - a) + (d - c)) / 2,  # large - small, mean over norm no/yes
    "normalization": lambda a, b, c, d: ((c - a) + (d - b)) / 2,  # yes - no, mean over scales
    "interaction": lambda a, b, c, d: (d - c) - (b - a),  # scale effect with norm - without
}
FACTORIAL_COLUMNS = (
    "family", "effect", "metric", "label", "n_seeds", "estimate", "ci_low", "ci_high",
    "ci_method", "p_value", "p_method", "effect_size", "verdict",
)  # fmt: skip


def factorial_families(df: pd.DataFrame) -> list[str]:
    """The normalization families whose four variants all have finished runs in ``df``."""
    present = set(finished(df)["variant"])
    return [family for family, four in FAMILIES.items() if set(four) <= present]


def factorial_contrasts(df: pd.DataFrame, family: str, metric: str, axes=()) -> pd.DataFrame:
    """Per cell and seed with all four finished runs of ``family``: the four values and the
    per-seed scale, normalization and interaction contrasts."""
    four = FAMILIES[family]
    rows = []
    for cell, cell_df in cells(finished(df), axes):
        cell_df = cell_df.dropna(subset=[metric]).drop_duplicates(["variant", "seed"], keep="last")
        wide = cell_df.pivot(index="seed", columns="variant", values=metric)
        if not set(four) <= set(wide.columns):
            continue
        wide = wide[list(four)].dropna().sort_index()
        for seed, values in wide.iterrows():
            v = [float(x) for x in values]
            rows.append(
                {
                    **cell,
                    "family": family,
                    "metric": metric,
                    "seed": int(seed),
                    **dict(zip(FAMILY_ROLES, v, strict=True)),
                    **{name: f(*v) for name, f in EFFECTS.items()},
                }
            )
    columns = [*axes, "family", "metric", "seed", *FAMILY_ROLES, *EFFECTS]
    return pd.DataFrame(rows, columns=columns)


def factorial(
    df: pd.DataFrame, axes=(), resamples: int = 10_000, seed: int = 0, metrics=None
) -> pd.DataFrame:
    """Main effects of scale and normalization and their interaction, per family present (see
    ``factorial_families``) x cell x metric x effect.

    Each effect is a per-seed contrast of the four runs of a seed, summarized like ``compare``
    summarizes differences: estimate (mean over seeds), bootstrap ci_low/ci_high, sign-flip
    p_value, effect_size (d_z) and a verdict line. Empty when no family is complete.
    """
    if resamples < 10_000:
        raise ValueError(f"resamples must be at least 10,000, got {resamples}")
    fin = finished(df)
    metrics = metrics_in(fin) if metrics is None else list(metrics)
    rows = []
    for family in factorial_families(fin):
        for metric in metrics:
            contrasts = factorial_contrasts(fin, family, metric, axes)
            for cell, _ in cells(fin, axes):
                mask = np.ones(len(contrasts), dtype=bool)
                for axis, value in cell.items():
                    mask &= (contrasts[axis] == value).to_numpy()
                for effect in EFFECTS:
                    d = contrasts.loc[mask, effect].to_numpy(dtype=float)
                    c = _contrast(d, metric, resamples, seed)
                    rows.append(
                        {
                            **cell,
                            "family": family,
                            "effect": effect,
                            "metric": metric,
                            "label": METRICS.get(metric, (metric, None))[0],
                            "n_seeds": c["n"],
                            "estimate": c["mean_diff"],
                            **{k: c[k] for k in ("ci_low", "ci_high", "ci_method")},
                            **{k: c[k] for k in ("p_value", "p_method", "effect_size")},
                            "verdict": _factorial_verdict(family, effect, metric, c),
                        }
                    )
    return pd.DataFrame(rows, columns=[*axes, *FACTORIAL_COLUMNS])


def _factorial_verdict(family: str, effect: str, metric: str, c: dict) -> str:
    ci = (c["ci_low"], c["ci_high"])
    if effect != "interaction":
        what = "larger scale" if effect == "scale" else f"{family} normalization"
        line = verdict(what, metric, c["n"], c["mean_diff"], math.nan, ci, c["p_value"], "seeds")
        return f"{family} family: {line}"
    label = METRICS.get(metric, (metric, None))[0]
    if c["n"] < 2:
        return f"{family} family: not enough seeds for the interaction on {label} (n = {c['n']})"
    line = (
        f"{family} family: interaction on {label} (scale effect with {family} minus without) "
        f"{fmt(c['mean_diff'])} [95% CI {fmt(ci[0])}, {fmt(ci[1])}], "
        f"p = {c['p_value']:.3g}, n = {c['n']} seeds"
    )
    return line + ("; the CI includes 0" if ci[0] <= 0 <= ci[1] else "")
