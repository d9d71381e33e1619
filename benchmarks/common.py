"""What the benchmarks share: the reference plain loop, timing from events, machine details."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))

from core.device import (  # noqa: E402
    apply_precision,
    autocast_for,
    resolve_device,
    resolve_precision,
)
from core.engine import build_model, derive_seed, param_groups  # noqa: E402
from core.events import EvalLogged, StepLogged  # noqa: E402
from core.metrics import evaluate, max_abs, total_grad_norm  # noqa: E402
from core.spec import RunSpec  # noqa: E402
from data import load_corpus  # noqa: E402
from data.batches import sample_batch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {
    "default": {},  # the protocol's 1.6M-parameter model
    "tiny": {"n_layer": 2, "n_embd": 32, "n_head": 4},
}


def base_spec(size: str, device: str, precision: str | None, **changes) -> RunSpec:
    """The study's base run at ``size``; precision "auto" (core.device) unless given."""
    precision = resolve_precision(precision or "auto", device)
    return RunSpec(**SIZES[size], device=device, precision=precision).replace(**changes)


def load(corpus_path: str | None):
    return load_corpus(corpus_path or os.environ.get("LABTUI_DATA") or _shared_corpus())


def _shared_corpus() -> str | None:
    shared = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    return str(shared) if shared.exists() else None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def plain_run(
    spec: RunSpec, corpus, step_times: list[float] | None = None, diagnostics: bool = False
) -> dict[str, float]:
    """The reference: a minimal eager loop, same model, batches, AdamW and evaluations.

    Returns {"train_s", "eval_s", "val_loss"} (the final evaluation's); appends the time
    after each step to ``step_times``.
    ``diagnostics``: also take the engine's per-step values (gradient norm, first-block input
    norm, max |logit|) and read them back with the loss in one synchronization, as the engine
    does, but without events, ledger or checkpoints.
    """
    device = resolve_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    apply_precision(precision, device)
    autocast = autocast_for(precision, device)
    model = build_model(spec, corpus.vocab_size).to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, spec), lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
        fused=device.startswith("cuda") or None,
    )  # fmt: skip
    batches = torch.Generator().manual_seed(derive_seed(spec.seed, "batches"))
    tokens, val = corpus.tensor("train", device), corpus.tensor("val", device)
    eval_s, t0, val_loss = 0.0, time.perf_counter(), None
    for it in range(spec.iters):
        for group in optimizer.param_groups:
            group["lr"] = spec.lr_at(it)
        x, y = sample_batch(tokens, spec.batch_size, spec.block_size, batches)
        with autocast:
            logits, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if diagnostics:  # as the engine: read back before the update
            grad_norm = total_grad_norm(model.parameters())
            values = [loss.detach().float(), grad_norm, model.last_embed_norm, max_abs(logits)]
            torch.stack(values).tolist()
        optimizer.step()
        if not diagnostics:
            loss.item()  # a loop that logs its loss
        if step_times is not None:
            step_times.append(time.perf_counter())
        step = it + 1
        if step == spec.iters or (spec.eval_interval and step % spec.eval_interval == 0):
            t = time.perf_counter()
            val_loss = evaluate(model, val, spec.block_size, autocast=autocast)["val_loss"]
            eval_s += time.perf_counter() - t
    sync(device)
    return {"train_s": time.perf_counter() - t0 - eval_s, "eval_s": eval_s, "val_loss": val_loss}


class Timeline:
    """Engine events with their arrival times; evaluation time is read off it."""

    def __init__(self):
        self.events: list[tuple[float, object]] = []

    def __call__(self, event) -> None:
        self.events.append((time.perf_counter(), event))

    def step_times(self, run_id: str) -> list[float]:
        return [t for t, e in self.events if isinstance(e, StepLogged) and e.run_id == run_id]

    def eval_s(self) -> float:
        """Time inside evaluations: each block of EvalLogged events since the event before it."""
        total, before, in_block, last = 0.0, None, False, None
        for t, e in self.events:
            if isinstance(e, EvalLogged):
                in_block, last = True, t
            else:
                if in_block:
                    total += last - before
                in_block, before = False, t
        if in_block:
            total += last - before
        return total


def machine(device: str) -> dict:
    device = resolve_device(device)
    info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU",
        "cuda": torch.version.cuda,
    }
    if hasattr(os, "getloadavg"):
        info["loadavg"] = list(os.getloadavg())
    return info


def median(values: list[float]) -> float:
    return statistics.median(values)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def table(rows: list[list[str]], left: int = 1) -> str:
    """Rows as aligned text: the first ``left`` columns left-justified, the others right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
