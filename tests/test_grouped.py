"""Grouped training is the engine's mathematics and events, run by run (tiny models, CPU)."""

from __future__ import annotations

import math
import threading
from collections import defaultdict

import pytest
import torch

from core.engine import train
from core.events import CheckpointSaved, EvalLogged, RunFinished, RunStarted, StepLogged
from core.grouped import GroupJob, can_group, default_grouping, group_key, train_group
from core.spec import RunSpec

BASE = RunSpec(
    n_layer=2, n_embd=32, n_head=4, block_size=32, batch_size=8, iters=24,
    eval_interval=10, checkpoint_interval=10, device="cpu",
)  # fmt: skip
SPECS = {
    "none-s0": BASE.replace(variant="none", seed=0),
    "ln-s0": BASE.replace(variant="layernorm", seed=0, lr=1e-3),
    "rms-s0": BASE.replace(variant="rmsnorm", seed=0),
    "none-s1": BASE.replace(variant="none", seed=1, lr=1e-3),
    "ln-s1": BASE.replace(variant="layernorm", seed=1),
    "rms-s1": BASE.replace(
        variant="rmsnorm",
        seed=1,
        grad_clip=0.5,
        schedule="cosine",
        warmup_iters=5,
        decay_position_embedding=True,
        beta2=0.99,
        weight_decay=0.1,
    ),
}
METRICS = (
    "val_loss", "val_bpc", "val_ppl", "accuracy", "macro_accuracy", "embed_norm",
    "final_grad_norm", "best_val_loss",
)  # fmt: skip


class Recorder:
    """Events by run id."""

    def __init__(self):
        self.events = defaultdict(list)

    def __call__(self, event):
        self.events[event.run_id].append(event)

    def of(self, run_id, kind):
        return [e for e in self.events[run_id] if isinstance(e, kind)]

    def outline(self, run_id):
        """What happened to the run, without timings."""
        out = []
        for e in self.events[run_id]:
            detail = {
                RunStarted: lambda e: e.start_step,
                StepLogged: lambda e: e.step,
                EvalLogged: lambda e: e.step,
                CheckpointSaved: lambda e: (e.step, e.final),
                RunFinished: lambda e: e.result.status,
            }[type(e)](e)
            out.append((type(e).__name__, detail))
        return out


def close(a, b, rel=1e-4):
    return a == b or (math.isfinite(a) and abs(a - b) <= rel * max(abs(a), abs(b), 1e-12))


