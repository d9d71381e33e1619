"""How long a study will take here: a step time measured on this device, times the study's steps.

A measurement trains a few steps of the study's model shape on random tokens (after a warm-up)
and times one evaluation batch; it is cached per device, torch version and shape in the labtui
cache folder, so that listing studies is instant after the first time. The estimate is for runs
trained one after another (the CPU default); grouped training on a GPU is faster than it says.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

from core.spec import RunSpec, Study
from data import cache_root
from sessions import atomic
from sessions.provenance import now_iso

TINY_SHAKESPEARE_VAL = 111_540  # validation tokens an evaluation pass covers, unless told
WARMUP, TIMED = 2, 3  # steps


@dataclass(frozen=True)
class StepTiming:
    """One shape's measured cost on one device."""

    device_name: str
    step_s: float  # one training step
    eval_batch_s: float  # one evaluation batch (core.metrics.EVAL_BATCH_SIZE windows)
    measured: str  # when (ISO time)
    threads: int  # PyTorch's CPU threads at the time
    load: float | None  # the 1-minute load average at the time (None where unknown)

    def describe(self) -> str:
        """ "210 ms per step and 380 ms per evaluation batch on CPU (2 threads), measured ..." """
        where = self.device_name
        if where == "CPU":
            where += f" ({self.threads} thread{'s' * (self.threads != 1)}"
            where += f", load {self.load:.1f})" if self.load is not None else ")"
        return (
            f"{self.step_s * 1e3:.0f} ms per step and {self.eval_batch_s * 1e3:.0f} ms per "
            f"evaluation batch on {where}, measured {self.measured[:16].replace('T', ' ')}"
        )


@dataclass(frozen=True)
class Estimate:
    runs: int
    steps: int  # training steps of all runs together
    tokens: int  # training tokens of all runs together
    seconds: float
    how: str  # one line: what was measured, where and when


class NotMeasured(LookupError):
    """No cached measurement, and measuring was not allowed (the device is busy training)."""


def estimate(
    study: Study,
    val_tokens: int = TINY_SHAKESPEARE_VAL,
    *,
    remeasure: bool = False,
    measure: bool = True,
) -> Estimate:
    """The study's wall time on its device, from each model shape's measured step time.

    ``measure=False``: use cached measurements only (NotMeasured when one is missing): a
    measurement taken while the device trains would be too slow and would stay cached.
    """
    specs = study.specs()
    seconds, timings = 0.0, {}
    for spec in specs:
        if _shape(spec) not in timings:
            timings[_shape(spec)] = timing(spec, remeasure=remeasure, measure=measure)
        t = timings[_shape(spec)]
        seconds += spec.iters * t.step_s + _evals(spec) * _eval_batches(spec, val_tokens) * (
            t.eval_batch_s
        )
    how = "; ".join(dict.fromkeys(t.describe() for t in timings.values()))
    return Estimate(
        runs=len(specs),
        steps=sum(s.iters for s in specs),
        tokens=sum(s.tokens for s in specs),
        seconds=seconds,
        how=f"runs one after another at {how}" if how else "no runs",
    )


def timing(spec: RunSpec, *, remeasure: bool = False, measure: bool = True) -> StepTiming:
    """The cached measurement for ``spec``'s shape on its device, measured now if missing (or
    if ``remeasure``: a measurement taken on a busy machine is too slow). ``measure=False``:
    NotMeasured instead of measuring."""
    import torch

    from core.device import device_name, resolve_device

    device = resolve_device(spec.device)
    key = "|".join([device_name(device), torch.__version__, *(str(v) for v in _shape(spec)[1:])])
    path = cache_root() / "step-times.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    cached = _cached(known.get(key))
    if cached is not None and not remeasure:
        return cached
    if not measure:
        raise NotMeasured(f"no step time measured yet for this model on {key.split('|')[0]}")
    measured = take_measurement(spec)
    known[key] = asdict(measured)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, known)
    except OSError:
        pass  # an unwritable cache only costs a new measurement next time
    return measured


def take_measurement(spec: RunSpec, vocab_size: int = 65) -> StepTiming:
    """Time TIMED training steps (after WARMUP) and one evaluation batch of ``spec``'s model."""
    import torch

    from core.device import (
        apply_precision,
        autocast_for,
        device_name,
        resolve_device,
        resolve_precision,
    )
    from core.engine import build_model, make_optimizer
    from core.metrics import EVAL_BATCH_SIZE

    device = resolve_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    apply_precision(precision, device)
    model = build_model(spec, vocab_size).to(device)
    optimizer = make_optimizer(model, spec, device)
    shape = (spec.batch_size, spec.block_size)
    x = torch.randint(vocab_size, shape, device=device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    for i in range(WARMUP + TIMED):
        if i == WARMUP:
            sync()
            t0 = time.perf_counter()
        with autocast_for(precision, device):
            _, loss = model(x, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    step_s = (time.perf_counter() - t0) / TIMED
    batch = torch.randint(vocab_size, (EVAL_BATCH_SIZE, spec.block_size), device=device)
    with torch.no_grad(), autocast_for(precision, device):
        model(batch)  # warm-up
        sync()
        t0 = time.perf_counter()
        model.eval()
        model.record_attention(True)
        model(batch)
        model.last_max_attn_logit.item()
    eval_s = time.perf_counter() - t0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return StepTiming(device_name(device), step_s, eval_s, now_iso(), torch.get_num_threads(), load)


def _cached(entry: object) -> StepTiming | None:
    """A cached measurement; None when there is none, or it is damaged (a field missing or of
    the wrong kind, a time that is not a positive number)."""
    try:
        t = StepTiming(**entry)  # type: ignore[arg-type]
    except TypeError:
        return None

    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    times_ok = all(number(v) and v > 0 for v in (t.step_s, t.eval_batch_s))
    texts_ok = isinstance(t.device_name, str) and isinstance(t.measured, str)
    counts_ok = isinstance(t.threads, int) and (t.load is None or number(t.load))
    return t if times_ok and texts_ok and counts_ok else None


def _shape(spec: RunSpec) -> tuple:
    """What a step's cost depends on (the first item, the device, is resolved by timing)."""
    return (
        spec.device, spec.n_layer, spec.n_embd, spec.n_head, spec.block_size, spec.batch_size,
        spec.precision,
    )  # fmt: skip


def _evals(spec: RunSpec) -> int:
    """Validation passes of a run: every eval_interval steps and at the end."""
    every = spec.eval_interval
    return (spec.iters - 1) // every + 1 if every else 1


def _eval_batches(spec: RunSpec, val_tokens: int) -> int:
    from core.metrics import EVAL_BATCH_SIZE

    windows = math.ceil((val_tokens - 1) / spec.block_size)
    return math.ceil(windows / EVAL_BATCH_SIZE)
