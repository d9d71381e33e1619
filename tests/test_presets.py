"""The built-in studies: every one loads and validates, sizes, and protocol = Study()."""

from __future__ import annotations

import dataclasses

import pytest

from core import presets
from core.spec import PROTOCOL_VARIANTS, VARIANTS, SpecError, Study

TOKENS_PER_STEP = 16 * 128  # the protocol's batch x context


def test_the_presets_are_the_four_studies():
    assert presets.preset_names() == ["protocol", "budget-sweep", "controls", "lr-sweep"]


@pytest.mark.parametrize("name", ["budget-sweep", "controls", "lr-sweep", "protocol"])
def test_every_preset_loads_validates_and_describes_itself(name):
    study = presets.load_preset(name)
    assert study == Study.from_toml(presets.preset_text(name))
    assert study.description and "\n" not in study.description
    for spec in study.specs():
        spec.validate()


def test_protocol_is_the_default_study():
    study = presets.load_preset("protocol")
    assert dataclasses.replace(study, description="") == Study()
    assert study.specs() == Study().specs()


def test_lr_sweep():
    study = presets.load_preset("lr-sweep")
    assert study.grid["lr"] == (1e-4, 3e-4, 1e-3, 3e-3, 1e-2) and study.axes == ["lr"]
    assert study.grid["variant"] == PROTOCOL_VARIANTS and len(study.grid["seed"]) == 5
    assert study.base.iters == 1000 and study.base.schedule == "constant"
    assert study.order == "interleaved"
    specs = study.specs()
    assert len(specs) == 75 and {s.seed for s in specs[:15]} == {0}  # every cell gets seed 0 first


def test_budget_sweep():
    study = presets.load_preset("budget-sweep")
    assert study.grid["iters"] == (300, 1000, 3000) and study.axes == ["iters"]
    assert study.base.lr == 3e-4 and len(study.specs()) == 45


def test_controls_hold_every_variant():
    study = presets.load_preset("controls")
    assert study.grid["variant"] == (
        "none",
        "scaled",
        "layernorm-small",
        "layernorm",
        "rmsnorm-small",
        "rmsnorm",
    )
    assert set(study.grid["variant"]) == set(VARIANTS) and len(study.specs()) == 30
    assert study.base.iters == 300 and study.base.lr == 3e-4


def test_sizes_in_runs_and_tokens():
    sizes = {p.name: p for p in presets.preset_sizes()}
    assert (sizes["protocol"].runs, sizes["protocol"].tokens) == (15, 15 * 300 * TOKENS_PER_STEP)
    assert sizes["lr-sweep"].tokens == 75 * 1000 * TOKENS_PER_STEP
    assert sizes["budget-sweep"].tokens == 15 * (300 + 1000 + 3000) * TOKENS_PER_STEP
    assert sizes["controls"].runs == 30
    assert sizes["controls"].description == presets.load_preset("controls").description


def test_unknown_preset_is_one_line():
    with pytest.raises(
        SpecError, match=r"^unknown preset 'nope': choose one of protocol, budget-sweep, "
    ):
        presets.load_preset("nope")
