"""Train one run from a RunSpec, reporting through typed events; cancel with a threading.Event.

The engine knows nothing of folders or screens: it calls ``on_event`` with the dataclasses of
``core.events`` and returns a RunResult. It never raises for the run's own failure: an exception
ends the run as "failed" (traceback in RunFinished), a non-finite loss or gradient as "diverged".
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from core.events import (
    CheckpointSaved,
    EvalLogged,
    RunFinished,
    RunResult,
    RunStarted,
    StepLogged,
)
from core.metrics import evaluate, total_grad_norm
from core.model import GPT, GPTConfig
from core.spec import RunSpec
from data import Corpus
from data.batches import sample_batch

EventSink = Callable[[object], None]


def resolve_device(name: str = "auto") -> str:
    """ "auto" -> cuda if available, else mps, else cpu; anything else is checked and returned."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' asked for, but MPS is not available here")
    return name


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return {"mps": "Apple MPS"}.get(device, "CPU")


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one random stream ("init", "batches", ...) of a run."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def lr_at(spec: RunSpec, it: int) -> float:
    """Learning rate for 0-based step ``it``: linear warmup, then constant or cosine to min_lr."""
    if it < spec.warmup_iters:
        return spec.lr * (it + 1) / spec.warmup_iters
    if spec.schedule == "constant":
        return spec.lr
    progress = (it - spec.warmup_iters) / max(1, spec.iters - spec.warmup_iters)
    return spec.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (
        spec.lr - spec.min_lr
    )


def build_model(spec: RunSpec, vocab_size: int) -> GPT:
    """The run's model, initialized from the run's seed (identical across variants)."""
    generator = torch.Generator().manual_seed(derive_seed(spec.seed, "init"))
    return GPT(GPTConfig.from_spec(spec, vocab_size), generator=generator)


def param_groups(model: GPT, spec: RunSpec) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only (and the position table if the spec says so)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_matrix = p.dim() >= 2 and (name != "wpe.weight" or spec.decay_position_embedding)
        (decay if is_matrix else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: GPT, spec: RunSpec, device: str) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, spec),
        lr=spec.lr,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        fused=device.startswith("cuda") or None,
    )


def autocast_for(spec: RunSpec, device: str) -> contextlib.AbstractContextManager:
    if spec.precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def apply_precision(spec: RunSpec, device: str) -> None:
    """tf32 matmuls on CUDA when asked for; fp32 otherwise (this is process-wide in PyTorch)."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = spec.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = spec.precision == "tf32"


def _to_cpu(obj: Any) -> Any:
    """A detached CPU copy of a (nested) state, safe to keep while training goes on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


@dataclass
class Progress:
    """What a checkpoint must carry besides weights and optimizer state."""

    step: int = 0
    best_val_loss: float | None = None
    elapsed_s: float = 0.0
    grad_norm: float | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        return cls(state["step"], state["best_val_loss"], state["elapsed_s"], state["grad_norm"])


def run_result(
    run_id: str,
    spec: RunSpec,
    status: str,
    progress: Progress,
    final: dict[str, float],
    *,
    n_params: int,
    device: str,
    wall_s: float,
    error: str | None = None,
) -> RunResult:
    """A RunResult from a run's progress and its final evaluation (empty if it never got there)."""
    return RunResult(
        run_id=run_id,
        status=status,
        step=progress.step,
        tokens=progress.step * spec.batch_size * spec.block_size,
        n_params=n_params,
        device=device,
        wall_s=wall_s,
        val_loss=final.get("val_loss"),
        val_bpc=final.get("val_bpc"),
        val_ppl=final.get("val_ppl"),
        best_val_loss=progress.best_val_loss,
        final_grad_norm=progress.grad_norm,
        accuracy=final.get("accuracy"),
        macro_accuracy=final.get("macro_accuracy"),
        embed_norm=final.get("embed_norm"),
        error=error,
    )


def train(
    spec: RunSpec,
    corpus: Corpus,
    on_event: EventSink | None = None,
    stop: threading.Event | None = None,
    *,
    run_id: str = "run",
    resume: dict[str, Any] | None = None,
) -> RunResult:
    """Train ``spec`` on ``corpus``; report events to ``on_event``; return how it ended."""
    emit = on_event or (lambda event: None)
    stop = stop or threading.Event()
    run = _Run(spec, corpus, emit, stop, run_id)
    try:
        return run.train(resume)
    except Exception as err:  # the run's own failure, out-of-memory included
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        result = run.result("failed", error=message)
        emit(RunFinished(run_id, result, traceback=traceback.format_exc()))
        return result


