"""Reliability under faults: full disks, killed writers, files of the wrong kind, corrupt rows.

Real files systems and processes: a small tmpfs that really fills up (root only: skipped with
the reason elsewhere), subprocesses killed with SIGKILL, FIFOs and device nodes.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_helpers import invoke, one_error_line

from core.events import (
    CheckpointSaved,
    RunFinished,
    RunResult,
    RunStarted,
    SinkError,
    StepLogged,
)
from core.spec import SpecError, Study
from sessions.executors import LocalExecutor
from sessions.listing import list_sessions
from sessions.runner import StudyRunner
from sessions.store import Session, SessionError

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--layers", "2", "--width", "32", "--heads", "4", "--context", "32", "--batch", "8"]


# -- helpers: a file system that fills up ---------------------------------------------------------


def mount_tmpfs(where: Path, size: str = "4m", options: str = "") -> None:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (f",{options}" if options else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip() or done.returncode}")


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs: a real file system that runs out of space."""
    where = tmp_path / "fs"
    mount_tmpfs(where)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path, leave: int = 0) -> Path:
    """Fill the file system of ``where`` until fewer than ``leave`` bytes are free."""
    filler = where / f"filler-{time.monotonic_ns()}"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        chunk = 1 << 16
        while chunk:
            if os.statvfs(where).f_bavail * os.statvfs(where).f_frsize <= leave:
                break
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                chunk //= 2
    finally:
        os.close(fd)
    return filler


