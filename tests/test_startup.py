"""One start-up rule for both front ends: "auto" precision is resolved in core, once, and the
console and `labtui run` record the same study for the same request."""

from __future__ import annotations

import json

import torch
from cli_helpers import invoke
from test_app import TINY, add_study, console

from core.spec import Study
from sessions.startup import resolve_study


def test_auto_precision_is_tf32_on_cuda_and_fp32_elsewhere(monkeypatch):
    """The console once trained fp32 on CUDA where `labtui run` trained tf32."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here; nothing runs
    base = TINY.replace(device="cuda", precision="auto")
    study = resolve_study(Study(base=base, grid={"precision": ("auto", "fp32", "bf16")}))
    assert study.base.precision == "tf32"
    assert study.grid["precision"] == ("tf32", "fp32", "bf16")  # a swept precision: each its own
    monkeypatch.undo()
    assert resolve_study(Study(base=base.replace(device="cpu"))).base.precision == "fp32"


async def test_the_console_and_the_cli_record_the_same_study(corpus, corpus_path, tmp_path):
    base = TINY.replace(precision="auto", iters=2, eval_interval=0, checkpoint_interval=0)
    study = Study(base=base, grid={"variant": ("none", "rmsnorm"), "seed": (0,)})
    app = console(corpus, tmp_path / "console", study, base_spec=base)
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        made_by_console = json.loads((app.session.path / "session.json").read_text())["study"]
        await pilot.press("q")
    done = invoke(
        "run", "--layers", "2", "--width", "32", "--heads", "4", "--context", "32", "--batch", "8",
        "--iters", "2", "--eval-interval", "0", "--checkpoint-interval", "0",
        "--variants", "none,rmsnorm", "--seeds", "0", "--device", "cpu",
        "--data", corpus_path, "--root", tmp_path / "cli", "--session", "cli",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    made_by_cli = json.loads((tmp_path / "cli" / "cli" / "session.json").read_text())["study"]
    assert made_by_console["base"]["precision"] == made_by_cli["base"]["precision"] == "fp32"
    assert made_by_console["base"] == made_by_cli["base"]
    assert made_by_console["grid"] == made_by_cli["grid"]
