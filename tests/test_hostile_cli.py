"""A hostile user against the headless side: damaged files, absurd flags, kills mid-write.

Every session here is really trained (tiny runs) and every command really run; each test is a
defect that was found this way, with the behaviour it has now: one `labtui: error:` line and
exit 2 for bad input, no traceback, nothing saved lost, and files that are whole or absent.
"""

from __future__ import annotations

import io
import json
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_helpers import invoke, one_error_line
from matplotlib.image import imread

from conftest import TINY
from core import tradeoff
from core.spec import Study
from data import cache_root
from sessions.estimates import estimate, timing
from sessions.provenance import collect
from sessions.runner import StudyRunner
from sessions.store import Session

REPO = Path(__file__).resolve().parents[1]
BASE = TINY.replace(iters=4, eval_interval=0, checkpoint_interval=0)


def trained(root: Path, name: str, study: Study, corpus, run_ids=None) -> Path:
    """A session of ``study`` whose runs (or only ``run_ids``) are really trained."""
    session = Session.create(root, study, name=name, provenance=collect(corpus, "cpu"))
    try:
        StudyRunner(session, corpus, group=False).run(run_ids)
    finally:
        session.close()
    return root / name


@pytest.fixture(scope="module")
def lab(tmp_path_factory, corpus):
    """A root with "base" (none and rmsnorm, seed 0) and "sweep" (precision x iters)."""
    root = tmp_path_factory.mktemp("hostile")
    study = Study(base=BASE, grid={"variant": ("none", "rmsnorm"), "seed": (0,)})
    trained(root, "base", study, corpus)
    grid = {"variant": ("none", "rmsnorm"), "seed": (0,), "precision": ("fp32", "bf16")}
    trained(root, "sweep", Study(base=BASE, grid={**grid, "iters": (2, 4)}), corpus)
    return root


@pytest.fixture
def copy(lab, tmp_path):
    """A copy of one of the lab's sessions to damage: copy("base") -> (root, folder)."""

    def make(name: str) -> tuple[Path, Path]:
        shutil.copytree(lab / name, tmp_path / name)
        return tmp_path, tmp_path / name

    return make


# -- labtui sample ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**64, -1])
def test_a_sampling_seed_out_of_range_is_one_line(lab, seed):
    line = one_error_line(invoke("sample", "base", "r000-none-s0", "--root", lab, "--seed", seed))
    assert f"the sampling seed must be from 0 to 2**64 - 1, got {seed}" in line


@pytest.mark.parametrize(
    ("device", "message"),
    [("bogus", "unknown device 'bogus'"), ("cuda:99", "device 'cuda:99' asked for")],
)
def test_sample_on_an_unknown_device_is_one_line(lab, device, message):
    line = one_error_line(invoke("sample", "base", "--root", lab, "--device", device))
    assert message in line


def test_a_tiny_temperature_is_greedy_and_an_infinite_one_is_refused(lab):
    args = ("sample", "base", "r001-rmsnorm-s0", "--root", lab, "--tokens", 30, "--device", "cpu")
    greedy = invoke(*args, "--temperature", 0)
    tiny = invoke(*args, "--temperature", 1e-45)  # logits / 1e-45 overflowed to inf - inf = NaN
    assert tiny.exit_code == 0 and tiny.output == greedy.output
    line = one_error_line(invoke(*args, "--temperature", "inf"))
    assert "temperature must be a finite number >= 0, got inf" in line


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--tokens", -1, "tokens must be >= 0, got -1"),
        ("--temperature", -1, "temperature must be a finite number >= 0, got -1.0"),
        ("--temperature", "nan", "temperature must be a finite number >= 0, got nan"),
        ("--top-k", 0, "top_k must be >= 1, got 0"),
    ],
)
def test_a_sampling_argument_out_of_range_is_one_line(lab, flag, value, message):
    """These were typer's usage block (Usage:, Try..., Error: "greater than or equal to 0", the
    same words for nan); the rule is core.sample's, spelled once."""
    args = ("sample", "base", "--root", lab, flag, value)
    assert one_error_line(invoke(*args)) == f"labtui: error: {message}"


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a checkpoint\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:3000])


