"""The GPT and its embedding-norm variants."""

from __future__ import annotations

import math

import pytest
import torch

from core.engine import build_model
from core.model import EMBED_RMS, EMBED_STD, GPT, TREATMENTS, GPTConfig
from core.spec import VARIANTS, RunSpec, SpecError


def test_default_model_has_about_1_6m_parameters():
    model = build_model(RunSpec(), vocab_size=65)
    assert 1_500_000 <= model.n_params() <= 1_700_000
    assert model.n_params() == 1_611_136  # tied head counted once
    assert model.lm_head.weight is model.wte.weight


@pytest.mark.parametrize(
    ("variant", "rms"),
    [
        ("none", EMBED_RMS),
        ("layernorm", 1.0),
        ("rmsnorm", 1.0),
        ("scaled", 1.0),
        ("layernorm-small", EMBED_RMS),
        ("rmsnorm-small", EMBED_RMS),
    ],
)
def test_first_block_rms_at_initialization(variant, rms):
    """scaled starts at unit RMS like the norms; the -small norms at the baseline's σ√2."""
    assert EMBED_RMS == pytest.approx(EMBED_STD * math.sqrt(2))
    assert EMBED_RMS == pytest.approx(0.0283, abs=1e-4)
    model = build_model(RunSpec(variant=variant), 65)
    idx = torch.randint(0, 65, (4, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(idx)
    measured = model.last_embed_norm.item() / math.sqrt(model.config.n_embd)
    # a norm sets the RMS itself (eps takes 0.6% off at σ√2); the others inherit the
    # tables' sample spread (65 x 128 and 128 x 128 draws: about 1% over seeds 0-2)
    assert measured == pytest.approx(rms, rel=0.01 if TREATMENTS[variant].norm else 0.03)


def test_all_six_variants_share_the_initial_values_of_shared_parameters():
    models = {v: build_model(RunSpec(variant=v, seed=3), 65) for v in VARIANTS}
    base = dict(models["none"].named_parameters())
    for variant, model in models.items():
        params = dict(model.named_parameters())
        assert set(params) - set(base) <= {"embed_norm.weight", "embed_norm.bias"}
        for name, p in base.items():
            assert torch.equal(p, params[name]), f"{variant}: {name} differs"
        assert variant in ("none", "scaled") or set(params) - set(base)
        treatment = TREATMENTS[variant]
        if treatment.norm:
            assert torch.all(params["embed_norm.weight"] == treatment.scale)
        if "embed_norm.bias" in params:
            assert torch.all(params["embed_norm.bias"] == 0)
    other_seed = build_model(RunSpec(seed=4), 65)
    assert not torch.equal(other_seed.wte.weight, models["none"].wte.weight)


def test_residual_projections_use_scaled_init():
    model = build_model(RunSpec(n_layer=8), 65)
    std = model.blocks[0].attn.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert model.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_loss_at_init_is_close_to_uniform():
    model = build_model(RunSpec(n_layer=2, n_embd=32, n_head=4), 65)
    g = torch.Generator().manual_seed(1)
    idx, targets = torch.randint(0, 65, (2, 8, 128), generator=g)
    _, loss = model(idx, targets)
    assert loss.item() == pytest.approx(math.log(65), rel=0.05)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_embd": 100, "n_head": 8}, "not divisible"),
        ({"n_layer": 0}, "n_layer must be positive"),
        ({"variant": "batchnorm"}, "unknown variant"),
        ({"dropout": 1.5}, "dropout"),
        ({"lr": -1.0}, "lr must be positive"),
    ],
)
def test_bad_configs_are_refused_before_anything_runs(changes, message):
    with pytest.raises(SpecError, match=message):
        RunSpec(**changes)


def test_model_refuses_bad_config_directly():
    with pytest.raises(ValueError, match="not divisible"):
        GPT(GPTConfig(n_embd=30, n_head=4))
