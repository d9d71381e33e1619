"""Known answers for core.stats: summaries, pairs, bootstrap, permutation test, budget check."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from core import stats


def results(values: dict[str, list[float]], seeds=None, metric="val_ppl", **extra) -> pd.DataFrame:
    """A results table with one finished run per (variant, seed) and one metric."""
    rows = []
    for variant, vals in values.items():
        for seed, value in zip(seeds or range(len(vals)), vals, strict=True):
            rows.append(
                {
                    "run_id": f"{variant}-s{seed}",
                    "variant": variant,
                    "seed": seed,
                    "status": "finished",
                    metric: value,
                    "tokens": 1024,
                    **extra,
                }
            )
    return pd.DataFrame(rows)


def test_summary_mean_std_and_t_interval():
    df = results({"none": [1.0, 2.0, 3.0, 4.0]})
    row = stats.summarize(df).iloc[0]
    assert (row.variant, row.metric, row.n) == ("none", "val_ppl", 4)
    assert row["mean"] == 2.5
    assert row["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    half = 3.182446305284263 * row["std"] / 2  # t(0.975, df=3) * s / sqrt(4)
    assert (row.ci_low, row.ci_high) == pytest.approx((2.5 - half, 2.5 + half))


def test_summary_skips_runs_that_did_not_finish():
    df = results({"none": [1.0, 2.0, 100.0]})
    df.loc[2, "status"] = "cancelled"
    row = stats.summarize(df).iloc[0]
    assert row.n == 2 and row["mean"] == 1.5


def test_single_run_has_no_interval():
    row = stats.summarize(results({"none": [5.0]})).iloc[0]
    assert row.n == 1 and row["mean"] == 5.0 and math.isnan(row.ci_low) and math.isnan(row["std"])


def test_identical_variants_give_zero_difference():
    vals = [4.1, 3.9, 4.3, 4.0, 4.2]
    row = stats.compare(results({"none": vals, "layernorm": vals})).iloc[0]
    assert row.n_pairs == 5 and row.mean_diff == 0.0
    assert row.ci_low <= 0 <= row.ci_high and (row.ci_low, row.ci_high) == (0.0, 0.0)
    assert row.p_value == 1.0 and row.effect_size == 0.0 and row.p_improve == 0.0
    assert row.verdict.startswith("layernorm: no difference in val PPL")


def test_constant_shift_gives_exactly_that_difference():
    base = [4.0, 3.5, 4.25, 3.75, 4.5]  # dyadic values: the subtraction is exact
    row = stats.compare(results({"none": base, "rmsnorm": [v - 0.5 for v in base]})).iloc[0]
    assert row.mean_diff == -0.5 and (row.ci_low, row.ci_high) == (-0.5, -0.5)
    assert row.rel_change_pct == pytest.approx(-50 / np.mean(base))
    assert row.p_value == pytest.approx(2 / 2**5)  # only all-negative and all-positive reach it
    assert row.p_improve == 1.0 and math.isnan(row.effect_size)
    assert row.verdict.startswith("rmsnorm lowers val PPL by 0.5 (-12.5%) [95% CI -0.5, -0.5]")
    assert "n = 5 pairs" in row.verdict


def test_per_seed_differences_are_listed():
    df = results({"none": [4.0, 5.0], "layernorm": [3.0, 5.5]})
    pairs = stats.paired_differences(df, "val_ppl")
    assert pairs[["seed", "baseline_value", "variant_value", "delta"]].values.tolist() == [
        [0, 4.0, 3.0, -1.0],
        [1, 5.0, 5.5, 0.5],
    ]


def test_missing_seeds_are_left_out_of_pairs():
    df = pd.concat(
        [
            results({"none": [4.0, 4.5, 5.0, 5.5]}, seeds=[0, 1, 2, 3]),
            results({"layernorm": [3.0, 4.0, 9.0]}, seeds=[1, 2, 7]),
        ]
    )
    row = stats.compare(df).iloc[0]
    assert row.n_pairs == 2 and row.n_unpaired == 3  # seeds 0, 3 (baseline only), 7 (variant only)
    assert row.mean_diff == pytest.approx(((3.0 - 4.5) + (4.0 - 5.0)) / 2)
    assert row.verdict.endswith("n = 2 pairs")


def test_unfinished_run_breaks_its_pair():
    df = results({"none": [4.0, 4.5, 5.0], "layernorm": [3.0, 4.0, 4.5]})
    df.loc[df.run_id == "layernorm-s2", "status"] = "diverged"
    assert stats.compare(df).iloc[0].n_pairs == 2


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_pairs_is_said_not_computed(n):
    df = results({"none": [4.0] * n, "layernorm": [3.0] * n}) if n else results({"none": [4.0]})
    if n == 0:
        df = pd.concat([df, results({"layernorm": [3.0]}, seeds=[5])])
    row = stats.compare(df).iloc[0]
    assert row.n_pairs == n and math.isnan(row.ci_low) and math.isnan(row.p_value)
    assert "not enough pairs" in row.verdict


def test_exact_bootstrap_matches_enumeration_and_brackets_the_mean():
    d = np.array([1.0, 2.0, 4.0])
    lo, hi, method = stats.bootstrap_ci(d)
    means = [np.mean([d[i], d[j], d[k]]) for i in range(3) for j in range(3) for k in range(3)]
    assert method == "exact"
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert lo < d.mean() < hi


def test_large_samples_use_seeded_monte_carlo():
    d = np.random.default_rng(1).normal(0.3, 1.0, size=20)
    a, b = stats.bootstrap_ci(d, seed=0), stats.bootstrap_ci(d, seed=0)
    assert a == b and a[2] == "monte carlo" and a[0] < d.mean() < a[1]
    p1, m1 = stats.sign_flip_p(np.random.default_rng(2).normal(0, 1, 20))
    assert m1 == "monte carlo" and 0 < p1 <= 1
    assert stats.sign_flip_p(np.ones(20) * 0.1)[0] == pytest.approx(
        2 / 10_001
    )  # both tails of 10,000 + 1


def test_exact_permutation_p_value_by_hand():
    d = np.array([1.0, 2.0, -0.5, 3.0])
    flips = np.array(np.meshgrid(*[[-1, 1]] * 4)).reshape(4, -1).T
    expected = np.mean(np.abs((flips * d).mean(axis=1)) >= abs(d.mean()) - 1e-12)
    assert stats.sign_flip_p(d) == (pytest.approx(expected), "exact")


def test_effect_size_and_probability_of_improvement():
    base = [4.0, 4.0, 4.0, 4.0]
    row = stats.compare(results({"none": base, "layernorm": [3.0, 5.0, 3.5, 3.5]})).iloc[0]
    d = np.array([-1.0, 1.0, -0.5, -0.5])
    assert row.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    assert row.p_improve == 0.75  # lower val PPL is better in 3 of 4 pairs


def test_higher_is_better_metric_counts_improvement_upwards():
    df = results({"none": [0.5, 0.5, 0.5], "rmsnorm": [0.6, 0.4, 0.7]}, metric="accuracy")
    row = stats.compare(df).iloc[0]
    assert row.p_improve == pytest.approx(2 / 3) and row.verdict.startswith("rmsnorm raises")


def test_extra_axis_gets_statistics_per_cell():
    df = pd.concat(
        [
            results({"none": [4.0, 4.0], "layernorm": [3.0, 3.0]}, lr=1e-3),
            results({"none": [5.0, 5.0], "layernorm": [5.5, 5.5]}, lr=3e-4),
        ]
    )
    comp = stats.compare(df, axes=["lr"]).set_index("lr")
    assert comp.loc[1e-3, "mean_diff"] == -1.0 and comp.loc[3e-4, "mean_diff"] == 0.5
    summary = stats.summarize(df, axes=["lr"])
    assert len(summary) == 4 and set(summary.columns) >= {"lr", "variant", "mean"}


def test_budget_check_flags_unfinished_and_unequal_budgets():
    df = results({"none": [4.0, 4.5, 5.0], "layernorm": [3.0, 4.0, 4.5]})
    assert stats.budget_check(df) == []
    df.loc[df.run_id == "none-s1", "tokens"] = 512
    df.loc[df.run_id == "layernorm-s2", "status"] = "cancelled"
    problems = stats.budget_check(df)
    assert len(problems) == 2
    assert "1 of 6 runs not finished" in problems[0] and "layernorm-s2 (cancelled)" in problems[0]
    assert "unequal budgets" in problems[1] and "none-s1 (512)" in problems[1]


def test_budget_sweep_is_checked_per_cell():
    df = pd.concat(
        [
            results({"none": [4.0], "layernorm": [3.0]}, iters=10).assign(tokens=100),
            results({"none": [4.0], "layernorm": [3.0]}, iters=20).assign(tokens=200),
        ]
    )
    assert stats.budget_check(df, axes=["iters"]) == []
    assert "unequal budgets" in stats.budget_check(df)[0]


def test_a_study_of_fifteen_runs_is_fast():
    rng = np.random.default_rng(0)
    metric_values = {m: rng.normal(5, 1, 15) for m in stats.METRICS}
    df = results({v: [0.0] * 5 for v in ("none", "layernorm", "rmsnorm")})
    for m, vals in metric_values.items():
        df[m] = vals
    start = time.perf_counter()
    comp = stats.compare(df)
    stats.summarize(df)
    elapsed = time.perf_counter() - start
    assert len(comp) == 2 * len(stats.METRICS) and comp.n_pairs.eq(5).all()
    assert elapsed < 0.5, f"{elapsed:.3f}s"


def test_a_cell_without_baseline_runs_still_gets_a_row():
    df = pd.concat(
        [
            results({"none": [4.0, 4.0], "layernorm": [3.0, 3.0]}, lr=1e-3),
            results({"layernorm": [5.5, 5.5]}, lr=3e-4),
        ]
    )
    row = stats.compare(df, axes=["lr"]).set_index("lr").loc[3e-4]
    assert row.n_pairs == 0 and row.n_unpaired == 2 and "not enough pairs" in row.verdict
