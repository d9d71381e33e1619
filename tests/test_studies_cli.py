"""`labtui studies`, `labtui studies show` and `labtui run --preset`: built-in studies by name."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import invoke

from core.device import device_name
from core.presets import load_preset, preset_names, preset_text
from data import cache_root
from sessions.estimates import estimate, timing
from sessions.store import Session


def seed_timing(step_s=0.2, eval_batch_s=0.5):
    """A measurement in the cache, as if taken earlier, for the default model on the CPU."""
    spec = load_preset("protocol").base.replace(device="cpu")
    key = "|".join([device_name("cpu"), torch.__version__, *(str(v) for v in (
        spec.n_layer, spec.n_embd, spec.n_head, spec.block_size, spec.batch_size, spec.precision
    ))])  # fmt: skip
    known = {key: {"device_name": "CPU", "step_s": step_s, "eval_batch_s": eval_batch_s,
                   "measured": "2026-11-28T10:00:00", "threads": 1, "load": 0.1}}  # fmt: skip
    cache_root().mkdir(parents=True, exist_ok=True)
    (cache_root() / "step-times.json").write_text(json.dumps(known))
    return spec


def test_protocol_is_listed_first():
    assert preset_names()[0] == "protocol"
    assert set(preset_names()) >= {"protocol", "lr-sweep", "budget-sweep", "controls"}


def test_estimate_is_the_measured_step_time_times_the_studys_work():
    spec = seed_timing(step_s=0.2, eval_batch_s=0.5)
    study = load_preset("protocol")
    study = type(study)(base=spec, grid=study.grid, order=study.order)
    guess = estimate(study)
    # 15 runs x (300 steps x 0.2 s + 3 evaluations x 14 batches of 64 windows x 0.5 s)
    assert guess.runs == 15 and guess.steps == 4500
    assert guess.seconds == pytest.approx(15 * (300 * 0.2 + 3 * 14 * 0.5))
    assert "200 ms per step" in guess.how and "measured 2026-11-28 10:00" in guess.how


def test_a_missing_measurement_is_taken_and_cached(tiny_spec):
    measured = timing(tiny_spec)
    assert measured.step_s > 0 and measured.eval_batch_s > 0
    assert timing(tiny_spec) == measured  # the second call reads the cache
    assert timing(tiny_spec, remeasure=True).measured >= measured.measured


def test_studies_lists_runs_tokens_and_the_estimate():
    seed_timing()
    result = invoke("studies", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for name in preset_names():
        assert name in result.output
    assert " 75 " in result.output and " 15 " in result.output  # lr-sweep, protocol
    assert "estimate: runs one after another at 200 ms per step" in result.output


def test_studies_show_prints_the_toml_and_refuses_an_unknown_name():
    result = invoke("studies", "show", "lr-sweep")
    assert result.exit_code == 0 and result.output == preset_text("lr-sweep")
    result = invoke("studies", "show", "nope")
    assert result.exit_code == 2 and result.output.startswith("labtui: error: unknown preset")


def test_run_preset_with_overrides(tmp_path, corpus_path):
    root = tmp_path / "root"
    result = invoke(
        "run", "--preset", "lr-sweep", "--seeds", "0", "--iters", "4", "--layers", "1",
        "--width", "16", "--heads", "2", "--context", "16", "--batch", "2", "--device", "cpu",
        "--variants", "none,layernorm", "--session", "s", "--root", root, "--data", corpus_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    session = Session.open(root, "s")
    assert session.study.grid["lr"] == (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # from the preset
    assert session.study.grid["variant"] == ("none", "layernorm")  # overridden
    assert session.study.base.iters == 4 and session.study.description.startswith("Learning")
    assert len(session.results()) == 10


def test_preset_and_study_file_together_are_refused(tmp_path, corpus_path):
    result = invoke("run", "--preset", "protocol", "--study", tmp_path / "x.toml")
    assert result.exit_code == 2 and "not both" in result.output
    result = invoke("run", "--preset", "nope", "--data", corpus_path, "--root", tmp_path)
    assert result.exit_code == 2 and "unknown preset 'nope'" in result.output


def test_without_measuring_a_missing_step_time_is_said_not_taken(tiny_spec):
    """While runs train, the console asks for cached estimates only: a step timed then would
    be too slow and would stay in the cache."""
    from sessions.estimates import NotMeasured

    study = load_preset("protocol")
    study = type(study)(base=tiny_spec, grid=study.grid, order=study.order)
    with pytest.raises(NotMeasured, match="no step time measured yet"):
        estimate(study, measure=False)
    assert not (cache_root() / "step-times.json").exists()
    measured = estimate(study).seconds  # measures and caches
    assert estimate(study, measure=False).seconds == measured