def _bad_spec(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["spec"]["variant"] = "bogus"
    torch.save(state, path)


def _other_run(path: Path) -> None:
    shutil.copy(path.parent.parent / "r000-none-s0" / "checkpoint.pt", path)


def _nan_weights(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    for weights in state["model"].values():
        weights.fill_(math.nan)  # a diverged run's last resume.pt can hold such weights
    torch.save(state, path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_garbage, "the checkpoint.pt of run r001-rmsnorm-s0 cannot be loaded (UnpicklingError"),
        (_empty, "the checkpoint.pt of run r001-rmsnorm-s0 cannot be loaded (EOFError"),
        (_truncated, "the checkpoint.pt of run r001-rmsnorm-s0 cannot be loaded (RuntimeError"),
        (_bad_spec, "cannot be loaded (SpecError: unknown variant 'bogus'"),
        (_other_run, "the checkpoint.pt of run r001-rmsnorm-s0 belongs to another run spec"),
        (_nan_weights, "cannot sample r001-rmsnorm-s0: the model's output is not finite"),
    ],
)
def test_a_damaged_checkpoint_is_one_line(copy, damage, message):
    root, folder = copy("base")
    damage(folder / "runs" / "r001-rmsnorm-s0" / "checkpoint.pt")
    line = one_error_line(invoke("sample", "base", "r001-rmsnorm-s0", "--root", root))
    assert message in line
    per_variant = invoke("sample", "base", "--root", root, "--tokens", 5)  # none's, then the error
    assert per_variant.exit_code == 2 and "Traceback" not in per_variant.output
    assert per_variant.output.splitlines()[-1] == line