def assert_same_run(result, reference, rel=1e-4):
    assert result.status == reference.status and result.step == reference.step
    for name in METRICS:
        a, b = getattr(result, name), getattr(reference, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert close(a, b, rel), f"{result.run_id} {name}: {a} vs {b}"


@pytest.fixture(scope="module")
def sequential(corpus):
    rec = Recorder()
    results = {rid: train(spec, corpus, rec, run_id=rid) for rid, spec in SPECS.items()}
    return results, rec


@pytest.fixture(scope="module")
def grouped(corpus):
    rec = Recorder()
    results = train_group([GroupJob(rid, spec) for rid, spec in SPECS.items()], corpus, rec)
    return {r.run_id: r for r in results}, rec


def test_group_matches_sequential_run_by_run(sequential, grouped):
    (seq, seq_ev), (grp, grp_ev) = sequential, grouped
    assert list(grp) == list(SPECS)
    for rid in SPECS:
        assert grp[rid].status == "finished"
        assert_same_run(grp[rid], seq[rid])
        assert grp_ev.outline(rid) == seq_ev.outline(rid)
        for a, b in zip(grp_ev.of(rid, StepLogged), seq_ev.of(rid, StepLogged), strict=True):
            assert a.tokens == b.tokens and a.lr == b.lr
            for name in ("loss", "grad_norm", "embed_norm"):
                assert close(getattr(a, name), getattr(b, name)), (rid, a.step, name)
        for a, b in zip(grp_ev.of(rid, EvalLogged), seq_ev.of(rid, EvalLogged), strict=True):
            assert close(a.val_loss, b.val_loss) and a.tokens == b.tokens


def test_group_checkpoints_have_the_engine_format(sequential, grouped):
    (_, seq_ev), (_, grp_ev) = sequential, grouped
    for rid in ("none-s0", "ln-s1", "rms-s1"):
        a = grp_ev.of(rid, CheckpointSaved)[-1].state
        b = seq_ev.of(rid, CheckpointSaved)[-1].state
        assert set(a) == set(b)
        assert list(a["model"]) == list(b["model"])
        for key, tensor in b["model"].items():
            assert a["model"][key].shape == tensor.shape
            torch.testing.assert_close(a["model"][key], tensor, rtol=1e-3, atol=1e-5)
        oa, ob = a["optimizer"], b["optimizer"]
        assert oa["param_groups"] == ob["param_groups"]
        assert list(oa["state"]) == list(ob["state"])
        for i, st in ob["state"].items():
            assert set(oa["state"][i]) == set(st)
            assert oa["state"][i]["step"] == st["step"]
            torch.testing.assert_close(
                oa["state"][i]["exp_avg"], st["exp_avg"], rtol=1e-3, atol=1e-6
            )
        assert torch.equal(a["rng_batches"], b["rng_batches"])
        assert torch.equal(a["rng_torch"], b["rng_torch"])
        assert a["step"] == b["step"] and a["spec"] == b["spec"]


def test_cancelling_one_run_leaves_the_others_and_resumes_sequentially(corpus, sequential):
    seq, _ = sequential
    ids = ["none-s0", "ln-s0", "rms-s0"]
    stops = {rid: threading.Event() for rid in ids}
    rec = Recorder()

    def on_event(event):
        rec(event)
        if isinstance(event, StepLogged) and event.run_id == "ln-s0" and event.step == 7:
            stops["ln-s0"].set()

    results = train_group([(rid, SPECS[rid], None) for rid in ids], corpus, on_event, stops)
    by_id = {r.run_id: r for r in results}
    assert by_id["ln-s0"].status == "cancelled" and by_id["ln-s0"].step == 7
    assert rec.outline("ln-s0")[-2:] == [
        ("CheckpointSaved", (7, False)),
        ("RunFinished", "cancelled"),
    ]
    for rid in ("none-s0", "rms-s0"):
        assert_same_run(by_id[rid], seq[rid])

    state = rec.of("ln-s0", CheckpointSaved)[-1].state
    resumed = train(SPECS["ln-s0"], corpus, run_id="ln-s0", resume=state)
    assert_same_run(resumed, seq["ln-s0"])


def test_a_sequential_checkpoint_resumes_in_a_group(corpus, sequential):
    seq, _ = sequential
    stop = threading.Event()
    states = []

    def on_event(event):
        if isinstance(event, StepLogged) and event.step == 13:
            stop.set()
        if isinstance(event, CheckpointSaved):
            states.append(event.state)

    assert train(SPECS["rms-s1"], corpus, on_event, stop, run_id="rms-s1").status == "cancelled"
    rec = Recorder()
    jobs = [GroupJob("rms-s1", SPECS["rms-s1"], states[-1]), GroupJob("ln-s1", SPECS["ln-s1"])]
    results = train_group(jobs, corpus, rec)  # resumed at step 13: its own group
    assert rec.of("rms-s1", RunStarted)[0].start_step == 13
    assert rec.of("rms-s1", StepLogged)[0].step == 14
    assert_same_run(results[0], seq["rms-s1"])
    assert_same_run(results[1], seq["ln-s1"])


def test_a_diverging_run_ends_alone(corpus, sequential):
    seq, _ = sequential
    wild = BASE.replace(variant="layernorm", seed=3, lr=1e30)
    alone = train(wild, corpus, run_id="wild")
    assert alone.status == "diverged"
    rec = Recorder()
    results = train_group([("wild", wild, None), ("none-s0", SPECS["none-s0"], None)], corpus, rec)
    assert results[0].status == "diverged" and results[0].step == alone.step
    assert results[0].error == alone.error
    assert rec.outline("wild")[-1] == ("RunFinished", "diverged")
    assert_same_run(results[1], seq["none-s0"])


def test_runs_of_different_shapes_train_in_separate_groups(corpus):
    a = BASE.replace(iters=4, eval_interval=0)
    b = a.replace(n_layer=1, variant="rmsnorm")
    results = train_group([("a", a, None), ("b", b, None)], corpus)
    assert [r.run_id for r in results] == ["a", "b"]
    assert_same_run(results[0], train(a, corpus, run_id="a"))
    assert_same_run(results[1], train(b, corpus, run_id="b"))
    assert results[1].n_params < results[0].n_params


def test_can_group():
    specs = list(SPECS.values())
    assert can_group(specs)
    assert not can_group([BASE, BASE.replace(n_embd=64)])
    assert not can_group([BASE, BASE.replace(iters=25)])
    assert not can_group([BASE, BASE.replace(precision="bf16")])
    assert not can_group([BASE.replace(dropout=0.1)])
    assert group_key(BASE) == group_key(BASE.replace(seed=9, lr=0.1, variant="rmsnorm"))
    assert default_grouping("cpu") is False


def test_a_bad_checkpoint_fails_only_its_run(corpus):
    spec = BASE.replace(iters=3, eval_interval=0)
    rec = Recorder()
    bad = {"spec": spec.replace(seed=5).to_dict()}
    results = train_group([("bad", spec, bad), ("good", spec, None)], corpus, rec)
    assert results[0].status == "failed" and "different run spec" in results[0].error
    assert rec.of("bad", RunFinished)[0].traceback
    assert results[1].status == "finished"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("graphs", ["1", "0"])
def test_group_on_cuda_matches_the_engine_on_cuda(corpus, monkeypatch, graphs):
    """fp32 on the GPU: the CUDA graph (or eager) grouped step against the engine there."""
    monkeypatch.setenv("LABTUI_CUDA_GRAPHS", graphs)
    specs = {
        rid: SPECS[rid].replace(device="cuda", iters=40) for rid in ("none-s0", "ln-s0", "rms-s1")
    }
    seq = {rid: train(spec, corpus, run_id=rid) for rid, spec in specs.items()}
    rec = Recorder()
    results = train_group([(rid, spec, None) for rid, spec in specs.items()], corpus, rec)
    for result in results:
        assert_same_run(result, seq[result.run_id], rel=1e-3)
        assert rec.outline(result.run_id)[-1] == ("RunFinished", "finished")
        assert [e.step for e in rec.of(result.run_id, StepLogged)] == list(range(1, 41))
