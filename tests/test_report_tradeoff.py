"""The report's factorial contrasts and sweep trade-offs, end to end from real session folders
recorded from made-up engine events, diverged runs included."""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from core import stats
from core.events import EvalLogged, RunFinished, RunResult, RunStarted, StepLogged
from core.presets import load_preset
from core.spec import RunSpec, Study
from labtui.cli import app
from sessions.report import write_report
from sessions.store import Session

BASE = RunSpec(n_layer=2, n_embd=32, n_head=4, block_size=32, batch_size=8, iters=10)
DIVERGED = None  # a run's outcome: its final val loss, or DIVERGED


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def build(root: Path, study: Study, outcome, name="s", provenance=None) -> Session:
    """A session whose runs are recorded from made-up events: ``outcome(spec)`` is the run's
    final val loss, or DIVERGED (after 5 steps, no val metrics). The first step's training loss
    is 4.0 + 0.01 * run index."""
    session = Session.create(root, study, name=name, provenance=provenance or {"torch": "2.x"})
    for i, (run_id, spec) in enumerate(zip(session.run_ids(), study.specs(), strict=True)):
        final = outcome(spec)
        steps = 5 if final is DIVERGED else spec.iters
        session.record(RunStarted(run_id, spec, "cpu", "CPU", 1000))
        for step in range(1, steps + 1):
            loss = 4.0 + 0.01 * i if step == 1 else 3.0 - 0.01 * step
            tokens = step * spec.batch_size * spec.block_size
            session.record(StepLogged(run_id, step, tokens, loss, 1.0, 1.0, spec.lr, 1e4, 0.1))
        if final is DIVERGED:
            result = RunResult(run_id, "diverged", steps, steps * 256, 1000, "cpu", 1.0)
        else:
            bpc, ppl = final / math.log(2), math.exp(final)
            session.record(EvalLogged(run_id, steps, spec.tokens, 1.0, final, bpc, ppl))
            result = RunResult(
                run_id, "finished", steps, spec.tokens, 1000, "cpu", 1.0, final, bpc, ppl,
                best_val_loss=final, final_grad_norm=1.0, accuracy=0.3, macro_accuracy=0.2,
                embed_norm=1.0,
            )  # fmt: skip
        session.record(RunFinished(run_id, result))
    session.close()
    return Session.open(root, name)


# ---- learning-rate sweep ---------------------------------------------------------------------

LOSSES = {  # (variant, lr) -> final val loss per seed; layernorm wins at 0.001, none at 0.01
    ("none", 1e-3): [2.0, 2.1, 2.2],
    ("none", 1e-2): [1.5, 1.6, 1.55],
    ("none", 1e-1): [DIVERGED, DIVERGED, 3.0],
    ("layernorm", 1e-3): [1.9, 2.0, 2.05],
    ("layernorm", 1e-2): [1.6, 1.7, 1.65],
    ("layernorm", 1e-1): [1.8, 1.9, 1.85],
}


def lr_study() -> Study:
    grid = {"variant": ("none", "layernorm"), "seed": (0, 1, 2), "lr": (1e-3, 1e-2, 1e-1)}
    return Study(base=BASE, grid=grid, order="interleaved")


def lr_outcome(spec: RunSpec):
    return LOSSES[spec.variant, spec.lr][spec.seed]


