"""The study runner with real tiny training: queue, write-then-forward, cancel, resume, failures."""

from __future__ import annotations

import pytest
import torch

from core.events import CheckpointSaved, RunFinished, RunStarted, StepLogged
from core.spec import Study
from sessions import atomic
from sessions.runner import StudyRunner
from sessions.store import Session, SessionError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread, above all on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SCIENCE = ["val_loss", "val_bpc", "val_ppl", "best_val_loss", "final_grad_norm", "accuracy",
           "macro_accuracy", "embed_norm", "n_params", "tokens"]  # fmt: skip


@pytest.fixture
def spec(tiny_spec):
    return tiny_spec.replace(iters=16, eval_interval=0, checkpoint_interval=5)


def make_session(root, spec, variants=("none", "rmsnorm"), seeds=(0,)):
    return Session.create(root, Study(base=spec, grid={"variant": variants, "seed": seeds}))


def test_runs_the_queue_writing_before_forwarding(tmp_path, corpus, spec):
    """Every event is on disk when the watcher sees it; a pending run can be taken out."""
    session = make_session(tmp_path, spec, seeds=(0, 1))  # 4 runs
    seen = []

    def watch(event):
        seen.append(event)
        if isinstance(event, StepLogged):
            last = atomic.last_line(session.run_dir(event.run_id) / "metrics.csv")
            assert int(last.split(",")[0]) == event.step
            if event.step == 3 and event.run_id == "r000-none-s0":
                assert runner.active == {"r000-none-s0"}
                runner.cancel("r001-none-s1")  # still queued: un-queued
        if isinstance(event, CheckpointSaved) and not event.final:
            assert (session.run_dir(event.run_id) / "resume.pt").exists()

    runner = StudyRunner(session, corpus, on_event=watch)
    runner.run(["r000-none-s0", "r001-none-s1", "r003-rmsnorm-s1"])
    status = {r.run_id: r.status for r in session.runs()}
    assert status == {
        "r000-none-s0": "finished",
        "r001-none-s1": "pending",
        "r002-rmsnorm-s0": "pending",
        "r003-rmsnorm-s1": "finished",
    }
    assert next(type(e) for e in seen if e.run_id == "r000-none-s0") is RunStarted
    assert sum(isinstance(e, RunFinished) for e in seen) == 2
    assert runner.active == set()
    for run_id in ("r000-none-s0", "r003-rmsnorm-s1"):
        folder = session.run_dir(run_id)
        assert not (folder / "resume.pt").exists()
        state = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert state["step"] == 16
        assert session.metrics(run_id)["step"].tolist() == list(range(1, 17))
    results = session.results()
    assert results["run_id"].tolist() == ["r000-none-s0", "r003-rmsnorm-s1"]
    assert (results["iters"] == 16).all() and (results["tokens"] == 16 * 8 * 32).all()
    assert results["val_ppl"].notna().all()


def test_cancel_then_resume_equals_an_uninterrupted_run(tmp_path, corpus, spec):
    reference = make_session(tmp_path / "a", spec, variants=("rmsnorm",))
    StudyRunner(reference, corpus).run()

    session = make_session(tmp_path / "b", spec, variants=("rmsnorm", "none"))

    def stop_at_7(event):
        if isinstance(event, StepLogged) and event.step == 7:
            runner.cancel_all()

    runner = StudyRunner(session, corpus, on_event=stop_at_7)
    runner.run()
    first, second = session.runs()
    assert (first.status, first.step, second.status) == ("cancelled", 7, "pending")
    assert session.load_checkpoint(first.run_id, final=False)["step"] == 7

    runner.on_event = None
    assert runner.todo() == [first.run_id, second.run_id]
    runner.run([first.run_id])
    want, got = reference.results().iloc[0], session.results().iloc[0]
    assert got["status"] == "finished"
    assert got[SCIENCE].tolist() == want[SCIENCE].tolist()
    columns = ["step", "loss", "grad_norm", "embed_norm", "lr"]
    assert (
        session.metrics(first.run_id)[columns].values.tolist()
        == reference.metrics("r000-rmsnorm-s0")[columns].values.tolist()
    )


def test_a_failing_run_is_recorded_and_the_queue_goes_on(tmp_path, corpus, spec):
    session = make_session(tmp_path, spec.replace(iters=6))
    broken = session.run_dir("r000-none-s0")
    broken.mkdir()  # run folders are made when a run starts: this one has
    (broken / "metrics.csv").write_text("step,tokens\n1,256\n")
    (broken / "resume.pt").write_bytes(b"not a checkpoint")  # interrupted, unreadable state
    cuda = session.add_runs([spec.replace(device="cuda:7")])[0]  # fails inside the engine
    finished = []
    StudyRunner(session, corpus, on_event=finished.append).run()
    status = {r.run_id: r for r in session.runs()}
    assert status["r000-none-s0"].status == "failed"
    assert "Traceback" in status["r000-none-s0"].error
    assert "resume.pt cannot be loaded" in status["r000-none-s0"].error
    assert (broken / "resume.pt.broken").exists()  # put aside: the retry starts over
    assert status["r001-rmsnorm-s0"].status == "finished"
    assert status[cuda].status == "failed" and "CUDA" in status[cuda].error
    assert (session.run_dir(cuda) / "error.txt").exists()

    runner = StudyRunner(session, corpus)
    assert runner.todo() == []
    assert runner.todo(retry_failed=True) == ["r000-none-s0", cuda]
    runner.run(["r000-none-s0"], retry_failed=True)  # starts over from scratch
    assert session.run("r000-none-s0").status == "finished"
    assert session.metrics("r000-none-s0")["step"].tolist() == list(range(1, 7))


def test_unknown_runs_and_executors_are_refused(tmp_path, corpus, spec):
    session = make_session(tmp_path, spec)
    ray = StudyRunner(session, corpus, executor="ray").executor  # Ray starts on run(), not here
    assert type(ray).__name__ == "RayExecutor"
    with pytest.raises(SessionError, match="unknown executor"):
        StudyRunner(session, corpus, executor="slurm")
    with pytest.raises(SessionError, match="no run 'r999'"):
        StudyRunner(session, corpus).run(["r999"])
