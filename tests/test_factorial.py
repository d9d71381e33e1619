"""Known answers for the 2 x 2 controls (scale x normalization) in core.stats.factorial."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from core import stats

INTERACTION = [0.125, 0.375, -0.125, 0.125]  # per seed; mean 0.125
SCALE, NORM = 0.5, -0.25  # dyadic: every sum below is exact


def four_runs(family: str, seed: int, inter: float, **extra) -> list[dict]:
    """The four runs of one seed: none = mu, scaled = mu + SCALE, small = mu + NORM,
    norm = mu + SCALE + NORM + inter."""
    mu = 4.0 + 0.25 * seed
    values = dict(
        zip(
            stats.FAMILIES[family],
            (mu, mu + SCALE, mu + NORM, mu + SCALE + NORM + inter),
            strict=True,
        )
    )
    return [
        {
            "run_id": f"{v}-s{seed}",
            "variant": v,
            "seed": seed,
            "status": "finished",
            "val_ppl": x,
            "val_loss": math.log(x),
            "tokens": 1024,
            "max_grad_norm": 2.0,
            "loss_spikes": 0,
            "grad_spikes": 0,
            "diverged_step": None,
            **extra,
        }
        for v, x in values.items()
    ]


def table(family="layernorm", **extra) -> pd.DataFrame:
    rows = [r for s, i in enumerate(INTERACTION) for r in four_runs(family, s, i, **extra)]
    return pd.DataFrame(rows)


def effect(result: pd.DataFrame, name: str, family="layernorm", metric="val_ppl"):
    rows = result[(result.family == family) & (result.effect == name) & (result.metric == metric)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_main_effects_and_interaction_have_the_known_values():
    result = stats.factorial(table(), metrics=["val_ppl"])
    assert len(result) == 3 and set(result.effect) == {"scale", "normalization", "interaction"}
    inter = effect(result, "interaction")
    assert inter.n_seeds == 4 and inter.estimate == 0.125
    assert effect(result, "scale").estimate == SCALE + 0.125 / 2
    assert effect(result, "normalization").estimate == NORM + 0.125 / 2


def test_interval_and_p_value_are_those_of_the_per_seed_contrasts():
    result = stats.factorial(table(), metrics=["val_ppl"])
    for name, per_seed in {
        "interaction": INTERACTION,
        "scale": [SCALE + i / 2 for i in INTERACTION],
        "normalization": [NORM + i / 2 for i in INTERACTION],
    }.items():
        row = effect(result, name)
        lo, hi, method = stats.bootstrap_ci(per_seed)
        p, p_method = stats.sign_flip_p(per_seed)
        assert (row.ci_low, row.ci_high, row.ci_method) == (lo, hi, method) == (lo, hi, "exact")
        assert (row.p_value, row.p_method) == (p, p_method)
    inter = effect(result, "interaction")
    assert inter.p_value == pytest.approx(0.5)  # 8 of 16 sign patterns reach |mean| >= 0.125
    assert inter.ci_low < 0 < inter.ci_high and "the CI includes 0" in inter.verdict
    scale = effect(result, "scale")
    assert scale.p_value == pytest.approx(2 / 16) and scale.ci_low > 0
    assert scale.verdict.startswith("layernorm family: larger scale raises val PPL by 0.5625")
    assert scale.verdict.endswith("n = 4 seeds")


def test_per_seed_contrasts_and_seeds_without_all_four_are_left_out():
    df = table()
    df.loc[df.run_id == "layernorm-s1", "status"] = "diverged"  # seed 1 loses its fourth run
    df = df[df.run_id != "scaled-s3"]  # seed 3 never ran scaled
    contrasts = stats.factorial_contrasts(df, "layernorm", "val_ppl")
    assert contrasts.seed.tolist() == [0, 2]
    assert contrasts.interaction.tolist() == [INTERACTION[0], INTERACTION[2]]
    assert contrasts[["none", "scaled", "norm_small", "norm"]].iloc[0].tolist() == [
        4.0,
        4.5,
        3.75,
        4.375,
    ]
    row = effect(stats.factorial(df, metrics=["val_ppl"]), "interaction")
    assert row.n_seeds == 2 and row.estimate == 0.0


def test_both_families_and_a_swept_axis_each_get_their_rows():
    rms = table("rmsnorm")
    rms = rms[~rms.variant.isin(["none", "scaled"])]  # none and scaled are shared
    small_lr = pd.concat([table(lr=1e-3), rms.assign(lr=1e-3)])
    # at lr 3e-4 every value doubles: every contrast doubles too
    big_lr = small_lr.assign(lr=3e-4, val_ppl=small_lr.val_ppl * 2)
    df = pd.concat([small_lr, big_lr], ignore_index=True)
    assert stats.factorial_families(df) == ["layernorm", "rmsnorm"]
    result = stats.factorial(df, axes=["lr"], metrics=["val_ppl"])
    assert len(result) == 2 * 2 * 3
    inter = result[result.effect == "interaction"].set_index(["lr", "family"]).estimate
    assert inter.to_dict() == {
        (3e-4, "layernorm"): 0.25,
        (3e-4, "rmsnorm"): 0.25,
        (1e-3, "layernorm"): 0.125,
        (1e-3, "rmsnorm"): 0.125,
    }


def test_no_complete_family_gives_an_empty_table():
    df = table()
    df = df[df.variant != "layernorm-small"]
    assert stats.factorial_families(df) == []
    result = stats.factorial(df)
    assert result.empty and list(result.columns) == list(stats.FACTORIAL_COLUMNS)


def test_every_metric_by_default_and_too_few_seeds_said():
    df = table()
    df = df[df.seed == 0]
    result = stats.factorial(df)
    assert set(result.metric) == {
        "val_ppl",
        "val_loss",
        "max_grad_norm",
        "loss_spikes",
        "grad_spikes",
    }
    row = effect(result, "interaction", metric="val_loss")
    assert row.n_seeds == 1 and math.isnan(row.ci_low) and "not enough seeds" in row.verdict


def test_the_families_are_the_control_variants():
    from core.spec import VARIANTS

    assert {v for four in stats.FAMILIES.values() for v in four} == set(VARIANTS)
    assert stats.FAMILIES["rmsnorm"] == ("none", "scaled", "rmsnorm-small", "rmsnorm")
