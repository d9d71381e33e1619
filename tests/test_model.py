"""The GPT and its embedding-norm variants."""

from __future__ import annotations

import math

import pytest
import torch

from core.engine import build_model
from core.model import GPT, GPTConfig
from core.spec import RunSpec, SpecError


def test_default_model_has_about_1_6m_parameters():
    model = build_model(RunSpec(), vocab_size=65)
    assert 1_500_000 <= model.n_params() <= 1_700_000
    assert model.n_params() == 1_611_136  # tied head counted once
    assert model.lm_head.weight is model.wte.weight


@pytest.mark.parametrize("variant", ["layernorm", "rmsnorm"])
def test_normalized_variants_feed_the_first_block_norm_sqrt_width(variant):
    spec = RunSpec(variant=variant)
    model = build_model(spec, 65)
    idx = torch.randint(0, 65, (4, 128), generator=torch.Generator().manual_seed(0))
    model(idx)
    assert model.last_embed_norm.item() == pytest.approx(math.sqrt(128), rel=0.01)


def test_baseline_first_block_input_is_far_below_sqrt_width():
    model = build_model(RunSpec(variant="none"), 65)
    model(torch.zeros(2, 128, dtype=torch.long))
    # token + position embedding, each N(0, 0.02^2) per coordinate: norm ~ 0.02 * sqrt(2 * 128)
    assert model.last_embed_norm.item() < 0.1 * math.sqrt(128)


def test_variants_share_identical_initial_values_for_shared_parameters():
    models = {
        v: build_model(RunSpec(variant=v, seed=3), 65) for v in ("none", "layernorm", "rmsnorm")
    }
    base = dict(models["none"].named_parameters())
    for variant in ("layernorm", "rmsnorm"):
        params = dict(models[variant].named_parameters())
        extra = set(params) - set(base)
        assert extra and all(name.startswith("embed_norm.") for name in extra)
        for name, p in base.items():
            assert torch.equal(p, params[name]), f"{variant}: {name} differs"
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
