"""`labtui run` and `labtui sessions` through the real CLI, and how studies are built from flags."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import invoke

from core.spec import Study
from labtui.commands.run_cmd import build_study


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread, above all on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = ["--layers", "2", "--width", "32", "--heads", "4", "--context", "32", "--batch", "8"]


def test_end_to_end_tiny_study(tmp_path, corpus_path):
    root = tmp_path / ("deep" * 20) / "root"  # a path longer than a line: printed unbroken
    result = invoke(
        "run", *TINY, "--iters", "12", "--variants", "none,rmsnorm", "--seeds", "0",
        "--eval-interval", "0", "--checkpoint-interval", "0", "--device", "cpu",
        "--data", corpus_path, "--root", root, "--session", "e2e", "--order", "interleaved",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "[1/2] r000-none-s0 finished" in result.output
    assert "[2/2] r001-rmsnorm-s0 finished" in result.output
    assert "r000-none-s0: 28,576 parameters on CPU" in result.output  # the exact count, printed
    assert f"session: {root / 'e2e'}" in result.output
    meta = json.loads((root / "e2e" / "session.json").read_text())
    assert meta["study"]["grid"] == {"variant": ["none", "rmsnorm"], "seed": [0]}
    assert meta["study"]["order"] == "interleaved"
    assert meta["study"]["base"]["n_embd"] == 32 and meta["study"]["base"]["iters"] == 12
    prov = meta["provenance"]
    assert prov["corpus_sha256"].startswith("86c4e6aa") and prov["device"] == "cpu"
    for key in ("labtui_version", "git_commit", "git_dirty", "python", "torch", "cuda", "host"):
        assert key in prov
    rows = (root / "e2e" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",finished," in row for row in rows[1:])
    assert not (root / "e2e" / "lock").exists()

    again = invoke("run", "--resume", "e2e", "--root", root, "--data", corpus_path)
    assert again.exit_code == 0 and "nothing to run in e2e: 2 finished" in again.output

    listing = invoke("sessions", "--root", root)
    assert listing.exit_code == 0
    line = next(x for x in listing.output.splitlines() if x.startswith("e2e"))
    assert [cell.strip() for cell in line.split("│")][2:4] == ["2", "2"]  # runs, finished


def test_flags_build_the_grid():
    study = build_study(None, {"variants": "none,rmsnorm", "seeds": "0-2,7", "lr": "1e-3,3e-4"})
    assert study.grid == {
        "variant": ("none", "rmsnorm"), "seed": (0, 1, 2, 7), "lr": (1e-3, 3e-4)
    }  # fmt: skip
    assert study.base.lr == 1e-3 and study.base.iters == 300 and len(study.specs()) == 16
    default = build_study(None, {})
    assert default == Study() and len(default.specs()) == 15  # the protocol


def test_flags_override_a_study_file():
    text = """
order = "interleaved"
[base]
n_layer = 2
n_embd = 32
n_head = 4
lr = 0.002
[grid]
variant = ["none", "layernorm"]
seed = [0, 1]
lr = [0.001, 0.002]
"""
    study = build_study(text, {"lr": "5e-3", "seeds": "3"}, device="cpu")
    assert study.grid == {"variant": ("none", "layernorm"), "seed": (3,)}
    assert (study.base.lr, study.base.device, study.order) == (5e-3, "cpu", "interleaved")
    swept = build_study(text, {"width": "30,60", "heads": "3"}, order="grid")
    assert swept.grid["n_embd"] == (30, 60) and swept.order == "grid"


BAD_STUDIES = {
    "unknown field": ("[base]\nwidth = 3\n", "unknown run field"),
    "bad value": ('[grid]\nvariant = ["none", "batchnorm"]\n', "batchnorm"),
    "empty grid": ("[grid]\nseed = []\n", "empty"),
    "not toml": ("[grid\n", "not valid TOML"),
    "bad cell": ("[base]\nn_embd = 30\n[grid]\nn_head = [3, 4]\n", "not divisible"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_bad_studies_are_refused_before_writing(tmp_path, corpus_path, case):
    text, message = BAD_STUDIES[case]
    (tmp_path / "study.toml").write_text(text)
    root = tmp_path / "root"
    result = invoke(
        "run", "--study", tmp_path / "study.toml", "--root", root, "--data", corpus_path
    )
    assert result.exit_code == 2
    assert result.output.startswith("labtui: error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not root.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "fast"], "--lr: 'fast' is not a number"),
        (["--seeds", "4-1"], "--seeds: '4-1' is not an integer"),
        (["--width", "30", "--heads", "4"], "not divisible"),
        (["--variants", ""], "empty value"),
        (["--order", "random"], "unknown order"),
        (["--precision", "fp8"], "unknown precision"),
        (["--device", "tpu"], "unknown device"),
        (["--study", "missing.toml"], "cannot read study file"),
        (["--session", "../up"], "bad session name"),
        (["--session", ".hidden"], "bad session name"),
        (["--session", "a/b"], "bad session name"),
        (["--executor", "ray", "--gpus-per-run", "1.5"], "a fraction up to 1 or a whole number"),
        (["--address", "auto"], "--address and --gpus-per-run go with --executor ray"),
        (["--executor", "mpi"], "unknown executor"),
        (["--retry-failed"], "needs --resume"),
        (["--resume", "x", "--lr", "1e-3"], "--resume takes no study"),
        (["--resume", "nope"], "no session 'nope'"),
        (["--resume", "../nope"], "must not contain '..'"),
    ],
)
def test_bad_flags_and_names_are_refused(tmp_path, corpus_path, args, message):
    root = tmp_path / "root"
    result = invoke("run", *args, "--root", root, "--data", corpus_path)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("labtui: error: ") and message in result.output
    assert not root.exists() or not any(root.iterdir())


def test_an_existing_session_is_not_overwritten(tmp_path, corpus_path):
    from sessions.store import Session

    root = tmp_path / "root"
    Session.create(root, Study(), name="taken").close()
    before = (root / "taken" / "session.json").read_text()
    result = invoke("run", *TINY, "--session", "taken", "--root", root, "--data", corpus_path)
    assert result.exit_code == 2 and "already exists" in result.output
    assert (root / "taken" / "session.json").read_text() == before


def test_a_missing_corpus_is_refused_before_writing(tmp_path):
    root = tmp_path / "root"
    result = invoke("run", *TINY, "--root", root, "--data", tmp_path / "nothing.txt")
    assert result.exit_code == 2 and result.output.startswith("labtui: error: ")
    assert not root.exists()