def test_a_huge_sample_shows_as_it_comes_and_ctrl_c_keeps_it(lab):
    """--tokens 10^9 printed nothing until done (days), and Ctrl-C lost all of it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABTUI_HOME": str(lab)}
    args = ["sample", "base", "r000-none-s0", "--prompt", "ROMEO:", "--tokens", 10**9]
    proc = subprocess.Popen(
        [sys.executable, "-m", "labtui.cli", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first, deadline = b"", time.monotonic() + 60
    while len(first) < 200 and time.monotonic() < deadline:  # text arrives while it is drawn
        if select.select([proc.stdout], [], [], 1)[0]:
            first += os.read(proc.stdout.fileno(), 4096)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert len(first) >= 200, "nothing shown while drawing"
    assert proc.returncode == 130 and b"Traceback" not in err, err
    shown = (first + rest).decode()
    assert shown.startswith("ROMEO:") and shown.endswith("\n")


# -- labtui studies --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["bogus", "cuda:99", "mps"])
def test_studies_on_an_unknown_or_absent_device_is_one_line(device):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    line = one_error_line(invoke("studies", "--device", device))
    assert f"{device}'" in line


@pytest.mark.parametrize(
    "entry",
    [
        {"step_s": "fast"},
        {"step_s": -1.0},
        {"load": "high"},
        {"measured": 5},
        {"eval_batch_s": None},
    ],
)
def test_a_damaged_step_time_entry_is_measured_again(entry):
    good = timing(BASE)
    cache = cache_root() / "step-times.json"
    known = json.loads(cache.read_text())
    [key] = known
    known[key] = {**known[key], **entry}
    cache.write_text(json.dumps(known))
    guess = estimate(Study(base=BASE))  # what `labtui studies` does: was a TypeError or ValueError
    again = timing(BASE)
    assert again != good and guess.seconds > 0 and again.describe() in guess.how
    assert json.loads(cache.read_text())[key]["measured"] == again.measured


# -- labtui run ------------------------------------------------------------------------------------


def test_max_runs_cannot_lift_a_study_past_what_memory_holds(tmp_path, corpus_path):
    """--seeds 0-1000000000 with --max-runs 10^20 built a billion values until the machine ran
    out of memory; a cap on the address space keeps the old behaviour a MemoryError here."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    env = {**os.environ, "PYTHONPATH": str(REPO), "LABTUI_HOME": str(tmp_path)}
    args = ["--seeds", "0-1000000000", "--max-runs", 10**20, "--data", corpus_path]
    done = subprocess.run(
        [sys.executable, "-m", "labtui.cli", "run", *map(str, args)],
        env=env,
        preexec_fn=cap,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (
        "labtui: error: the study has 3,000,000,003 runs, over the most a study can have "
        "(1,000,000: its runs are built in memory)"
    )
    assert list(tmp_path.iterdir()) == []


def test_max_runs_below_one_is_one_line(tmp_path, corpus_path):
    result = invoke("run", "--max-runs", 0, "--root", tmp_path, "--data", corpus_path)
    assert one_error_line(result) == "labtui: error: --max-runs must be at least 1, got 0"


def test_a_session_that_could_not_be_created_leaves_its_name_free(tmp_path, corpus_path):
    from test_faults import fill, mount_tmpfs

    fs = tmp_path / "fs"
    mount_tmpfs(fs, size="256k")
    try:
        filler = fill(fs)
        flags = ["--layers", 1, "--width", 16, "--heads", 2, "--context", 16, "--batch", 4]
        args = ["run", *flags, "--iters", 2, "--seeds", 0, "--variants", "none"]
        args += ["--device", "cpu", "--data", corpus_path, "--root", fs, "--session", "x"]
        line = one_error_line(invoke(*args))
        assert "no space left on device while writing" in line
        assert not (fs / "x").exists()  # was: a folder with an empty lock and no session.json
        filler.unlink()
        again = invoke(*args)  # was: "session 'x' already exists"
        assert again.exit_code == 0, again.output
        assert Session.open(fs, "x").run("r000-none-s0").status == "finished"
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


@pytest.mark.parametrize("name", ["-x", "--x", "../x", "a b", "ünï", ".x", "a" * 101])
def test_a_new_session_name_that_commands_cannot_take_is_refused(tmp_path, corpus_path, name):
    """A session named "-x" was created, and then `labtui report -x` read it as an option."""
    flags = ["--layers", 1, "--width", 16, "--heads", 2, "--context", 16, "--batch", 4]
    args = ["run", *flags, "--iters", 2, "--seeds", 0, "--variants", "none", "--device", "cpu"]
    line = one_error_line(
        invoke(*args, "--data", corpus_path, "--root", tmp_path, f"--session={name}")
    )
    assert line.startswith(f"labtui: error: bad session name {name!r}")
    assert list(tmp_path.iterdir()) == []


def test_a_session_named_with_a_dash_before_the_rule_still_opens(copy):
    root, folder = copy("base")
    folder.rename(root / "-x")
    report = invoke("report", "--root", root, "--", "-x")
    assert report.exit_code == 0 and report.output.startswith("base: 2 of 2"), report.output


# -- damaged session files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("provenance", [1, 2], "its provenance is not an object"),
        ("study", "grid", "its study is not an object"),
    ],
)
def test_a_session_json_of_the_wrong_shape_is_one_line(copy, field, value, message):
    root, folder = copy("base")
    meta = json.loads((folder / "session.json").read_text())
    meta[field] = value
    (folder / "session.json").write_text(json.dumps(meta))
    for command in (["report"], ["sample"], ["export"]):
        line = one_error_line(invoke(*command, "base", "--root", root))
        assert "session base is broken: bad session.json" in line and message in line
    listed = invoke("sessions", "--root", root)
    assert listed.exit_code == 0 and "broken" in listed.output, listed.output


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: [1],
        lambda r: "finished",
        lambda r: {**r, "val_loss": "abc"},
        lambda r: {**r, "loss_spikes": "many"},
        lambda r: {**r, "step": True},
        lambda r: {**r, "status": "running"},  # was: a run "running" for ever, never resumed
    ],
)
def test_a_damaged_result_json_reads_as_no_result(copy, damage):
    root, folder = copy("base")
    path = folder / "runs" / "r000-none-s0" / "result.json"
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    assert Session.open(root, "base").run("r000-none-s0").status == "interrupted"
    for command in (["report", "base"], ["sample", "base", "--tokens", 3], ["export", "base"]):
        result = invoke(*command, "--root", root)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert (
        "1 of 2 runs finished (1 finished, 1 interrupted)"
        in invoke("report", "base", "--root", root).output
    )
    assert "r000-none-s0" not in invoke("sample", "base", "--root", root, "--tokens", 3).output


