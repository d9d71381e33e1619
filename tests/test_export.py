"""`labtui export`: stable columns, content, --out, refusals, and no Textual anywhere on the way."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.events import EvalLogged, RunFinished, RunResult, RunStarted, StepLogged
from core.spec import Study
from labtui.cli import app
from sessions.store import EVAL_COLUMNS, METRIC_COLUMNS, RESULT_COLUMNS, Session

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path, tiny_spec):
    """A session "lab" of 2 runs (an lr sweep): one finished with 3 steps, one still pending."""
    root = tmp_path / "root"
    study = Study(base=tiny_spec, grid={"variant": ("rmsnorm",), "seed": (4,), "lr": (1e-3, 3e-4)})
    with Session.create(root, study, name="lab") as session:
        run_id = "r000-rmsnorm-s4-lr0.001"
        session.record(RunStarted(run_id, session.spec(run_id), "cpu", "CPU", 28608))
        for n in (1, 2, 3):
            session.record(StepLogged(run_id, n, 256 * n, 4.0 - n / 10, 2.0, 5.6, 1e-3, 900.0, n))
        session.record(EvalLogged(run_id, 3, 768, 3.5, 3.25, 4.6888, 25.79))
        result = RunResult(run_id, "finished", 3, 768, 28608, "cpu", 3.5, 3.25, 4.6888, 25.79,
                           3.25, 1.5, 0.12, 0.02, 5.6)  # fmt: skip
        session.record(RunFinished(run_id, result))
    return root


def export(*args):
    return CliRunner().invoke(app, ["export", *map(str, args)])


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_results_columns_and_values(root):
    result = export("lab", "--root", root)
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split(",")
    assert header == [*RESULT_COLUMNS, "lr"]
    (row,) = rows(result.output)  # the pending run has no result yet
    assert row["run_id"] == "r000-rmsnorm-s4-lr0.001" and row["variant"] == "rmsnorm"
    assert (row["seed"], row["status"], row["lr"]) == ("4", "finished", "0.001")
    assert float(row["val_loss"]) == 3.25 and float(row["val_ppl"]) == 25.79
    assert float(row["final_grad_norm"]) == 1.5 and float(row["embed_norm"]) == 5.6
    assert (row["n_params"], row["iters"], row["tokens"], row["device"]) == (
        "28608", "20", "768", "cpu"
    )  # fmt: skip


def test_metrics_and_evals_put_the_run_first(root):
    metrics = export("lab", "--root", root, "--what", "metrics")
    assert metrics.exit_code == 0
    keys = ["run_id", "variant", "seed", "spec_lr"]  # lr is a metrics column too
    assert metrics.output.splitlines()[0].split(",") == [*keys, *METRIC_COLUMNS]
    table = rows(metrics.output)
    assert [r["step"] for r in table] == ["1", "2", "3"]
    assert float(table[2]["loss"]) == pytest.approx(3.7) and table[2]["spec_lr"] == "0.001"
    evals = export(root / "lab", "--root", root, "--what", "evals")  # a path works too
    assert evals.output.splitlines()[0].split(",") == [*keys[:3], "lr", *EVAL_COLUMNS]
    assert rows(evals.output)[0]["val_bpc"] == "4.6888"


def test_out_writes_a_file_and_will_not_overwrite(root, tmp_path):
    out = tmp_path / "results.csv"
    assert export("lab", "--root", root, "--out", out).exit_code == 0
    first = out.read_text()
    assert first.startswith("run_id,variant,seed,status,")
    again = export("lab", "--root", root, "--out", out, "--what", "evals")
    assert again.exit_code == 2 and "exists" in again.output
    assert out.read_text() == first
    forced = export("lab", "--root", root, "--out", out, "--what", "evals", "--force")
    assert forced.exit_code == 0 and out.read_text().startswith("run_id,variant,seed,lr,step,")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("session", "message"),
    [
        ("missing", "no session 'missing'"),
        ("../lab", "must not contain '..'"),
        ("a..b", "bad session name"),
        ("/tmp", "outside the session root"),
        ("broken", "broken"),
        ("empty", "not a labtui session"),
    ],
)
def test_refusals_are_one_line_and_exit_2(root, session, message):
    (root / "broken").mkdir()
    (root / "broken" / "session.json").write_text('{"name": "broken"}')
    (root / "empty").mkdir()
    result = export(session, "--root", root)
    assert result.exit_code == 2
    assert result.output.startswith("labtui: error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_what_is_refused(root):
    result = export("lab", "--root", root, "--what", "weights")
    assert result.exit_code == 2 and "unknown --what" in result.output


def test_an_empty_export_still_has_its_columns(tmp_path, tiny_spec):
    Session.create(tmp_path, Study(base=tiny_spec, grid={"seed": (0,)}), name="new").close()
    assert export("new", "--root", tmp_path).output.strip() == ",".join(RESULT_COLUMNS)
    metrics = export("new", "--root", tmp_path, "--what", "metrics").output.strip()
    assert metrics == ",".join(["run_id", "variant", "seed", *METRIC_COLUMNS])


def test_export_never_imports_textual(root):
    """Headless: neither the module nor a whole `labtui export` loads Textual."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DISPLAY", None)
    check = "import sys, labtui.commands.export_cmd; assert 'textual' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], env=env, check=True, cwd=root)
    whole = (
        "import sys\n"
        "from labtui.cli import app\n"
        f"sys.argv = ['labtui', 'export', 'lab', '--root', {str(root)!r}]\n"
        "try:\n    app()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "assert 'textual' not in sys.modules, 'textual was imported'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", whole], env=env, cwd=root, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("run_id,variant,seed,status,")