def labtui_process(root: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABTUI_HOME": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "labtui.cli", *map(str, args)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def study(tiny_spec):
    return Study(base=tiny_spec, grid={"variant": ("none", "rmsnorm"), "seed": (0,)})


def started(session: Session, run_id: str) -> None:
    session.begin(run_id)
    session.record(RunStarted(run_id, session.spec(run_id), "cpu", "CPU", 28576))


def step(run_id: str, n: int) -> StepLogged:
    return StepLogged(run_id, n, n * 256, 2.5 + n / 100, 1.0, 0.5, 1e-3, 1000.0, n * 0.1)


# -- 1. a session's runs come from its study ------------------------------------------------------


def test_creating_a_session_writes_no_run_folder(tmp_path, tiny_spec):
    """2,000 runs cost no folder each up front; they are pending and get folders when they start."""
    study = Study(base=tiny_spec, grid={"variant": ("none", "rmsnorm"), "seed": range(1000)})
    with Session.create(tmp_path, study, name="big") as session:
        assert list((session.path / "runs").iterdir()) == []
        ids = session.run_ids()
        assert len(ids) == 2000 and ids[0] == "r000-none-s0" and ids[-1] == "r1999-rmsnorm-s999"
        assert session.spec(ids[-1]) == tiny_spec.replace(variant="rmsnorm", seed=999)
        assert {r.status for r in session.runs()} == {"pending"}
        started(session, ids[1500])
        assert [p.name for p in (session.path / "runs").iterdir()] == [ids[1500]]
    counts = {s.name: s for s in list_sessions(tmp_path)}["big"]
    assert counts.total == 2000 and counts.counts["interrupted"] == 0
    assert Session.open(tmp_path, "big").run_ids() == ids  # the same ids, derived again


def test_a_session_killed_right_after_session_json_keeps_its_whole_study(
    tmp_path, corpus_path, corpus
):
    """SIGKILL as soon as session.json exists: every run of the study is still planned."""
    process = labtui_process(
        tmp_path, "run", *TINY_FLAGS, "--iters", "3", "--seeds", "0-999", "--variants",
        "none,rmsnorm", "--eval-interval", "0", "--device", "cpu", "--data", corpus_path,
        "--root", tmp_path, "--session", "cut",
    )  # fmt: skip
    meta = tmp_path / "cut" / "session.json"
    deadline = time.monotonic() + 120
    while not meta.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    session = Session.open(tmp_path, "cut")
    assert len(session.run_ids()) == 2000
    assert sum(r.status == "pending" for r in session.runs()) >= 1999
    listing = invoke("sessions", "--root", tmp_path)
    row = next(line for line in listing.output.splitlines() if line.startswith("cut"))
    assert [cell.strip() for cell in row.split("│")][2] == "2000"

    with Session.open(tmp_path, "cut", write=True) as writer:  # --resume re-creates the folders
        runner = StudyRunner(writer, corpus)
        todo = runner.todo()
        assert len(todo) >= 1999 and todo[-1] == "r1999-rmsnorm-s999"
        runner.run([todo[0], todo[-1]])
        assert writer.run(todo[-1]).status == "finished"
        assert (writer.run_dir(todo[-1]) / "spec.json").exists()


def test_a_format_1_session_cut_short_gets_its_study_back(tmp_path, tiny_spec):
    """Format 1 (every folder made at creation) killed after 1 of 4 folders: the runs come back
    from the study, in the order the folders' ids show; a run added back then is kept."""
    grid = {"variant": ("none", "rmsnorm"), "seed": (0, 1)}
    Session.create(tmp_path, Study(base=tiny_spec, grid=grid), name="old").close()
    meta = json.loads((tmp_path / "old" / "session.json").read_text())
    meta["format"] = 1
    del meta["grid_order"]  # format 1 had none: its grid's axes came back sorted (seed first)
    (tmp_path / "old" / "session.json").write_text(json.dumps(meta, sort_keys=True))
    for run_id, spec in [("r000-none-s0", tiny_spec), ("r004-none-s7", tiny_spec.replace(seed=7))]:
        (tmp_path / "old" / "runs" / run_id).mkdir()
        (tmp_path / "old" / "runs" / run_id / "spec.json").write_text(json.dumps(spec.to_dict()))
    session = Session.open(tmp_path, "old", write=True)
    assert session.run_ids() == [
        "r000-none-s0", "r001-none-s1", "r002-rmsnorm-s0", "r003-rmsnorm-s1", "r004-none-s7"
    ]  # fmt: skip
    assert session.spec("r003-rmsnorm-s1") == tiny_spec.replace(variant="rmsnorm", seed=1)
    assert session.add_runs([tiny_spec.replace(seed=9)]) == ["r005-none-s9"]
    session.close()


def test_added_runs_survive_a_kill(tmp_path, study):
    """Session.add_runs is on disk when it returns: a SIGKILL right after loses nothing."""
    Session.create(tmp_path, study, name="s").close()
    script = (
        "import os, signal, sys\n"
        "from sessions.store import Session\n"
        f"s = Session.open({str(tmp_path)!r}, 's', write=True)\n"
        "spec = s.spec(s.run_ids()[0]).replace(seed=7)\n"
        "print(','.join(s.add_runs([spec, spec.replace(seed=8)])), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    added = done.stdout.strip().split(",")
    assert added == ["r002-none-s7", "r003-none-s8"]
    session = Session.open(tmp_path, "s", write=True)  # the dead writer's lock is taken over
    assert session.run_ids()[-2:] == added
    assert session.spec(added[1]).seed == 8 and session.run(added[1]).status == "pending"
    # a kill in the middle of an add leaves a cut line: that add is dropped, the next one is kept
    with open(session.path / "added.jsonl", "a") as f:
        f.write('{"runs": [{"run_id": "r004-none-s9", "spe')
    more = session.add_runs([study.base.replace(seed=10)])
    assert more == ["r004-none-s10"]
    session.close()
    assert Session.open(tmp_path, "s").run_ids()[-3:] == [*added, "r004-none-s10"]


# -- 2 and 3. a full disk -------------------------------------------------------------------------


def test_a_full_disk_while_appending_names_the_file(small_fs, study):
    session = Session.create(small_fs, study, name="s")
    run_id = session.run_ids()[0]
    started(session, run_id)
    session.record(step(run_id, 1))
    filler = fill(small_fs)
    with pytest.raises(OSError, match=r"no space left on device while writing .*metrics\.csv"):
        for n in range(2, 10_000):  # the file's last page fills, then the disk is full
            session.record(step(run_id, n))
    session.close()  # closing after a failed write raises nothing
    assert not (session.path / "lock").exists()
    filler.unlink()
    again = Session.open(small_fs, "s", write=True)
    record = again.run(run_id)
    assert record.status == "interrupted" and record.step >= 1
    assert again.metrics(run_id)["step"].tolist() == list(range(1, record.step + 1))
    assert again.begin(run_id) is None  # no checkpoint: it starts over, its files cleared
    again.close()


def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one(small_fs, study):
    session = Session.create(small_fs, study, name="s")
    run_id = session.run_ids()[0]
    started(session, run_id)
    session.record(CheckpointSaved(run_id, 5, {"step": 5, "w": torch.ones(1000)}))
    filler = fill(small_fs)
    with pytest.raises(OSError, match=r"no space left on device while writing .*resume\.pt"):
        session.record(CheckpointSaved(run_id, 10, {"step": 10, "w": torch.ones(200_000)}))
    folder = session.run_dir(run_id)
    assert sorted(p.name for p in folder.iterdir()) == ["resume.pt", "spec.json"]  # no temp
    assert torch.load(folder / "resume.pt", weights_only=True)["step"] == 5
    session.close()
    filler.unlink()


def test_a_sink_error_stops_the_runner_with_the_file_named(small_fs, corpus, tiny_spec):
    """The runner lets the store's error through as a SinkError naming the file; resumable."""
    spec = tiny_spec.replace(iters=400, eval_interval=0, checkpoint_interval=10)
    session = Session.create(small_fs, Study(base=spec, grid={"seed": (0,)}), name="s")
    filler: list[Path] = []

    def watch(event):
        if isinstance(event, StepLogged) and event.step == 15 and not filler:
            filler.append(fill(small_fs))

    runner = StudyRunner(session, corpus, on_event=watch)
    with pytest.raises(SinkError, match=r"no space left on device while writing .*runs/r000"):
        runner.run()
    session.close()
    filler[0].unlink()
    record = Session.open(small_fs, "s").run("r000-none-s0")
    assert record.status == "interrupted"
    assert torch.load(session.run_dir(record.run_id) / "resume.pt", weights_only=True)["step"] == 10


STUDY = [
    *TINY_FLAGS, "--iters", "120", "--checkpoint-interval", "10", "--eval-interval", "0",
    "--seeds", "0", "--variants", "none,rmsnorm", "--device", "cpu",
]  # fmt: skip


def numbers(session_path: Path) -> pd.DataFrame:
    return pd.read_csv(session_path / "results.csv").drop(columns=["wall_s"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_path) -> pd.DataFrame:
    """STUDY, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    process = labtui_process(root, "run", *STUDY, "--data", corpus_path, "--session", "ref")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    return numbers(root / "ref")


def run_until_full(root: Path, corpus_path: Path, leave: int, *flags: str) -> tuple[int, str, Path]:
    """`labtui run STUDY` into ``root``, its disk filled (to ``leave`` bytes free) during the
    second run; returns the exit code, stderr and the filler file."""
    process = labtui_process(
        root, "run", *STUDY, *flags, "--data", corpus_path, "--session", "full"
    )
    metrics = root / "full" / "runs" / "r001-rmsnorm-s0" / "metrics.csv"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") > 15):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    filler = fill(root, leave=leave)
    _, err = process.communicate(timeout=300)
    return process.returncode, err, filler


@pytest.mark.slow
@pytest.mark.parametrize(
    ("leave", "flags", "file"),
    [
        (0, ("--checkpoint-interval", "100"), "metrics.csv"),  # a row's write fails first
        (128 << 10, (), "resume.pt"),  # room for rows, not for a checkpoint
    ],
)
def test_a_full_disk_stops_the_study_with_one_line_and_resumes_exactly(
    small_fs, corpus_path, reference, leave, flags, file
):
    """One line naming the file, exit 2, the last good checkpoint kept, and once there is room
    again --resume ends with the numbers of an uninterrupted study."""
    code, err, filler = run_until_full(small_fs, corpus_path, leave, *flags)
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    folder = small_fs / "full" / "runs" / "r001-rmsnorm-s0"
    assert last.startswith(
        f"labtui: error: no space left on device while writing {folder / file}; the study stopped"
    ), last
    assert "`labtui run --resume full`" in last
    assert not (small_fs / "full" / "lock").exists()
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
    stopped = Session.open(small_fs, "full").run("r001-rmsnorm-s0")
    assert stopped.status == "interrupted" and stopped.step > 15
    if file == "resume.pt":  # the last good checkpoint is still there, and loads
        kept = torch.load(folder / "resume.pt", weights_only=True)["step"]
        assert kept % 10 == 0 and 10 <= kept <= stopped.step

    filler.unlink()
    resumed = labtui_process(small_fs, "run", "--resume", "full", "--data", corpus_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out + err
    assert "r001-rmsnorm-s0 finished" in out + err
    pd.testing.assert_frame_equal(numbers(small_fs / "full"), reference, check_exact=True)
    steps = pd.read_csv(folder / "metrics.csv")["step"].tolist()
    assert steps == list(range(1, 121))  # no step lost or logged twice


# -- 3. a failed run keeps its valid checkpoint ---------------------------------------------------


class DyingExecutor(LocalExecutor):
    """Trains for real, but its worker dies at step ``at`` (after saving its state there)."""

    def __init__(self, at: int):
        super().__init__(group=False)
        self.at = at

    def execute(self, jobs, corpus, emit, stops):
        def relay(event):
            if isinstance(event, StepLogged) and event.step == self.at:
                stops[event.run_id].set()  # the engine saves a resumable state and ends...
            if not isinstance(event, RunFinished):  # ...but the worker dies before its end
                emit(event)

        super().execute(jobs, corpus, relay, stops)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_retry_failed_continues_from_a_valid_checkpoint(tmp_path, corpus, tiny_spec):
    spec = tiny_spec.replace(iters=16, eval_interval=0, checkpoint_interval=5)
    reference = Session.create(tmp_path / "a", Study(base=spec, grid={"seed": (0,)}))
    StudyRunner(reference, corpus).run()

    session = Session.create(tmp_path / "b", Study(base=spec, grid={"seed": (0,)}))
    StudyRunner(session, corpus, executor=DyingExecutor(at=7)).run()
    run_id = "r000-none-s0"
    failed = session.run(run_id)
    assert failed.status == "failed" and "illegal memory access" in failed.error
    assert (session.run_dir(run_id) / "resume.pt").exists()  # kept: not the checkpoint's fault

    StudyRunner(session, corpus).run(retry_failed=True)
    assert session.run(run_id).status == "finished"
    columns = ["step", "loss", "grad_norm", "lr"]
    got = session.metrics(run_id)[columns].values.tolist()
    assert got == reference.metrics(run_id)[columns].values.tolist()  # continued, not restarted
    science = ["val_loss", "best_val_loss", "final_grad_norm", "tokens"]
    assert (
        session.results()[science].values.tolist() == reference.results()[science].values.tolist()
    )


def test_an_unreadable_checkpoint_fails_the_run_and_is_put_aside(tmp_path, corpus, tiny_spec):
    spec = tiny_spec.replace(iters=6, eval_interval=0)
    session = Session.create(tmp_path, Study(base=spec, grid={"seed": (0,)}))
    run_id = "r000-none-s0"
    started(session, run_id)
    session.record(step(run_id, 1))
    session.close()  # as if killed: the run is interrupted
    (session.run_dir(run_id) / "resume.pt").write_bytes(b"not a checkpoint")
    session = Session.open(tmp_path, session.name, write=True)
    runner = StudyRunner(session, corpus)
    runner.run()
    record = session.run(run_id)
    assert record.status == "failed" and "resume.pt" in record.error
    assert not (session.run_dir(run_id) / "resume.pt").exists()
    assert (session.run_dir(run_id) / "resume.pt.broken").read_bytes() == b"not a checkpoint"
    runner.run(retry_failed=True)  # starts over
    assert session.metrics(run_id)["step"].tolist() == list(range(1, 7))


# -- 4. export --out never replaces what is not a regular file ------------------------------------


@pytest.fixture
def lab(tmp_path, tiny_spec):
    root = tmp_path / "root"
    with Session.create(root, Study(base=tiny_spec, grid={"seed": (0,)}), name="lab") as session:
        run_id = "r000-none-s0"
        started(session, run_id)
        for n in (1, 2):
            session.record(step(run_id, n))
        result = RunResult(run_id, "finished", 2, 512, 28576, "cpu", 1.0, 2.0, 2.9, 7.4)
        session.record(RunFinished(run_id, result))
    return root


def test_export_writes_into_a_fifo_as_a_stream(lab, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = invoke("export", "lab", "--root", lab, "--out", fifo, "--force")
    reader.join(10)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO
    assert got[0].decode().startswith("run_id,variant,seed,status,")


def test_export_writes_into_a_device_without_replacing_it(lab, tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root")
    result = invoke("export", "lab", "--root", lab, "--out", null)
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_export_to_dev_stdout(lab):
    done = labtui_process(lab, "export", "lab", "--root", lab, "--out", "/dev/stdout")
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert out.startswith("run_id,variant,seed,status,")


def test_export_follows_a_symlink_and_keeps_it(lab, tmp_path):
    target = tmp_path / "target.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    refused = invoke("export", "lab", "--root", lab, "--out", link)
    assert "exists" in one_error_line(refused)
    result = invoke("export", "lab", "--root", lab, "--out", link, "--force")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("run_id,variant,seed,status,")
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "new.csv")
    assert invoke("export", "lab", "--root", lab, "--out", dangling).exit_code == 0
    assert dangling.is_symlink() and (tmp_path / "new.csv").read_text().startswith("run_id,")
    folder = invoke("export", "lab", "--root", lab, "--out", tmp_path)
    assert "is a folder" in one_error_line(folder)


# -- 5. the size of a study -----------------------------------------------------------------------


def test_an_absurd_seed_range_is_refused_at_once(tmp_path, corpus_path):
    began = time.monotonic()
    root = tmp_path / "r"
    result = invoke("run", "--seeds", "0-1000000000", "--root", root, "--data", corpus_path)
    line = one_error_line(result)
    assert "3,000,000,003 runs" in line and "10,000" in line and "--max-runs" in line
    assert time.monotonic() - began < 30
    assert not (tmp_path / "r").exists()


def test_a_huge_toml_grid_is_refused_by_counting(tmp_path, corpus_path):
    seeds = ", ".join(map(str, range(1000)))
    lrs = ", ".join(f"{1e-4 * (i + 1):.6g}" for i in range(1000))
    (tmp_path / "big.toml").write_text(f"[grid]\nseed = [{seeds}]\nlr = [{lrs}]\n")
    began = time.monotonic()
    result = invoke("run", "--study", tmp_path / "big.toml", "--root", tmp_path / "r",
                    "--data", corpus_path)  # fmt: skip
    assert "1,000,000 runs" in one_error_line(result)
    assert time.monotonic() - began < 30  # it used to validate every cell: minutes


def test_max_runs_raises_the_limit(tmp_path, tiny_spec):
    from labtui.commands.run_cmd import build_study

    with pytest.raises(SpecError, match="--max-runs"):
        build_study(None, {"seeds": "0-3999"})  # 3 variants: 12,000 runs
    study = build_study(None, {"seeds": "0-3999"}, max_runs=12_000)
    assert study.size == 12_000


def test_a_large_grid_validates_each_value_once(tiny_spec):
    """Building a Study checks each axis value, not every cell; cells are checked on demand."""
    began = time.monotonic()
    lrs = [1e-4 * i for i in range(1, 1001)]
    big = Study(base=tiny_spec, grid={"seed": range(1000), "lr": lrs})
    assert big.size == 1_000_000 and time.monotonic() - began < 5
    with pytest.raises(SpecError, match="lr must be positive"):
        Study(base=tiny_spec, grid={"seed": range(1000), "lr": [1e-3, -1.0]})
    with pytest.raises(SpecError, match="not divisible"):  # (30, 4) is a cell: refused at once
        Study(base=tiny_spec, grid={"n_embd": (32, 30), "n_head": (4, 3)})
    mixed = Study(base=tiny_spec, grid={"n_embd": (12, 8), "n_head": (4, 3)})
    with pytest.raises(SpecError, match="not divisible"):
        mixed.check()  # each value works with the first cell, the combination (8, 3) does not
    with pytest.raises(SpecError, match="limit"):
        big.check()


# -- 6. operating-system errors on the session root are one line ----------------------------------


def test_a_root_that_is_a_file_or_below_one(tmp_path, corpus_path, lab):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for root in (afile, afile / "below"):
        run = invoke("run", *TINY_FLAGS, "--root", root, "--data", corpus_path)
        one_error_line(run)
        for command in (["export", "lab"], ["report", "lab"], ["sample", "lab"]):
            one_error_line(invoke(*command, "--root", root))
    assert "not a folder" in one_error_line(invoke("sessions", "--root", afile))


def test_a_read_only_root(tmp_path, corpus_path, study):
    where = tmp_path / "ro"
    mount_tmpfs(where, "1m")
    try:
        Session.create(where, study, name="s").close()
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        resumed = invoke("run", "--resume", "s", "--root", where, "--data", corpus_path)
        assert "read-only file system" in one_error_line(resumed)
        created = invoke("run", *TINY_FLAGS, "--root", where / "new", "--data", corpus_path)
        assert "read-only file system" in one_error_line(created)
        report = invoke("report", "s", "--root", where)
        assert "read-only file system" in one_error_line(report)
        assert invoke("sessions", "--root", where).exit_code == 0
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_session_files_of_the_wrong_kind(tmp_path, corpus_path, study):
    Session.create(tmp_path, study, name="s").close()
    (tmp_path / "s" / "lock").mkdir()
    one_error_line(invoke("run", "--resume", "s", "--root", tmp_path, "--data", corpus_path))
    (tmp_path / "s" / "lock").rmdir()
    (tmp_path / "s" / "runs").rmdir()
    (tmp_path / "s" / "runs").write_text("not a folder")
    one_error_line(invoke("run", "--resume", "s", "--root", tmp_path, "--data", corpus_path))
    assert invoke("sessions", "--root", tmp_path).exit_code == 0


# -- 7. a corrupt row is an error, a torn last line is dropped ------------------------------------


@pytest.mark.parametrize(
    "row", ["garbage,512,0.2,2.5,1.0,0.5,0.001,1000.0,", "3,512", "3,768,0.3,2.5,1.0,oops,1,1,"]
)
def test_a_corrupt_row_is_an_error_naming_file_and_line(lab, row):
    metrics = lab / "lab" / "runs" / "r000-none-s0" / "metrics.csv"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], lines[1], row, lines[2]]) + "\n" + "4,1024,0.4")
    line = one_error_line(invoke("export", "lab", "--root", lab, "--what", "metrics"))
    assert str(metrics) in line and "line 3" in line


def test_nan_losses_and_a_torn_last_line_are_data(lab):
    metrics = lab / "lab" / "runs" / "r000-none-s0" / "metrics.csv"
    with open(metrics, "a") as f:
        f.write("3,768,0.3,nan,inf,0.5,0.001,1000.0,\n4,1024,0.4,2.5")
    result = invoke("export", "lab", "--root", lab, "--what", "metrics")
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in result.output.splitlines()[1:]]
    assert [row[3] for row in rows] == ["1", "2", "3"]
    assert (rows[2][6], rows[2][7]) == ("", "inf")  # a NaN loss is an empty cell, as pandas has it


# -- 8. temp files left by a kill -----------------------------------------------------------------


def test_temp_files_of_a_killed_writer_are_removed_on_the_next_write_open(tmp_path, study):
    session = Session.create(tmp_path, study, name="s")
    run_id = session.run_ids()[0]
    started(session, run_id)
    session.close()
    target = session.run_dir(run_id) / "resume.pt"
    script = (
        "import time\nfrom sessions import atomic\n"
        f"atomic.write_with({str(target)!r}, lambda f: (f.write(b'x'), f.flush(), print(1, "
        "flush=True), time.sleep(60)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    assert writer.stdout.readline().strip() == b"1"
    writer.kill()
    writer.wait()
    temps = [p for p in session.run_dir(run_id).iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].name.startswith(".resume.pt.")
    (tmp_path / "s" / ".results.csv.x1y2.tmp").write_text("left by a kill")
    Session.open(tmp_path, "s").close()  # reading leaves them
    assert temps[0].exists()
    Session.open(tmp_path, "s", write=True).close()
    assert not temps[0].exists() and not (tmp_path / "s" / ".results.csv.x1y2.tmp").exists()
    assert not target.exists()


# -- also: the lock's message, a corpus shorter than the context ----------------------------------


def test_a_live_lock_says_how_to_check_and_take_it_over(tmp_path, study):
    Session.create(tmp_path, study, name="s")  # held by this process
    with pytest.raises(SessionError) as caught:
        Session.open(tmp_path, "s", write=True)
    message = str(caught.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    assert f"ps -p {os.getpid()} -o args" in message
    assert str(tmp_path / "s" / "lock") in message and "\n" not in message


def test_a_corpus_shorter_than_the_context_is_refused_before_a_session(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be, that is the question.\n")
    root = tmp_path / "root"
    result = invoke("run", *TINY_FLAGS, "--context", "64", "--root", root, "--data", short)
    assert "context" in one_error_line(result)
    assert not root.exists()


def test_sessions_lists_an_unreadable_session_as_a_note(tmp_path, study):
    Session.create(tmp_path, study, name="ok").close()
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "session.json").mkdir()  # a folder where a file should be
    found = {s.name: s for s in list_sessions(tmp_path)}
    assert found["weird"].error and found["ok"].total == 2
    assert invoke("sessions", "--root", tmp_path).exit_code == 0
