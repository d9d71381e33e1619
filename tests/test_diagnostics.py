"""The stability diagnostics against direct computations on a tiny model (issue 12).

Each value the engine reports is recomputed here the plain way: per step from the weights
before the step (the previous step's checkpoint) and the seed's window for it; per evaluation
from the checkpoint at that step, over the whole validation split, with the attention scores
q·k/sqrt(d) formed explicitly from each layer's q and k under a causal mask.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from core.engine import build_model, derive_seed, train
from core.events import CheckpointSaved, EvalLogged, StepLogged
from core.metrics import (
    EVAL_BATCH_SIZE,
    GRAD_SPIKE_FACTOR,
    LOSS_SPIKE_FACTOR,
    SPIKE_WINDOW,
    spike_steps,
    stability,
)
from core.model import TREATMENTS
from core.spec import RunSpec
from data.batches import eval_batches, sample_batch

TINY = RunSpec(
    n_layer=2, n_embd=32, n_head=4, block_size=32, batch_size=8, iters=4,
    eval_interval=2, checkpoint_interval=1, device="cpu",
)  # fmt: skip


def run(spec, corpus):
    events = []
    result = train(spec, corpus, events.append)
    return result, events


def model_at(spec, corpus, state):
    """The run's model with a checkpoint's weights (None: as initialized)."""
    model = build_model(spec, corpus.vocab_size)
    if state is not None:
        model.load_state_dict(state["model"])
    return model


def seed_windows(spec, corpus, n):
    """The first ``n`` training windows of the seed's batch stream."""
    stream = torch.Generator().manual_seed(derive_seed(spec.seed, "batches"))
    tokens = corpus.tensor("train", "cpu")
    return [sample_batch(tokens, spec.batch_size, spec.block_size, stream) for _ in range(n)]


def first_block_input(model, x):
    """The embedding sum after the variant's treatment, written out by hand."""
    T, C = x.size(1), model.config.n_embd
    e = model.wte.weight[x] + model.wpe.weight[:T]
    treatment = TREATMENTS[model.config.embed_norm]
    if treatment.norm == "layernorm":
        centred = e - e.mean(-1, keepdim=True)
        e = centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5)
        return e * model.embed_norm.weight + model.embed_norm.bias
    if treatment.norm == "rmsnorm":
        e = e / torch.sqrt(e.pow(2).mean(-1, keepdim=True) + 1e-5)
        return e * model.embed_norm.weight
    assert C == e.size(-1)
    return e * treatment.scale


@pytest.mark.parametrize("variant", ["none", "layernorm-small", "scaled"])
def test_step_diagnostics_match_a_direct_computation(corpus, variant):
    spec = TINY.replace(variant=variant)
    _, events = run(spec, corpus)
    steps = [e for e in events if isinstance(e, StepLogged)]
    before = [None] + [e.state for e in events if isinstance(e, CheckpointSaved)]
    for k, (x, y) in enumerate(seed_windows(spec, corpus, spec.iters)):
        model = model_at(spec, corpus, before[k])
        logits, loss = model(x, y)
        loss.backward()
        grads = [p.grad.double() for p in model.parameters()]
        grad_norm = math.sqrt(sum(g.pow(2).sum().item() for g in grads))
        embed = first_block_input(model, x).detach().double().norm(dim=-1).mean().item()
        event = steps[k]
        assert event.step == k + 1
        assert event.loss == pytest.approx(loss.item(), rel=1e-6)
        assert event.max_logit == pytest.approx(logits.abs().max().item(), rel=1e-6)
        assert event.grad_norm == pytest.approx(grad_norm, rel=1e-5)
        assert event.embed_norm == pytest.approx(embed, rel=1e-5)


