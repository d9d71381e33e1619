"""Known answers for core.tradeoff: sweep tables, sensitivity, stable ranges, winners, paragraph."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from core import stats, tradeoff

LOSS0 = 4.0  # the loss at initialization the tests count a diverged run as


def run(variant, seed, lr, loss, status="finished", loss_spikes=0, grad_spikes=0, **extra):
    """One row of a results table; ``loss`` None for a diverged run."""
    return {
        "run_id": f"{variant}-s{seed}-lr{lr:g}",
        "variant": variant,
        "seed": seed,
        "status": status,
        "val_loss": loss,
        "val_ppl": None if loss is None else math.exp(loss),
        "tokens": 1024,
        "max_grad_norm": 3.0,
        "loss_spikes": loss_spikes,
        "grad_spikes": grad_spikes,
        "diverged_step": 7 if status == "diverged" else None,
        "max_logit": 10.0,
        "max_attn_logit": 5.0,
        "precision": "fp32",
        "lr": lr,
        **extra,
    }


def lr_sweep() -> pd.DataFrame:
    """none wins at lr 1e-4, layernorm at 1e-3 and 1e-2; none diverges once at 1e-2."""
    return pd.DataFrame(
        [
            run("none", 0, 1e-4, 2.0),
            run("none", 1, 1e-4, 2.5),
            run("none", 0, 1e-3, 1.5),
            run("none", 1, 1e-3, 1.75),
            run("none", 0, 1e-2, None, status="diverged"),
            run("none", 1, 1e-2, 4.5, loss_spikes=2),  # worse than at initialization
            run("layernorm", 0, 1e-4, 2.5),
            run("layernorm", 1, 1e-4, 2.5, grad_spikes=1),
            run("layernorm", 0, 1e-3, 1.25),
            run("layernorm", 1, 1e-3, 1.5),
            run("layernorm", 0, 1e-2, 1.75),
            run("layernorm", 1, 1e-2, 2.0),
            run("layernorm", 2, 1e-2, None, status="pending"),
        ]
    )


def row(table, **where):
    for k, v in where.items():
        table = table[table[k] == v]
    assert len(table) == 1, where
    return table.iloc[0]


def test_init_loss_is_log_vocabulary_size():
    assert tradeoff.init_loss(65) == math.log(65)
    with pytest.raises(ValueError):
        tradeoff.init_loss(1)


def test_sweep_table_counts_divergence_as_the_initial_loss():
    table = tradeoff.sweep_table(lr_sweep(), "lr", LOSS0)
    assert len(table) == 6
    r = row(table, variant="none", lr=1e-2)
    assert (r.n_done, r.n_finished, r.n_diverged, r.n_spiked, r.n_other) == (2, 1, 1, 1, 0)
    assert r.diverged_frac == 0.5 and not r.stable
    assert r.final_loss == (LOSS0 + 4.5) / 2
    assert r.final_ppl == pytest.approx((math.exp(LOSS0) + math.exp(4.5)) / 2)
    assert r.ppl_mean == pytest.approx(math.exp(4.5)) and math.isnan(r.ppl_ci_low)
    r = row(table, variant="layernorm", lr=1e-2)
    assert (r.n_done, r.n_other, r.n_diverged, r.n_spiked) == (2, 1, 0, 0) and r.stable
    assert r.final_loss == 1.875
    lo, hi = stats.t_interval([math.exp(1.75), math.exp(2.0)])
    assert (r.ppl_ci_low, r.ppl_ci_high) == pytest.approx((lo, hi))
    assert not row(table, variant="layernorm", lr=1e-4).stable  # a gradient spike


def test_summary_best_lr_sensitivity_and_stable_range():
    table = tradeoff.sweep_table(lr_sweep(), "lr", LOSS0)
    summary = tradeoff.sweep_summary(table, "lr", LOSS0).set_index("variant")
    none, ln = summary.loc["none"], summary.loc["layernorm"]
    assert none.best == 1e-3 and none.best_loss == 1.625 and ln.best == 1e-3
    assert none.best_ppl == pytest.approx((math.exp(1.5) + math.exp(1.75)) / 2)
    # mean of min(final loss, 4.0) over the grid minus the best: (2.25 + 1.625 + 4.0) / 3 - 1.625
    assert none.sensitivity == pytest.approx(1.0)
    assert ln.sensitivity == pytest.approx((2.5 + 1.375 + 1.875) / 3 - 1.375)
    assert none.stable == (1e-4, 1e-3) and ln.stable == (1e-3, 1e-2)
    grid = [1e-4, 1e-3, 1e-2]
    assert tradeoff.stable_text(none.stable, grid) == "0.0001 to 0.001"
    assert tradeoff.stable_text((1e-4, 1e-2), grid) == "0.0001, 0.01"
    assert tradeoff.stable_text((), grid) == "none"
    assert (none.n_cells, ln.n_cells) == (3, 3)


def test_best_prefers_the_smaller_value_on_a_tie_and_all_diverged_is_the_initial_loss():
    df = pd.DataFrame(
        [
            run("none", 0, 1e-4, 2.0),
            run("none", 0, 1e-3, 2.0),
            run("none", 0, 1e-2, None, status="diverged"),
        ]
    )
    table = tradeoff.sweep_table(df, "lr", LOSS0)
    assert row(table, lr=1e-2).final_loss == LOSS0 and row(table, lr=1e-2).diverged_frac == 1
    s = tradeoff.sweep_summary(table, "lr", LOSS0).iloc[0]
    assert s.best == 1e-4 and s.sensitivity == pytest.approx((2 + 2 + 4) / 3 - 2)


def test_without_spike_columns_only_divergence_decides_stability():
    df = lr_sweep().drop(columns=["loss_spikes", "grad_spikes"])
    assert not tradeoff.spikes_known(df)
    table = tradeoff.sweep_table(df, "lr", LOSS0)
    assert table.n_spiked.isna().all()
    assert row(table, variant="layernorm", lr=1e-4).stable
    assert not row(table, variant="none", lr=1e-2).stable


def test_winners_per_cell_with_the_paired_comparison():
    df = lr_sweep()
    table = tradeoff.sweep_table(df, "lr", LOSS0)
    wins = tradeoff.winners(df, table, "lr").set_index("lr")
    assert wins.winner.to_dict() == {1e-4: "none", 1e-3: "layernorm", 1e-2: "layernorm"}
    assert wins.ranking.to_dict() == {
        1e-4: "none < layernorm",
        1e-3: "layernorm < none",
        1e-2: "layernorm < none",
    }
    low = wins.loc[1e-4]  # the baseline wins: the challenger is the best other variant
    assert low.challenger == "layernorm" and low.n_pairs == 2
    assert low["diff"] == pytest.approx((math.exp(2.5) - math.exp(2.0)) / 2)
    comp = stats.compare(df, axes=["lr"], metrics=["val_ppl"]).set_index("lr")
    assert (low.ci_low, low.ci_high, low.p_value) == (
        comp.loc[1e-4, "ci_low"],
        comp.loc[1e-4, "ci_high"],
        comp.loc[1e-4, "p_value"],
    )
    assert wins.loc[1e-2].n_pairs == 1 and math.isnan(wins.loc[1e-2].ci_low)  # none s0 diverged
    assert wins.loc[1e-3].winner_ppl == pytest.approx((math.exp(1.25) + math.exp(1.5)) / 2)


def test_a_tie_has_no_single_winner():
    """Every run of a cell diverged: the variants tie at the vocabulary size; no one wins."""
    df = pd.DataFrame(
        [run(v, s, 1e-2, None, status="diverged") for v in ("none", "rmsnorm") for s in (0, 1)]
        + [run("none", s, 1e-3, 1.5) for s in (0, 1)]
        + [run("rmsnorm", s, 1e-3, 1.25) for s in (0, 1)]
    )
    table = tradeoff.sweep_table(df, "lr", LOSS0)
    wins = tradeoff.winners(df, table, "lr").set_index("lr")
    assert wins.loc[1e-2].ranking == "none = rmsnorm"
    assert wins.loc[1e-2].winner == "a tie (none = rmsnorm)"
    assert wins.loc[1e-2].winner_ppl == pytest.approx(math.exp(LOSS0))
    assert wins.loc[1e-3].winner == "rmsnorm"


def numbers(text: str) -> set[str]:
    return set(re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text))


def table_numbers(*tables: pd.DataFrame) -> set[str]:
    out = set()
    for t in tables:
        for value in t.to_numpy().ravel():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.add(stats.fmt(value))
    return out


def test_paragraph_says_where_the_ranking_flips_with_numbers_from_the_tables():
    df = lr_sweep()
    table = tradeoff.sweep_table(df, "lr", LOSS0)
    wins = tradeoff.winners(df, table, "lr")
    text = tradeoff.flip_paragraph(table, wins, "lr")
    assert "the best variant is none at lr = 0.0001, then layernorm at lr = 0.001 to 0.01." in text
    none, ln = (stats.fmt(row(table, variant=v, lr=1e-4).final_ppl) for v in ("none", "layernorm"))
    assert none == stats.fmt((math.exp(2.0) + math.exp(2.5)) / 2) and ln == stats.fmt(math.exp(2.5))
    assert (
        "Against none, layernorm is worse at lr = 0.0001, better at lr = 0.001 to 0.01: it "
        f"crosses none between 0.0001 ({ln} vs {none}) and 0.001 (" in text
    )
    assert text.endswith("Diverged runs (counted in the final PPL): none 1 of 2 at 0.01.")
    allowed = table_numbers(table, wins) | {"95"}
    assert numbers(text) <= allowed, numbers(text) - allowed


def test_paragraph_when_the_ranking_never_flips():
    df = pd.DataFrame(
        [
            run(v, s, lr, base + shift + 0.125 * s)
            for lr, base in ((1e-4, 2.0), (1e-3, 1.5))
            for v, shift in (("none", 0.0), ("rmsnorm", -0.25))
            for s in range(3)
        ]
    )
    table = tradeoff.sweep_table(df, "lr", LOSS0)
    wins = tradeoff.winners(df, table, "lr")
    text = tradeoff.flip_paragraph(table, wins, "lr")
    assert "the ranking never flips in the grid: rmsnorm < none at every lr." in text
    assert numbers(text) <= table_numbers(table, wins) | {"95"}


def test_paragraph_without_done_runs():
    df = pd.DataFrame([run("none", 0, 1e-2, None, status="pending")])
    table = tradeoff.sweep_table(df, "lr", LOSS0)
    text = tradeoff.flip_paragraph(table, tradeoff.winners(df, table, "lr"), "lr")
    assert text == "No run finished or diverged in any lr cell: there is no ranking yet."
    df = pd.concat([df, pd.DataFrame([run("none", 0, 1e-3, 2.0)])])
    table = tradeoff.sweep_table(df, "lr", LOSS0)
    text = tradeoff.flip_paragraph(table, tradeoff.winners(df, table, "lr"), "lr")
    assert text.endswith("over lr = 0.001, the ranking never flips in the grid: none at every lr.")


def test_budget_sweep_table_and_other_axes_group_the_cells():
    df = pd.DataFrame(
        [
            run(v, 0, lr, loss, iters=iters).copy()
            for v in ("none", "layernorm")
            for lr in (1e-3, 1e-2)
            for iters, loss in ((100, 2.0), (300, 1.5))
        ]
    )
    table = tradeoff.sweep_table(df, "iters", LOSS0, others=["lr"])
    assert list(table.columns[:3]) == ["lr", "iters", "variant"] and len(table) == 8
    assert row(table, lr=1e-2, iters=300, variant="none").final_loss == 1.5
    summary = tradeoff.sweep_summary(table, "iters", LOSS0, others=["lr"])
    assert len(summary) == 4 and summary.best.eq(300).all()
    wins = tradeoff.winners(df, table, "iters", others=["lr"])
    assert len(wins) == 4 and wins.n_pairs.eq(1).all()


def test_analyse_gives_a_paragraph_per_cell_of_the_other_axes():
    df = pd.concat([lr_sweep().assign(n_embd=32), lr_sweep().assign(n_embd=64)])
    df.loc[(df.n_embd == 64) & (df.variant == "layernorm"), "val_loss"] += 3  # none wins at 64
    sweep = tradeoff.analyse(df, "lr", LOSS0, others=["n_embd"])
    assert sweep.grid == [1e-4, 1e-3, 1e-2] and sweep.others == ["n_embd"]
    assert [cell for cell, _ in sweep.paragraphs] == [{"n_embd": 32}, {"n_embd": 64}]
    assert "none at lr = 0.0001, then layernorm at lr = 0.001 to 0.01" in sweep.paragraphs[0][1]
    assert "never flips in the grid: none < layernorm at every lr" in sweep.paragraphs[1][1]
    assert len(sweep.table) == 12 and len(sweep.summary) == 4 and len(sweep.winners) == 6