class _Run:
    """One run's state; ``train`` is the loop, the rest are its small steps."""

    def __init__(self, spec: RunSpec, corpus: Corpus, emit: EventSink, stop, run_id: str):
        self.spec, self.corpus, self.emit, self.stop, self.run_id = spec, corpus, emit, stop, run_id
        self.progress = Progress()
        self.device = "cpu"
        self.n_params = 0
        self.t0 = time.perf_counter()
        self.final: dict[str, float] = {}

    def train(self, resume: dict[str, Any] | None) -> RunResult:
        spec = self.spec
        self.device = resolve_device(spec.device)
        apply_precision(spec, self.device)
        self.autocast = autocast_for(spec, self.device)
        self.model = build_model(spec, self.corpus.vocab_size).to(self.device)
        self.n_params = self.model.n_params()
        self.optimizer = make_optimizer(self.model, spec, self.device)
        self.batches = torch.Generator().manual_seed(derive_seed(spec.seed, "batches"))
        torch.manual_seed(derive_seed(spec.seed, "dropout"))
        if resume is not None:
            self.load_state(resume)
        train_tokens = self.corpus.tensor("train", self.device)
        self.val_tokens = self.corpus.tensor("val", self.device)
        self.t0 = time.perf_counter()
        self.emit(
            RunStarted(
                self.run_id,
                spec,
                self.device,
                device_name(self.device),
                self.n_params,
                start_step=self.progress.step,
            )
        )
        params = list(self.model.parameters())
        max_norm = spec.grad_clip if spec.grad_clip > 0 else None
        tokens_per_step = spec.batch_size * spec.block_size
        for step in range(self.progress.step + 1, spec.iters + 1):
            if self.stop.is_set():
                self.emit(CheckpointSaved(self.run_id, self.progress.step, self.state()))
                return self.finish("cancelled")
            t_step = time.perf_counter()
            lr = lr_at(spec, step - 1)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = sample_batch(train_tokens, spec.batch_size, spec.block_size, self.batches)
            with self.autocast:
                _, loss = self.model(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_norm is None:
                grad_norm = total_grad_norm(params)
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            loss_value, grad_value = loss.item(), grad_norm.item()
            finite = math.isfinite(loss_value) and math.isfinite(grad_value)
            if finite:
                self.optimizer.step()
            self.progress.step = step
            self.progress.grad_norm = grad_value
            now = time.perf_counter()
            self.emit(
                StepLogged(
                    self.run_id,
                    step,
                    step * tokens_per_step,
                    loss_value,
                    grad_value,
                    self.model.last_embed_norm.item(),
                    lr,
                    tokens_per_step / max(now - t_step, 1e-9),
                    self.elapsed(),
                )
            )
            if not finite:
                return self.finish("diverged", error=f"non-finite loss or gradient at step {step}")
            if step < spec.iters and spec.eval_interval and step % spec.eval_interval == 0:
                self.log_eval()
            if (
                step < spec.iters
                and spec.checkpoint_interval
                and step % spec.checkpoint_interval == 0
            ):
                self.emit(CheckpointSaved(self.run_id, step, self.state()))
        self.final = self.log_eval()
        self.emit(CheckpointSaved(self.run_id, spec.iters, self.state(), final=True))
        return self.finish("finished")

    def log_eval(self) -> dict[str, float]:
        m = evaluate(self.model, self.val_tokens, self.spec.block_size, autocast=self.autocast)
        best = self.progress.best_val_loss
        self.progress.best_val_loss = m["val_loss"] if best is None else min(best, m["val_loss"])
        step = self.progress.step
        self.emit(
            EvalLogged(
                self.run_id,
                step,
                step * self.spec.batch_size * self.spec.block_size,
                self.elapsed(),
                m["val_loss"],
                m["val_bpc"],
                m["val_ppl"],
            )
        )
        return m

    def elapsed(self) -> float:
        return self.progress.elapsed_s + time.perf_counter() - self.t0

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run is now."""
        p = self.progress
        state = {
            "spec": self.spec.to_dict(),
            "step": p.step,
            "best_val_loss": p.best_val_loss,
            "elapsed_s": self.elapsed(),
            "grad_norm": p.grad_norm,
            "model": _to_cpu(self.model.state_dict()),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "rng_batches": self.batches.get_state(),
            "rng_torch": torch.get_rng_state(),
        }
        if self.device.startswith("cuda"):
            state["rng_cuda"] = torch.cuda.get_rng_state(torch.device(self.device))
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        if RunSpec.from_dict(state["spec"]).key() != self.spec.key():
            raise ValueError("checkpoint belongs to a different run spec")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.set_state(state["rng_batches"])
        torch.set_rng_state(state["rng_torch"])
        if "rng_cuda" in state and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["rng_cuda"], torch.device(self.device))
        self.progress = Progress.from_state(state)

    def result(self, status: str, error: str | None = None) -> RunResult:
        return run_result(
            self.run_id,
            self.spec,
            status,
            self.progress,
            self.final,
            n_params=self.n_params,
            device=self.device,
            wall_s=self.elapsed(),
            error=error,
        )

    def finish(self, status: str, error: str | None = None) -> RunResult:
        result = self.result(status, error)
        self.emit(RunFinished(self.run_id, result))
        return result