def direct_eval(model, tokens, block_size):
    """max |logit| over the whole split and max causal q·k/sqrt(hs) over its first
    EVAL_BATCH_SIZE windows (core.metrics' definitions), the slow way."""
    qkv = []
    hooks = [b.attn.c_attn.register_forward_hook(lambda m, i, o: qkv.append(o)) for b in
             model.blocks]  # fmt: skip
    max_logit, max_score = 0.0, -math.inf
    nh, C = model.config.n_head, model.config.n_embd
    hs = C // nh
    try:
        with torch.no_grad():
            for i, (x, _) in enumerate(eval_batches(tokens, block_size, 16)):
                qkv.clear()
                logits, _ = model(x)
                max_logit = max(max_logit, logits.abs().max().item())
                if i * 16 >= EVAL_BATCH_SIZE:
                    continue  # attention scores: the first EVAL_BATCH_SIZE windows only
                B, T = x.shape
                allowed = torch.ones(T, T).tril().bool()  # query i may look at keys j <= i
                for out in qkv:
                    q, k = out[..., :C], out[..., C : 2 * C]
                    q = q.reshape(B, T, nh, hs).permute(0, 2, 1, 3)
                    k = k.reshape(B, T, nh, hs).permute(0, 2, 1, 3)
                    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(hs)
                    max_score = max(max_score, scores[..., allowed].max().item())
    finally:
        for hook in hooks:
            hook.remove()
    return max_logit, max_score


@pytest.mark.parametrize("variant", ["none", "rmsnorm"])
def test_eval_diagnostics_match_a_direct_computation(corpus, variant):
    spec = TINY.replace(variant=variant, iters=4, lr=3e-3)
    result, events = run(spec, corpus)
    states = {e.step: e.state for e in events if isinstance(e, CheckpointSaved)}
    evals = [e for e in events if isinstance(e, EvalLogged)]
    assert [e.step for e in evals] == [2, 4]
    val = corpus.tensor("val", "cpu")
    for e in evals:
        max_logit, max_score = direct_eval(model_at(spec, corpus, states[e.step]), val, 32)
        assert e.max_logit == pytest.approx(max_logit, rel=1e-6)
        assert e.max_attn_logit == pytest.approx(max_score, rel=1e-5)
    assert (result.max_logit, result.max_attn_logit) == (evals[-1].max_logit,
                                                         evals[-1].max_attn_logit)  # fmt: skip


def reference_spikes(values, factor):
    """The spike rule, written out: after the first SPIKE_WINDOW steps, a finite value above
    ``factor`` times the median of the finite values among the SPIKE_WINDOW before it."""
    spikes = []
    for t in range(SPIKE_WINDOW, len(values)):
        recent = [v for v in values[t - SPIKE_WINDOW : t] if math.isfinite(v)]
        if math.isfinite(values[t]) and recent and values[t] > factor * statistics.median(recent):
            spikes.append(t)
    return spikes


def test_spike_steps_on_a_curve_with_known_spikes():
    loss = [2.0] * 70
    loss[10] = 10.0  # within the first window: not judged
    loss[52] = 3.01  # just above 1.5 x the median 2.0
    loss[54] = 3.0  # exactly 1.5 x: not above
    loss[56] = math.inf  # a non-finite step is the divergence, not a spike
    loss[58] = math.nan
    loss[60] = 100.0
    assert spike_steps(loss, LOSS_SPIKE_FACTOR) == [52, 60]
    grad = [1.0, 3.0] * 35  # the median of an alternating window is 2.0: 6.01 spikes
    grad[65] = 6.01
    assert spike_steps(grad, GRAD_SPIKE_FACTOR) == [65]
    assert spike_steps(loss[:SPIKE_WINDOW], LOSS_SPIKE_FACTOR) == []
    assert spike_steps([math.nan] * 50 + [5.0], LOSS_SPIKE_FACTOR) == []  # nothing to judge by
    stats = stability(loss, [*grad[:-1], math.inf])
    assert stats == {"max_grad_norm": 6.01, "loss_spikes": 2, "grad_spikes": 1}


def test_spike_steps_match_the_rule_on_random_curves():
    rng = random.Random(12)
    for _ in range(40):
        n = rng.randrange(40, 160)
        curve = [rng.lognormvariate(0.0, 0.3) for _ in range(n)]
        for t in rng.sample(range(n), k=n // 10):
            curve[t] = rng.choice([rng.uniform(1.4, 6.0), math.inf, math.nan, 0.0])
        for factor in (LOSS_SPIKE_FACTOR, GRAD_SPIKE_FACTOR):
            assert spike_steps(curve, factor) == reference_spikes(curve, factor)