def test_lr_sweep_report_tables_figure_and_paragraph(tmp_path):
    session = build(tmp_path, lr_study(), lr_outcome, provenance={"corpus_vocab_size": 65})
    result = write_report(session)
    out = result.out_dir
    assert [s.axis for s in result.sweeps] == ["lr"]
    assert (
        png_size(out / "tradeoff_lr.png") == (800, 500) and out / "tradeoff_lr.png" in result.files
    )
    assert (out / "tradeoff_lr.png").stat().st_size > 5000

    loss0 = math.log(65)
    cells = pd.read_csv(out / "tradeoff_lr.csv")
    none_high = cells[(cells.variant == "none") & (cells.lr == 1e-1)].iloc[0]
    assert (none_high.n_done, none_high.n_diverged, none_high.n_finished) == (3, 2, 1)
    assert none_high.final_loss == pytest.approx((2 * loss0 + 3.0) / 3)
    assert not none_high.stable and math.isnan(none_high.n_spiked)  # spikes not recorded here

    summary = result.sweeps[0].summary.set_index("variant")
    finals = {lr: sum(LOSSES["none", lr]) / 3 for lr in (1e-3, 1e-2)}
    expected = (finals[1e-3] + finals[1e-2] + (2 * loss0 + 3.0) / 3) / 3 - finals[1e-2]
    assert summary.loc["none", "best"] == 1e-2
    assert summary.loc["none", "sensitivity"] == pytest.approx(expected)
    assert summary.loc["none", "stable"] == (1e-3, 1e-2)
    assert summary.loc["layernorm", "stable"] == (1e-3, 1e-2, 1e-1)

    wins = result.sweeps[0].winners.set_index("lr")
    assert wins.winner.to_dict() == {1e-3: "layernorm", 1e-2: "none", 1e-1: "layernorm"}
    assert wins.loc[1e-3].n_pairs == 3 and wins.loc[1e-1].n_pairs == 1

    md = (out / "report.md").read_text()
    for text in (
        "## Learning-rate trade-off (lr)",
        f"ln V = ln 65 = {stats.fmt(loss0)} (V: corpus_vocab_size",
        "### Per variant",
        "| none | 0.01 |",
        "| 0.001 to 0.01 |",
        "| 0.001 to 0.1 |",
        "### Winners",
        "the best variant is layernorm at lr = 0.001, then none at lr = 0.01, then layernorm at "
        "lr = 0.1.",
        "Diverged runs (counted in the final PPL): none 2 of 3 at 0.1.",
        "![tradeoff_lr](tradeoff_lr.png)",
    ):
        assert text in md, text
    paragraph = next(line for line in md.splitlines() if line.startswith("Ranked by final PPL"))
    in_tables = {
        c.strip() for line in md.splitlines() if line.startswith("|") for c in line.split("|")
    }
    in_tables |= {n for c in in_tables for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", c)}
    numbers = set(re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", paragraph)) - {"95"}
    assert numbers <= in_tables, numbers - in_tables


def test_old_session_takes_the_initial_loss_from_the_first_steps(tmp_path):
    result = write_report(build(tmp_path, lr_study(), lr_outcome))
    n = len(lr_study().specs())
    loss0 = 4.0 + 0.01 * (n - 1)  # the largest first-step loss
    assert "records no corpus_vocab_size" in result.init_note
    assert f"{stats.fmt(loss0)} (of {n} runs)" in result.init_note
    row = result.sweeps[0].table.query("variant == 'none' and lr == 0.1").iloc[0]
    assert row.final_loss == pytest.approx((2 * loss0 + 3.0) / 3)
    assert result.init_note in (result.out_dir / "report.md").read_text()


def test_cli_prints_the_trade_off(tmp_path):
    build(tmp_path, lr_study(), lr_outcome, provenance={"corpus_vocab_size": 65})
    out = CliRunner().invoke(app, ["report", "s", "--root", str(tmp_path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for text in (
        "Learning-rate trade-off (lr): per cell",
        "Learning-rate trade-off (lr): per variant",
        "Learning-rate trade-off (lr): winners",
        "then none at lr = 0.01",
        "tradeoff_lr.png",
    ):
        assert text in out.output, text


# ---- budget sweep ----------------------------------------------------------------------------


def test_budget_sweep_gets_its_table_and_figure_against_tokens(tmp_path):
    study = Study(
        base=BASE, grid={"variant": ("none", "rmsnorm"), "seed": (0, 1), "iters": (10, 20)}
    )

    def outcome(spec):
        if spec.variant == "rmsnorm" and spec.iters == 20 and spec.seed == 1:
            return DIVERGED
        return 2.5 - spec.iters / 100 - (0.1 if spec.variant == "rmsnorm" else 0) + spec.seed / 64

    result = write_report(build(tmp_path, study, outcome))
    assert result.axes == ["iters"]  # a result column, still a swept axis
    assert set(result.comparison["iters"]) == {10, 20}  # statistics per budget, not pooled
    (sweep,) = result.sweeps
    assert sweep.axis == "iters" and list(sweep.table.columns[:3]) == ["iters", "tokens", "variant"]
    assert dict(zip(sweep.table.iters, sweep.table.tokens, strict=True)) == {
        10: 10 * 256,
        20: 20 * 256,
    }
    out = result.out_dir
    assert png_size(out / "tradeoff_budget.png") == (800, 500)
    table = pd.read_csv(out / "tradeoff_budget.csv")
    assert table.query("variant == 'rmsnorm' and iters == 20").n_diverged.item() == 1
    md = (out / "report.md").read_text()
    section = md.split("## Budget trade-off (iters)")[1].split("## Budget check")[0]
    assert "### Per variant" not in section and "### Winners" in section
    assert "| iters | tokens | variant |" in section
    # rmsnorm is better at 10 steps; at 20 one of its two seeds diverged: divergence loses
    assert "the best variant is rmsnorm at iters = 10, then none at iters = 20." in section


# ---- controls: the factorial contrasts -------------------------------------------------------

EFFECT = {"none": 0.0, "scaled": 0.25, "layernorm-small": -0.125, "layernorm": 0.0}
EFFECT |= {"rmsnorm-small": -0.25, "rmsnorm": -0.5}


def test_controls_get_factorial_contrasts_for_both_families(tmp_path):
    study = dataclasses.replace(load_preset("controls"), base=BASE)
    study = dataclasses.replace(study, grid={**study.grid, "seed": (0, 1, 2)})

    def outcome(spec):
        return 2.0 + EFFECT[spec.variant] + spec.seed / 8

    result = write_report(build(tmp_path, study, outcome))
    f = result.factorial.query("metric == 'val_loss'").set_index(["family", "effect"]).estimate
    # layernorm: scale ((0.25 - 0) + (0 + 0.125)) / 2, norm ((-0.125 - 0) + (0 - 0.25)) / 2
    assert f["layernorm", "scale"] == pytest.approx(0.1875)
    assert f["layernorm", "normalization"] == pytest.approx(-0.1875)
    assert f["layernorm", "interaction"] == pytest.approx(0.125 - 0.25)
    assert f["rmsnorm", "interaction"] == pytest.approx((-0.5 + 0.25) - 0.25)
    out = result.out_dir
    table = pd.read_csv(out / "factorial.csv")
    assert out / "factorial.csv" in result.files
    assert set(table.family) == {"layernorm", "rmsnorm"} and table.n_seeds.eq(3).all()
    md = (out / "report.md").read_text()
    assert "## Factorial contrasts: scale x normalization" in md
    assert "| family | metric | effect | seeds | estimate | 95% CI | p | d_z |" in md
    assert "- layernorm family: larger scale raises val loss by 0.1875" in md
    assert not result.sweeps and "trade-off" not in md
    cli = CliRunner().invoke(app, ["report", "s", "--root", str(tmp_path)], env={"COLUMNS": "200"})
    assert cli.exit_code == 0 and "Factorial contrasts: scale x normalization" in cli.output
    assert "rmsnorm family: interaction on val loss" in cli.output


def test_a_protocol_session_has_neither(tmp_path):
    study = Study(base=BASE, grid={"variant": ("none", "layernorm"), "seed": (0, 1)})
    result = write_report(build(tmp_path, study, lambda s: 2.0 + s.seed / 8))
    assert result.factorial.empty and not result.sweeps
    names = {p.name for p in result.files}
    assert not names & {"factorial.csv", "tradeoff_lr.png", "tradeoff_lr.csv"}


# ---- a real sweep, end to end ------------------------------------------------------------------


def test_a_real_tiny_lr_sweep_with_a_diverging_rate_through_run_and_report(tmp_path, corpus_path):
    """labtui run trains it (one rate large enough to diverge), labtui report draws the trade-off:
    the diverged runs are counted, never dropped."""
    root = tmp_path / "root"
    run = CliRunner().invoke(app, [
        "run", "--variants", "none,layernorm", "--seeds", "0,1", "--lr", "1e-3,1e3",
        "--iters", "30", "--layers", "1", "--width", "16", "--heads", "2", "--context", "16",
        "--batch", "4", "--eval-interval", "0", "--device", "cpu", "--session", "sweep",
        "--root", str(root), "--data", str(corpus_path),
    ], env={"COLUMNS": "200"})  # fmt: skip
    assert run.exit_code == 0, run.output
    diverged = [line for line in run.output.splitlines() if "lr1000" in line and "│" in line]
    assert len(diverged) == 4 and all(line.count("diverged") >= 3 for line in diverged)
    report = CliRunner().invoke(app, ["report", "sweep", "--root", str(root)])
    assert report.exit_code == 0, report.output
    out = root / "sweep" / "report"
    assert png_size(out / "tradeoff_lr.png") == (800, 500)
    table = pd.read_csv(out / "tradeoff_lr.csv")
    high = table[table.lr == 1e3]
    assert list(high.n_diverged) == [2, 2] and list(high.diverged_frac) == [1.0, 1.0]
    assert list(high.final_ppl.round(6)) == [65.0, 65.0]  # counted at initialization: PPL = V
    md = (out / "report.md").read_text()
    assert "Diverged runs (counted in the final PPL): none 2 of 2 at 1000, layernorm 2 of 2" in md