def test_a_result_json_naming_another_run_is_counted_once(copy):
    root, folder = copy("base")
    path = folder / "runs" / "r000-none-s0" / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "run_id": "zzz"}))
    report = invoke("report", "base", "--root", root)
    assert report.exit_code == 0 and "base: 2 of 2 runs finished" in report.output, report.output
    exported = pd.read_csv(folder / "report" / "stats.csv")
    assert set(exported["variant"]) == {"none", "rmsnorm"}
    assert list(Session.open(root, "base").results()["run_id"]) == [
        "r000-none-s0",
        "r001-rmsnorm-s0",
    ]


def test_a_metrics_csv_that_is_not_text_is_one_line(copy):
    root, folder = copy("base")
    (folder / "runs" / "r000-none-s0" / "metrics.csv").write_bytes(b"step,loss\n1,\xff\xfe\n")
    line = one_error_line(invoke("export", "base", "--what", "metrics", "--root", root))
    assert "r000-none-s0/metrics.csv line 2: loss" in line and "is not a number" in line
    report = invoke("report", "base", "--root", root)  # the run is left out of the figures
    assert report.exit_code == 0 and "Traceback" not in report.output, report.output


def test_a_results_csv_edited_by_hand_is_not_the_truth(copy, corpus_path):
    """results.csv is rebuilt from the result.json files: an edit changes no number, and the
    next write-open puts it back (the README says so now)."""
    root, folder = copy("base")
    truth = (folder / "results.csv").read_text()
    table = pd.read_csv(folder / "results.csv")
    table.loc[0, "val_loss"] = 0.001
    table.to_csv(folder / "results.csv", index=False)
    exported = pd.read_csv(io.StringIO(invoke("export", "base", "--root", root).output))
    assert exported.loc[0, "val_loss"] == pytest.approx(
        pd.read_csv(io.StringIO(truth)).loc[0, "val_loss"]
    )
    resumed = invoke("run", "--resume", "base", "--root", root, "--data", corpus_path)
    assert resumed.exit_code == 0, resumed.output
    assert (folder / "results.csv").read_text() == truth
    assert "an edit here is overwritten" in " ".join((REPO / "README.md").read_text().split())


@pytest.mark.parametrize("header", ["garbage", "loss,tokens", "step,step,loss"])
def test_a_metrics_csv_with_a_foreign_header_is_one_line(copy, header):
    """A header of unknown columns was exported as data, and the report failed on KeyError."""
    root, folder = copy("sweep")
    path = folder / "runs" / "r000-none-s0-precisionfp32-iters2" / "metrics.csv"
    row = ",".join("1" for _ in header.split(","))
    path.write_text(f"{header}\n{row}\n")
    line = one_error_line(invoke("export", "sweep", "--what", "metrics", "--root", root))
    assert f"r000-none-s0-precisionfp32-iters2/metrics.csv line 1: header {header!r}" in line
    meta = json.loads((folder / "session.json").read_text())
    del meta["provenance"]["corpus_vocab_size"]  # the loss at init from the first steps
    (folder / "session.json").write_text(json.dumps(meta))
    report = invoke("report", "sweep", "--root", root)
    assert report.exit_code == 0 and "Traceback" not in report.output, report.output


