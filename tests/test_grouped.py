"""Grouped training is the engine's mathematics and events, run by run (tiny models, CPU)."""

from __future__ import annotations

import math
import threading
import warnings
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
    "scaled-s2": BASE.replace(variant="scaled", seed=2, lr=1e-3),
    "ln-small-s2": BASE.replace(variant="layernorm-small", seed=2, grad_clip=1.0),
    "rms-small-s2": BASE.replace(variant="rmsnorm-small", seed=2, weight_decay=0.1),
}
METRICS = (
    "val_loss", "val_bpc", "val_ppl", "accuracy", "macro_accuracy", "embed_norm",
    "final_grad_norm", "best_val_loss", "max_logit", "max_attn_logit", "max_grad_norm",
    "loss_spikes", "grad_spikes", "diverged_step",
)  # fmt: skip
STEP_VALUES = ("loss", "grad_norm", "embed_norm", "max_logit")
EVAL_VALUES = ("val_loss", "val_bpc", "val_ppl", "max_logit", "max_attn_logit")


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
    """Equal to ``rel``; None only with None, NaN only with NaN (a diverged run's last step)."""
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or (math.isfinite(a) and abs(a - b) <= rel * max(abs(a), abs(b), 1e-12))


def assert_close_in_norm(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    """``a`` is ``b`` to ``rel`` of ``b``'s L2 norm (entries near zero need no more)."""
    assert a.shape == b.shape
    assert torch.linalg.vector_norm(a - b) <= rel * torch.linalg.vector_norm(b), (
        f"{torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b):.2e} > {rel}"
    )


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
        assert_same_curves(grp_ev, seq_ev, rid)


def assert_same_curves(
    rec, reference, rid, rel=1e-4, step_rel=None, eval_rel=None, upto: int | None = None
):
    """Per-step and per-evaluation values of ``rid`` agree (``*_rel``: {name: tolerance}),
    up to step ``upto`` if given."""
    step_rel, eval_rel = step_rel or {}, eval_rel or {}
    steps = zip(rec.of(rid, StepLogged), reference.of(rid, StepLogged), strict=True)
    for a, b in steps:
        if upto is not None and a.step > upto:
            break
        assert a.tokens == b.tokens and a.lr == b.lr
        for name in STEP_VALUES:
            tol = step_rel.get(name, rel)
            assert close(getattr(a, name), getattr(b, name), tol), (rid, a.step, name)
    for a, b in zip(rec.of(rid, EvalLogged), reference.of(rid, EvalLogged), strict=True):
        if upto is not None and a.step > upto:
            break
        assert a.tokens == b.tokens
        for name in EVAL_VALUES:
            tol = eval_rel.get(name, rel)
            assert close(getattr(a, name), getattr(b, name), tol), (rid, a.step, name)


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
            # fp32 round-off of two summation orders, grown over 24 steps: measured up to
            # 1.7e-4 of a moment's norm (exp_avg_sq's entries span 1e-12 to 1e-4, so no
            # entry-wise tolerance fits them all)
            for moment in ("exp_avg", "exp_avg_sq"):
                assert_close_in_norm(oa["state"][i][moment], st[moment], rel=1e-3)
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
    assert results[0].diverged_step == alone.diverged_step == alone.step
    assert results[0].error == alone.error
    assert close(results[0].max_grad_norm, alone.max_grad_norm)
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


# After 52 quiet steps the learning rate climbs from 3e-3 towards min_lr (a cosine "decay" to a
# larger value): at min_lr 3 the loss and gradient norm spike on most of the last 10 steps; at
# 300 the run diverges at step 57. Both are far from the spike thresholds, so both engines count
# the same spikes and diverge at the same step, although after step 52 the runs are chaotic
# (their values part ways): values are compared up to there, to 1e-3 (3e-3 for gradient norms)
# as 52 steps at lr 3e-3 let round-off grow (measured: losses 6e-6, gradient norms 9e-4 where
# they swing, at steps 46-49).
SPIKY = BASE.replace(
    iters=64, eval_interval=32, checkpoint_interval=0, lr=3e-3, schedule="cosine",
    warmup_iters=52, min_lr=3.0,
)  # fmt: skip
CALM_UNTIL = 52
SPIKE_SPECS = {
    "spiky-none": SPIKY.replace(variant="none"),
    "spiky-rms-small": SPIKY.replace(variant="rmsnorm-small", seed=1),
    "spiky-scaled": SPIKY.replace(variant="scaled", seed=2),
    "blowup-ln": SPIKY.replace(variant="layernorm", min_lr=300.0),
    "blowup-ln-small": SPIKY.replace(variant="layernorm-small", seed=1, min_lr=300.0),
}


def test_spikes_and_divergence_match_sequential(corpus):
    rec_seq, rec_grp = Recorder(), Recorder()
    seq = {rid: train(spec, corpus, rec_seq, run_id=rid) for rid, spec in SPIKE_SPECS.items()}
    grp = train_group([GroupJob(rid, spec) for rid, spec in SPIKE_SPECS.items()], corpus, rec_grp)
    for result in grp:
        rid, reference = result.run_id, seq[result.run_id]
        for name in ("status", "step", "diverged_step", "loss_spikes", "grad_spikes", "error"):
            assert getattr(result, name) == getattr(reference, name), (rid, name)
        assert result.loss_spikes >= 3 and result.grad_spikes >= 2  # the test has teeth
        if rid.startswith("blowup"):
            assert result.status == "diverged" and result.diverged_step == 57
        else:
            assert result.status == "finished" and result.diverged_step is None
        assert rec_grp.outline(rid) == rec_seq.outline(rid)
        assert_same_curves(
            rec_grp, rec_seq, rid, rel=1e-3, step_rel={"grad_norm": 3e-3}, upto=CALM_UNTIL
        )


PRECISION_IDS = ("none-s1", "ln-s0", "rms-s1", "scaled-s2", "rms-small-s2")


def test_tf32_on_the_cpu_is_fp32_in_both_engines(corpus, sequential, grouped):
    """TF32 is a CUDA matmul mode (core.device.apply_precision sets it for CUDA only): on the
    CPU a "tf32" run is the fp32 run, bit for bit, in either engine, and says "tf32"."""
    (seq, seq_ev), (grp, grp_ev) = sequential, grouped
    specs = {rid: SPECS[rid].replace(precision="tf32") for rid in PRECISION_IDS}
    rec_seq, rec_grp = Recorder(), Recorder()
    seq32 = {rid: train(spec, corpus, rec_seq, run_id=rid) for rid, spec in specs.items()}
    grp32 = train_group([GroupJob(rid, spec) for rid, spec in specs.items()], corpus, rec_grp)
    for result in grp32:
        rid = result.run_id
        assert result.precision == seq32[rid].precision == "tf32"
        assert_same_run(result, grp[rid], rel=0.0)
        assert_same_run(seq32[rid], seq[rid], rel=0.0)
        assert_same_curves(rec_grp, grp_ev, rid, rel=0.0)
        assert_same_curves(rec_seq, seq_ev, rid, rel=0.0)


def test_group_matches_sequential_in_bf16_autocast(corpus, sequential):
    """bf16 autocast on the CPU, grouped against sequential.

    bf16 keeps 8 significant bits: one rounding is up to 2^-9 = 2e-3 relative. The two engines
    multiply the same bf16 operands in different orders (batched vs one run's matmuls), so a
    value read off one bf16 matmul output may differ by a few bf16 steps: maxima of logits and
    attention scores, and gradient norms (one batch's sums of bf16 products) get 3e-2 (about 8
    steps; measured up to 1.6e-2). Averages over many tokens average the roundings out: losses
    and embedding norms (taken before any matmul) keep 1e-4 (measured up to 3e-5). Accuracy
    flips where two logits lie within one bf16 step: 1e-2 (measured up to 1e-3).
    """
    seq32, _ = sequential
    specs = {rid: SPECS[rid].replace(precision="bf16") for rid in PRECISION_IDS}
    rec_seq, rec_grp = Recorder(), Recorder()
    seq = {rid: train(spec, corpus, rec_seq, run_id=rid) for rid, spec in specs.items()}
    grp = train_group([GroupJob(rid, spec) for rid, spec in specs.items()], corpus, rec_grp)
    loose = {"max_logit": 3e-2, "max_attn_logit": 3e-2, "grad_norm": 3e-2}
    for result in grp:
        rid, reference = result.run_id, seq[result.run_id]
        assert result.precision == reference.precision == "bf16"
        assert result.val_loss != seq32[rid].val_loss  # autocast did change the arithmetic
        assert result.status == reference.status == "finished" and result.step == reference.step
        for name in METRICS:
            tol = {"accuracy": 1e-2, "macro_accuracy": 1e-2, "final_grad_norm": 3e-2,
                   "max_grad_norm": 3e-2, **loose}.get(name, 1e-4)  # fmt: skip
            a, b = getattr(result, name), getattr(reference, name)
            assert close(a, b, tol), f"{rid} {name}: {a} vs {b} (tolerance {tol})"
        assert rec_grp.outline(rid) == rec_seq.outline(rid)
        assert_same_curves(rec_grp, rec_seq, rid, step_rel=loose, eval_rel=loose)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("graphs", ["1", "0"])
def test_group_on_cuda_matches_the_engine_on_cuda(corpus, monkeypatch, graphs):
    """fp32 on the GPU: the CUDA graph (or eager) grouped step against the engine there."""
    monkeypatch.setenv("LABTUI_CUDA_GRAPHS", graphs)
    specs = {
        rid: SPECS[rid].replace(device="cuda", iters=40)
        for rid in ("none-s0", "ln-s0", "rms-s1", "scaled-s2", "ln-small-s2")
    }
    seq = {rid: train(spec, corpus, run_id=rid) for rid, spec in specs.items()}
    rec = Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = train_group([(rid, spec, None) for rid, spec in specs.items()], corpus, rec)
    fallbacks = [str(w.message) for w in caught if "CUDA graph" in str(w.message)]
    assert not fallbacks  # with graphs on, the step was captured and kept
    for result in results:
        assert_same_run(result, seq[result.run_id], rel=1e-3)
        assert rec.outline(result.run_id)[-1] == ("RunFinished", "finished")
        assert [e.step for e in rec.of(result.run_id, StepLogged)] == list(range(1, 41))
