"""The console on a GPU: a tiny study trained through the app, grouped with CUDA graphs.

Runs only where CUDA is available (benchmarks/gpu_check.sh runs it on the GPU machine).
"""

from __future__ import annotations

import pytest
import torch
from test_app import TINY, add_study, console, statuses, wait_for

from core.engine import train
from core.spec import Study
from labtui.widgets.run_queue import RunQueue

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = TINY.replace(device="cuda", precision="fp32", iters=60, eval_interval=30)
STUDY = Study(base=GPU, grid={"variant": ("none", "layernorm", "rmsnorm"), "seed": (0, 1)})


async def test_console_trains_a_study_on_the_gpu(corpus, tmp_path, recwarn):
    app = console(corpus, tmp_path, STUDY, base_spec=GPU, device="cuda")
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: statuses(app) == ["finished"] * 6, timeout=300)
        await wait_for(pilot, lambda: not app.training)
        await pilot.pause(0.4)  # one redraw tick
        assert app.trainer.runner.executor.group  # CUDA: the runs trained as one grouped model
        # ... with a CUDA graph: capturing in the worker thread while the UI thread makes CUDA
        # calls of its own failed on the first GPU run ("operation failed ... during capture")
        fallbacks = [str(w.message) for w in recwarn if "without a CUDA graph" in str(w.message)]
        assert not fallbacks
        for view in app.views.values():
            assert list(view.curves["step"]) == list(range(1, 61))  # every step, in order
            assert view.val_ppl
        results = app.session.results()
        assert set(results["status"]) == {"finished"}
        assert all(d.startswith("cuda") for d in results["device"])
        assert set(results["precision"]) == {"fp32"}
        row = results.iloc[0]
        spec = next(v.spec for v in app.views.values() if v.run_id == row["run_id"])
        alone = train(spec, corpus, run_id="alone")  # the engine, one run, on the GPU
        assert row["val_loss"] == pytest.approx(alone.val_loss, rel=1e-3)
        await pilot.press("q")


async def test_cancel_and_resume_on_the_gpu(corpus, tmp_path):
    long = GPU.replace(iters=100_000, eval_interval=0, checkpoint_interval=0)
    study = Study(base=long, grid={"variant": ("none", "rmsnorm"), "seed": (0,)})
    app = console(corpus, tmp_path, study, base_spec=long, device="cuda")
    async with app.run_test(size=(120, 40)) as pilot:
        await add_study(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: all(v.step >= 30 for v in app.views.values()), 300)
        await pilot.press("C")  # cancel everything
        await wait_for(pilot, lambda: statuses(app) == ["cancelled"] * 2, timeout=120)
        await wait_for(pilot, lambda: not app.training)
        for view in app.views.values():
            record = app.session.run(view.run_id)
            assert record.status == "cancelled" and record.step == view.step >= 30
            assert (app.session.run_dir(view.run_id) / "resume.pt").exists()
            assert list(view.curves["step"]) == list(range(1, view.step + 1))
        view = next(iter(app.views.values()))
        stopped = view.step
        app.main_screen.query_one(RunQueue).select(view.run_id)
        await pilot.pause()
        await pilot.press("r")  # resume it: it goes on from its checkpoint
        await wait_for(pilot, lambda: view.status == "running" and view.step >= stopped + 25, 300)
        assert view.curves["step"][0] == 1
        await pilot.press("C")
        await wait_for(pilot, lambda: not app.training)
        assert view.status == "cancelled"