@pytest.mark.parametrize("run_id", ["../../../evil", "evil", 7, "r001-none-s1/../../x"])
def test_an_added_run_with_a_bad_id_makes_the_session_broken(copy, corpus_path, run_id):
    """A run id in added.jsonl was taken as is: "../../../evil" stayed pending for ever and
    stopped every resume with "has no run 'evil'"."""
    root, folder = copy("base")
    spec = json.loads((folder / "runs" / "r000-none-s0" / "spec.json").read_text())
    line = json.dumps({"runs": [{"run_id": run_id, "spec": spec}]})
    (folder / "added.jsonl").write_text(line + "\n")
    refused = one_error_line(
        invoke("run", "--resume", "base", "--root", root, "--data", corpus_path)
    )
    assert f"added.jsonl line 1: bad run id {run_id!r}" in refused
    assert not (root.parent / "evil").exists() and not (root / "evil").exists()
    listed = invoke("sessions", "--root", root)
    assert listed.exit_code == 0 and "broken" in listed.output, listed.output


# -- labtui report and export on sweeps ------------------------------------------------------------


def test_report_and_export_of_a_precision_and_budget_sweep(copy):
    root, folder = copy("sweep")
    report = invoke("report", "sweep", "--root", root)  # was: float('bf16') in a figure
    assert report.exit_code == 0 and "Traceback" not in report.output, report.output
    for name in ("val_ppl_vs_precision.png", "val_ppl_vs_iters.png", "tradeoff_budget.png"):
        assert imread(folder / "report" / name).shape[:2] == (500, 800)
    for what in ("metrics", "evals"):  # was: neither iters nor precision said which run a row is
        exported = invoke("export", "sweep", "--what", what, "--root", root)
        table = pd.read_csv(io.StringIO(exported.output))
        assert list(table.columns[:5]) == ["run_id", "variant", "seed", "precision", "iters"]
        last = table.groupby("run_id").last()
        assert (last["step"] == last["iters"]).all()
        cells = set(zip(last["precision"], last["iters"], strict=True))
        assert cells == {("fp32", 2), ("fp32", 4), ("bf16", 2), ("bf16", 4)}


def test_a_rerun_replaces_the_report_files_never_writes_into_them(copy):
    """A file written in place is half a file while it is written (a kill then leaves it cut);
    one written beside and renamed over it is whole or not there: a new file (inode), while a
    second link to the old one keeps the old one as it was."""
    root, folder = copy("sweep")
    assert invoke("report", "sweep", "--root", root).exit_code == 0
    files = sorted((folder / "report").iterdir())
    (folder.parent / "old").mkdir()
    for path in files:
        os.link(path, folder.parent / "old" / path.name)
    assert invoke("report", "sweep", "--root", root).exit_code == 0
    for path in files:
        old = os.stat(folder.parent / "old" / path.name)
        assert os.stat(path).st_ino != old.st_ino and old.st_nlink == 1, path.name


