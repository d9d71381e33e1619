"""The training engine: events, determinism, resume, cancellation, divergence."""

from __future__ import annotations

import copy
import math
import threading

import pytest
import torch

from core.engine import build_model, derive_seed, train
from core.events import (
    CheckpointSaved,
    EvalLogged,
    RunFinished,
    RunStarted,
    SinkError,
    StepLogged,
)
from core.spec import VARIANTS, RunSpec
from data.batches import sample_batch

METRICS = (
    "val_loss",
    "val_bpc",
    "val_ppl",
    "best_val_loss",
    "final_grad_norm",
    "accuracy",
    "macro_accuracy",
    "embed_norm",
    "max_logit",
    "max_attn_logit",
    "max_grad_norm",
    "loss_spikes",
    "grad_spikes",
)


def collect(spec, corpus, **kw):
    events = []
    result = train(spec, corpus, events.append, **kw)
    return result, events


def test_events_and_result_of_a_finished_run(corpus, tiny_spec):
    result, events = collect(tiny_spec, corpus, run_id="r0")
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished
    steps = [e for e in events if isinstance(e, StepLogged)]
    assert [e.step for e in steps] == list(range(1, 21))
    assert all(e.run_id == "r0" and math.isfinite(e.loss) and e.grad_norm > 0 for e in steps)
    assert [e.step for e in events if isinstance(e, EvalLogged)] == [10, 20]
    ckpts = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [(c.step, c.final) for c in ckpts] == [(10, False), (20, True)]
    assert result.status == "finished" and result.step == 20
    assert result.tokens == tiny_spec.tokens == 20 * 8 * 32
    assert result.val_ppl == pytest.approx(math.exp(result.val_loss))
    assert result.val_bpc == pytest.approx(result.val_loss / math.log(2))
    assert 0 < result.macro_accuracy <= 1 and 0 < result.accuracy < 1
    assert result.final_grad_norm == steps[-1].grad_norm
    assert result.best_val_loss <= result.val_loss


def test_loss_falls_over_50_steps_on_the_real_corpus(corpus, tiny_spec):
    spec = tiny_spec.replace(iters=50, lr=3e-3, eval_interval=0)
    result, events = collect(spec, corpus)
    losses = [e.loss for e in events if isinstance(e, StepLogged)]
    assert sum(losses[-10:]) / 10 < sum(losses[:5]) / 5 - 0.5
    assert result.val_loss < math.log(65) - 0.5


def test_same_spec_gives_identical_metrics(corpus, tiny_spec):
    a, _ = collect(tiny_spec, corpus)
    b, _ = collect(tiny_spec, corpus)
    for name in METRICS:
        assert getattr(a, name) == getattr(b, name), name
    c, _ = collect(tiny_spec.replace(seed=1), corpus)
    assert c.val_loss != a.val_loss


def test_variants_see_identical_batches(corpus, tiny_spec):
    """Paired design: every variant trains on the same windows, the seed's batch stream.

    Each step's reported loss is recomputed from the weights before the step (the previous
    step's checkpoint) on the seed's window for that step; it matches no other window.
    """
    base = tiny_spec.replace(iters=3, eval_interval=0, checkpoint_interval=1)
    stream = torch.Generator().manual_seed(derive_seed(base.seed, "batches"))
    tokens = corpus.tensor("train", "cpu")
    windows = [sample_batch(tokens, base.batch_size, base.block_size, stream) for _ in range(3)]
    streams = []
    for variant in VARIANTS:
        spec = base.replace(variant=variant)
        _, events = collect(spec, corpus)
        losses = [e.loss for e in events if isinstance(e, StepLogged)]
        states = [e.state for e in events if isinstance(e, CheckpointSaved)]
        streams.append([s["rng_batches"] for s in states])
        for k in range(3):
            model = build_model(spec, corpus.vocab_size)
            if k:
                model.load_state_dict(states[k - 1]["model"])
            with torch.no_grad():
                trained = [model(x, y)[1].item() for x, y in windows]
            assert trained[k] == pytest.approx(losses[k], rel=1e-6), (variant, k)
            others = trained[:k] + trained[k + 1 :]
            assert all(o != pytest.approx(losses[k], rel=1e-6) for o in others), (variant, k)
    for states in streams[1:]:  # and each carries the same batch stream on
        assert all(torch.equal(a, b) for a, b in zip(states, streams[0], strict=True))


