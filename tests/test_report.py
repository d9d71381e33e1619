"""The report: every file from a session folder, PNG sizes, partial sessions, the CLI."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.events import EvalLogged, RunFinished, RunResult, RunStarted, StepLogged
from core.spec import RunSpec, Study
from labtui.cli import app
from sessions.report import write_report
from sessions.store import Session

FIGURES = ("loss.png", "grad_norm.png", "embed_norm.png", "val_ppl.png")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def build_session(root: Path, study: Study, statuses=None, name="s1") -> Session:
    """A real session folder whose runs are recorded from made-up engine events (fast).

    ``statuses`` maps a run's index to how it ends: "cancelled", "failed", "interrupted" (steps
    but no end) or "pending" (never started); every other run finishes.
    """
    rng = np.random.default_rng(0)
    shift = {"none": 0.0, "layernorm": -0.05, "rmsnorm": -0.03}
    session = Session.create(
        root, study, name=name, provenance={"torch": "2.x", "host": {"cpu": "t"}}
    )
    for i, (run_id, spec) in enumerate(zip(session.run_ids(), study.specs(), strict=True)):
        status = (statuses or {}).get(i, "finished")
        if status == "pending":
            continue
        session.record(RunStarted(run_id, spec, "cpu", "CPU", 1000))
        steps = np.arange(1, spec.iters + 1)
        loss = 4.2 - np.log1p(steps) * 0.3 + shift[spec.variant] + rng.normal(0, 0.02, len(steps))
        for step, value in zip(steps, loss, strict=True):
            tokens = int(step) * spec.batch_size * spec.block_size
            session.record(
                StepLogged(
                    run_id,
                    int(step),
                    tokens,
                    float(value),
                    float(rng.uniform(0.5, 2)),
                    1 + step / 100,
                    spec.lr,
                    1e4,
                    step * 0.01,
                )
            )
        val = [float(loss[9] + 0.1), float(loss[-1] + 0.1)]
        for step, v in zip((10, spec.iters), val, strict=True):
            session.record(EvalLogged(run_id, step, 0, 0.0, v, v / math.log(2), math.exp(v)))
        if status == "interrupted":
            continue
        done = status == "finished"
        metrics = (
            dict(
                val_loss=val[-1],
                val_bpc=val[-1] / math.log(2),
                val_ppl=math.exp(val[-1]),
                final_grad_norm=1.0 + rng.normal(0, 0.1),
                accuracy=0.3 - shift[spec.variant],
                macro_accuracy=0.2,
                embed_norm=1.2,
            )
            if done
            else {}
        )
        result = RunResult(
            run_id,
            status,
            spec.iters if done else 5,
            spec.tokens if done else 5 * 256,
            1000,
            "cpu",
            1.0,
            **metrics,
        )
        session.record(RunFinished(run_id, result, "Traceback" if status == "failed" else None))
    session.close()
    return Session.open(root, name)


def small_study(**grid) -> Study:
    base = RunSpec(n_layer=2, n_embd=32, n_head=4, block_size=32, batch_size=8, iters=20)
    return Study(base=base, grid={"variant": ("none", "layernorm"), "seed": (0, 1, 2), **grid})


def test_report_writes_every_file_and_figures_of_the_right_size(tmp_path):
    session = build_session(tmp_path, small_study())
    result = write_report(session)
    out = tmp_path / "s1" / "report"
    for name in ("stats.csv", "pairs.csv", "report.md", *FIGURES):
        assert (out / name).is_file(), name
        assert out / name in result.files
    for name in FIGURES:
        assert (out / name).stat().st_size > 5000 and png_size(out / name) == (800, 500)
    table = pd.read_csv(out / "stats.csv")
    row = table[(table.variant == "layernorm") & (table.metric == "val_ppl")].iloc[0]
    assert row.n == 3 and row.n_pairs == 3 and row.mean_diff < 0
    assert "layernorm lowers val PPL" in row.verdict
    assert table[table.metric == "best_val_loss"]["n"].eq(3).all()  # filled in from evals.csv
    assert len(pd.read_csv(out / "pairs.csv").query("metric == 'val_ppl'")) == 3
    md = (out / "report.md").read_text()
    for text in (
        "# labtui report: s1",
        "6 of 6 runs finished",
        "## Study",
        "## Environment",
        "| torch | 2.x |",
        "## Summary",
        "### Verdicts",
        "### Per-seed differences",
        "## Budget check",
        "![loss](loss.png)",
    ):
        assert text in md, text
    assert "partial" not in md.lower()


def test_partial_session_says_so_and_flags_unfinished_runs(tmp_path):
    statuses = {1: "cancelled", 2: "pending", 5: "interrupted"}
    result = write_report(build_session(tmp_path, small_study(), statuses=statuses))
    assert result.partial and result.n_finished == 3
    assert result.status_counts == {"finished": 3, "cancelled": 1, "pending": 1, "interrupted": 1}
    assert result.status_line.startswith("partial: 3 of 6 runs finished")
    md = (result.out_dir / "report.md").read_text()
    assert "partial: 3 of 6 runs finished" in md and "only partly finished" in md
    assert (
        "3 of 6 runs not finished, left out: r001-none-s1 (cancelled), r002-none-s2 (pending), "
        "r005-layernorm-s2 (interrupted)"
    ) in md
    assert "layernorm vs none: 1 seed(s) without a pair left out, 1 pair(s) used" in md
    row = result.comparison.query("metric == 'val_ppl'").iloc[0]
    assert row.n_pairs == 1 and "not enough pairs" in row.verdict  # only seed 0 on both sides


def test_a_diverged_run_is_done_but_left_out_and_flagged(tmp_path):
    result = write_report(build_session(tmp_path, small_study(), statuses={4: "diverged"}))
    assert not result.partial and result.n_finished == 5
    assert result.status_line == "5 of 6 runs finished (5 finished, 1 diverged)"
    assert result.problems[0].startswith("1 of 6 runs not finished, left out: r004-layernorm-s1")
    assert result.comparison.query("metric == 'val_ppl'").iloc[0].n_pairs == 2


@pytest.mark.parametrize("grid", [{}, {"lr": (1e-3, 3e-4)}])
def test_session_without_finished_runs_still_reports(tmp_path, grid):
    study = small_study(**grid)
    statuses = dict.fromkeys(range(len(study.specs())), "failed") | {0: "pending"}
    result = write_report(build_session(tmp_path, study, statuses=statuses))
    assert result.n_finished == 0 and not [p for p in result.files if p.suffix == ".png"]
    assert "No run has finished yet" in (result.out_dir / "report.md").read_text()
    assert (result.out_dir / "stats.csv").is_file() and (result.out_dir / "pairs.csv").is_file()


def test_lr_sweep_gets_statistics_per_cell_and_a_figure_against_lr(tmp_path):
    session = build_session(tmp_path, small_study(lr=(1e-3, 3e-4)))
    result = write_report(session)
    assert result.axes == ["lr"]
    assert set(result.comparison["lr"]) == {1e-3, 3e-4} and result.comparison.n_pairs.eq(3).all()
    figure = result.out_dir / "val_ppl_vs_lr.png"
    assert figure in result.files and png_size(figure) == (800, 500)
    assert "| lr | variant | metric |" in (result.out_dir / "report.md").read_text()


def test_cli_report_prints_tables_and_paths(tmp_path, monkeypatch):
    build_session(tmp_path, small_study())
    out = CliRunner().invoke(app, ["report", "s1", "--root", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "6 of 6 runs finished" in out.output and "Paired comparison with none" in out.output
    assert "layernorm lowers val PPL" in out.output and "report.md" in out.output
    assert "With 3 pairs the smallest possible p is 2/2^3 = 0.25" in out.output


def test_cli_missing_session_is_one_line_exit_2(tmp_path):
    out = CliRunner().invoke(app, ["report", "nope", "--root", str(tmp_path)])
    assert out.exit_code == 2
    assert out.stderr.strip() == f"labtui: error: no session 'nope' in {tmp_path}"
    assert not (tmp_path / "nope").exists()


def test_report_of_a_tiny_real_session(tmp_path, corpus, tiny_spec):
    """Real training through the real runner and store: every file, figures of the right size."""
    from sessions.runner import StudyRunner

    base = tiny_spec.replace(eval_interval=0, checkpoint_interval=0)  # one evaluation per run
    study = Study(base=base, grid={"variant": ("none", "layernorm"), "seed": (0, 1)})
    with Session.create(tmp_path, study, name="tiny") as session:
        StudyRunner(session, corpus).run()
    result = write_report(Session.open(tmp_path, "tiny"))
    assert not result.partial and result.n_finished == 4 and result.problems == []
    for name in ("stats.csv", "pairs.csv", "report.md", *FIGURES):
        path = tmp_path / "tiny" / "report" / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in FIGURES:
        assert png_size(result.out_dir / name) == (800, 500)
    row = result.comparison.query("metric == 'val_ppl'").iloc[0]
    assert row.n_pairs == 2 and row.ci_low <= row.mean_diff <= row.ci_high
    assert result.summary.query("metric == 'best_val_loss'")["n"].eq(2).all()
    md = (result.out_dir / "report.md").read_text()
    assert "4 of 4 runs finished" in md and "saw the same budget of 5120 training tokens" in md