def test_a_report_killed_while_drawing_leaves_whole_figures(copy):
    root, folder = copy("sweep")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABTUI_HOME": str(root)}
    first = folder / "report" / "loss.png"
    proc = subprocess.Popen(
        [sys.executable, "-m", "labtui.cli", "report", "sweep"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for path in (folder / "report").glob("*.png"):
        assert imread(path).shape[:2] == (500, 800), path.name  # was: "image file is truncated"
    for path in (folder / "report").glob("*.csv"):
        pd.read_csv(path)
    again = invoke("report", "sweep", "--root", root)
    assert again.exit_code == 0, again.output


def test_a_report_on_a_full_disk_names_the_file(tmp_path, lab):
    from test_faults import fill, mount_tmpfs

    fs = tmp_path / "fs"
    mount_tmpfs(fs, size="2m")
    try:
        shutil.copytree(lab / "base", fs / "base", ignore=shutil.ignore_patterns("*.pt"))
        fill(fs)
        line = one_error_line(invoke("report", "base", "--root", fs))
        assert "no space left on device while writing " + str(fs / "base" / "report") in line
        assert not [p for p in (fs / "base" / "report").iterdir() if p.suffix == ".png"]
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def test_the_ranking_names_no_order_for_variants_without_a_run(tmp_path, corpus):
    """Only "none" has trained: the report said "none < layernorm at every lr"."""
    study = Study(
        base=BASE, grid={"variant": ("none", "layernorm"), "seed": (0,), "lr": (1e-3, 1e-2)}
    )
    with Session.create(tmp_path, study, name="half") as session:
        todo = [r for r in session.run_ids() if "-none-" in r]
    trained_root = tmp_path / "t"
    trained(trained_root, "half", study, corpus, run_ids=todo)
    report = invoke("report", "half", "--root", trained_root)
    assert report.exit_code == 0, report.output
    text = " ".join(report.output.split())
    assert "none < layernorm" not in text
    assert "the ranking never flips in the grid: none (no run done: layernorm) at every lr." in text


def test_a_variant_that_draws_level_does_not_cross_the_baseline():
    """At lr 1 every run diverged: both are at ln V, level, which is not a crossing."""

    def run(variant, lr, loss, status="finished"):
        return {"variant": variant, "seed": 0, "lr": lr, "status": status, "val_loss": loss,
                "val_ppl": math.exp(loss) if loss else None}  # fmt: skip

    df = pd.DataFrame(
        [run("none", 1e-3, 2.0), run("rmsnorm", 1e-3, 2.5)]
        + [run(v, 1.0, None, "diverged") for v in ("none", "rmsnorm")]
    )
    text = tradeoff.analyse(df, "lr", math.log(65)).paragraphs[0][1]
    assert "Against none, rmsnorm is worse at lr = 0.001, level at lr = 1: it draws level " in text
    assert "crosses" not in text
    # nor is either the best there: it said "the best variant is none at lr = 0.001 to 1"
    assert "the best variant is none at lr = 0.001, then a tie (none = rmsnorm) at lr = 1." in text


def test_the_readme_lists_the_export_columns_there_are():
    """The README listed neither the stability columns nor precision."""
    from sessions.tables import EVAL_COLUMNS, METRIC_COLUMNS, RESULT_COLUMNS

    text = " ".join((REPO / "README.md").read_text().split())

    def listed(after: str) -> list[str]:
        code = text.split(after, 1)[1].split("`")[1]
        return [c.strip() for c in code.split(",") if c.strip() != "[swept fields]"]

    assert listed("one row per run with a result:") == list(RESULT_COLUMNS)
    keys = ["run_id", "variant", "seed"]
    assert listed("one row per training step:") == [*keys, *METRIC_COLUMNS]
    assert listed("one row per evaluation:") == [*keys, *EVAL_COLUMNS]


# -- a study of 10^5 runs: nothing may cost a pass over every run per run ----------------------


@pytest.fixture
def huge(tmp_path):
    """A session of 60,000 planned runs (made by --max-runs), one of them started."""
    study = Study(base=BASE, grid={"variant": ("none", "rmsnorm"), "seed": range(30_000)})
    session = Session.create(tmp_path, study, name="huge")
    yield session
    session.close()


def test_choosing_runs_to_train_in_a_huge_study_is_not_quadratic(huge, corpus):
    """`labtui run` hands the runner its todo list: a set was rebuilt for every run (60,000^2)."""
    runner = StudyRunner(huge, corpus, group=False)
    ids = huge.run_ids()
    began = time.monotonic()
    assert runner.enqueue(ids) == ids
    assert time.monotonic() - began < 10


def test_a_run_ending_in_a_huge_study_reads_no_other_run(huge):
    """results.csv is rebuilt at every run's end: it tried every run's result.json and compared
    every spec to find the swept fields (seconds per run at 10^5 runs)."""
    from core.events import RunFinished, RunResult, RunStarted

    run_id = huge.run_ids()[-1]
    huge.begin(run_id)
    huge.record(RunStarted(run_id, huge.spec(run_id), "cpu", "CPU", 1000))
    huge.axes()  # the swept fields are found once
    result = RunResult(run_id, "finished", 4, 4 * 256, 1000, "cpu", 0.5, val_loss=4.0)
    began = time.monotonic()
    for _ in range(5):
        huge.record(RunFinished(run_id, result))
    assert (time.monotonic() - began) / 5 < 0.2
    assert list(pd.read_csv(huge.path / "results.csv")["run_id"]) == [run_id]