def test_resuming_leaves_the_checkpoint_as_it_was(corpus, tiny_spec):
    """The optimizer must not train on the caller's moment tensors: the same checkpoint
    resumed twice gives the same run."""
    checkpoints = []
    train(tiny_spec, corpus, lambda e: isinstance(e, CheckpointSaved) and checkpoints.append(e))
    state = checkpoints[0].state
    kept = copy.deepcopy(state)
    first = train(tiny_spec, corpus, resume=state)
    assert_equal_nested(state, kept)
    second = train(tiny_spec, corpus, resume=state)
    assert first.val_loss == second.val_loss


def assert_equal_nested(a, b) -> None:
    if isinstance(b, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(b, dict):
        assert a.keys() == b.keys()
        for key in b:
            assert_equal_nested(a[key], b[key])
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal_nested(x, y)
    else:
        assert a == b


def test_resume_from_checkpoint_ends_identical(corpus, tiny_spec):
    full, _ = collect(tiny_spec, corpus)
    stop = threading.Event()
    events = []

    def on_event(event):
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 13:
            stop.set()

    cancelled = train(tiny_spec, corpus, on_event, stop)
    assert cancelled.status == "cancelled" and cancelled.step == 13
    state = [e for e in events if isinstance(e, CheckpointSaved)][-1].state
    assert state["step"] == 13
    resumed, resumed_events = collect(tiny_spec, corpus, resume=state)
    assert resumed_events[0].start_step == 13
    assert resumed_events[1].step == 14
    for name in METRICS:
        assert getattr(resumed, name) == getattr(full, name), name


def test_cancel_takes_effect_within_one_step(corpus, tiny_spec):
    stop = threading.Event()
    steps = []

    def on_event(event):
        if isinstance(event, StepLogged):
            steps.append(event.step)
            if event.step == 5:
                stop.set()

    result = train(tiny_spec.replace(iters=1000), corpus, on_event, stop)
    assert result.status == "cancelled"
    assert steps[-1] == 5 and result.step == 5


def test_absurd_learning_rate_diverges_without_raising(corpus, tiny_spec):
    spec = tiny_spec.replace(lr=1e6, iters=200, eval_interval=0)
    result, events = collect(spec, corpus)
    assert result.status == "diverged"
    assert result.step < 200
    assert "step" in result.error
    assert isinstance(events[-1], RunFinished)


def test_a_failing_run_reports_failed_with_traceback(corpus, tiny_spec):
    checkpoints = []
    train(tiny_spec, corpus, lambda e: isinstance(e, CheckpointSaved) and checkpoints.append(e))
    state = dict(checkpoints[0].state)
    state["model"] = {k: v[:1] for k, v in state["model"].items()}  # wrong shapes: cannot load
    events = []
    result = train(tiny_spec, corpus, events.append, resume=state)
    assert result.status == "failed" and "loading state_dict" in result.error
    assert result.n_params == build_model(tiny_spec, corpus.vocab_size).n_params()
    assert isinstance(events[-1], RunFinished) and "Traceback" in events[-1].traceback


def test_a_failing_event_sink_is_not_the_runs_failure(corpus, tiny_spec):
    """A sink that raises (a full disk under the session) stops training with SinkError; the
    sink is not called again to record a "failed" run."""
    calls = []

    def full_disk(event):
        calls.append(event)
        if isinstance(event, StepLogged) and event.step == 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(SinkError) as caught:
        train(tiny_spec, corpus, full_disk)
    assert isinstance(caught.value.__cause__, OSError)
    assert "No space left on device" in str(caught.value)
    assert isinstance(calls[-1], StepLogged) and calls[-1].step == 2
    assert not any(isinstance(e, RunFinished) for e in calls)


def test_cosine_schedule_with_warmup():
    spec = RunSpec(schedule="cosine", warmup_iters=10, iters=110, lr=1e-3, min_lr=1e-4)
    assert spec.lr_at(0) == pytest.approx(1e-4)
    assert spec.lr_at(9) == pytest.approx(1e-3)
    assert spec.lr_at(60) == pytest.approx(5.5e-4)
    assert spec.lr_at(110) == pytest.approx(1e-4)
    assert RunSpec().lr_at(299) == 3e-4
