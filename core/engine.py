"""Train one run from a RunSpec, reporting through typed events; cancel with a threading.Event.

The engine knows nothing of folders or screens: it calls ``on_event`` with the dataclasses of
``core.events`` and returns a RunResult. It never raises for the run's own failure: an exception
ends the run as "failed" (traceback in RunFinished), a non-finite loss or gradient as "diverged".
A failure of ``on_event`` itself is not the run's: it is raised as ``core.events.SinkError``.
The run's bookkeeping (progress, events, checkpoints, result) is its ``core.ledger.RunLedger``.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from typing import Any

import torch

from core.device import (
    apply_precision,
    autocast_for,
    device_name,
    resolve_device,
    resolve_precision,
)
from core.events import EventSink, RunResult, SinkError
from core.ledger import RunLedger
from core.metrics import evaluate, max_abs, total_grad_norm
from core.model import GPT, GPTConfig
from core.spec import RunSpec
from core.status import RunStatus
from data import Corpus
from data.batches import sample_batch


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one random stream ("init", "batches", ...) of a run."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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


def _to_cpu(obj: Any) -> Any:
    """A detached CPU copy of a (nested) state, safe to keep while training goes on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


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
    ledger = RunLedger(run_id, spec, on_event or (lambda event: None))
    try:
        return _Run(spec, corpus, ledger, stop or threading.Event()).train(resume)
    except SinkError:
        raise
    except Exception as err:  # the run's own failure, out-of-memory included
        return ledger.fail(err)


class _Run:
    """One run's model, optimizer and random streams; ``train`` is the loop."""

    def __init__(self, spec: RunSpec, corpus: Corpus, ledger: RunLedger, stop: threading.Event):
        self.spec, self.corpus, self.ledger, self.stop = spec, corpus, ledger, stop

    def train(self, resume: dict[str, Any] | None) -> RunResult:
        spec, ledger = self.spec, self.ledger
        self.device = ledger.device = resolve_device(spec.device)
        precision = ledger.precision = resolve_precision(spec.precision, self.device)
        apply_precision(precision, self.device)
        self.autocast = autocast_for(precision, self.device)
        self.model = build_model(spec, self.corpus.vocab_size).to(self.device)
        ledger.n_params = self.model.n_params()
        self.optimizer = make_optimizer(self.model, spec, self.device)
        self.batches = torch.Generator().manual_seed(derive_seed(spec.seed, "batches"))
        torch.manual_seed(derive_seed(spec.seed, "dropout"))
        if resume is not None:
            self.load_state(resume)
        train_tokens = self.corpus.tensor("train", self.device)
        self.val_tokens = self.corpus.tensor("val", self.device)
        ledger.start(self.device, device_name(self.device), ledger.n_params, precision)
        params = list(self.model.parameters())
        max_norm = spec.grad_clip if spec.grad_clip > 0 else None
        for step in range(ledger.step + 1, spec.iters + 1):
            if self.stop.is_set():
                ledger.save(self.state())
                return ledger.finish(RunStatus.CANCELLED)
            t_step = time.perf_counter()
            for group in self.optimizer.param_groups:
                group["lr"] = spec.lr_at(step - 1)
            x, y = sample_batch(train_tokens, spec.batch_size, spec.block_size, self.batches)
            with self.autocast:
                logits, loss = self.model(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_norm is None:
                grad_norm = total_grad_norm(params)
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            values = torch.stack(
                [loss.detach().float(), grad_norm, self.model.last_embed_norm, max_abs(logits)]
            ).tolist()  # one host synchronization per step
            finite = ledger.log_step(step, *values, seconds=time.perf_counter() - t_step)
            if not finite:
                return ledger.diverge()
            self.optimizer.step()
            if ledger.eval_due(step):
                ledger.log_eval(self.evaluate())
            if ledger.checkpoint_due(step):
                ledger.save(self.state())
        ledger.final = self.evaluate()
        ledger.log_eval(ledger.final)
        ledger.save(self.state(), final=True)
        return ledger.finish(RunStatus.FINISHED)

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.model, self.val_tokens, self.spec.block_size, autocast=self.autocast)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run is now."""
        tensors = {
            "model": _to_cpu(self.model.state_dict()),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "rng_batches": self.batches.get_state(),
            "rng_torch": torch.get_rng_state(),
        }
        if self.device.startswith("cuda"):
            tensors["rng_cuda"] = torch.cuda.get_rng_state(torch.device(self.device))
        return self.ledger.state(**tensors)

    def load_state(self, state: dict[str, Any]) -> None:
        self.ledger.restore(state)  # checks that the checkpoint is this spec's
        self.model.load_state_dict(state["model"])
        # AdamW keeps the given moment tensors (on their device already) and updates them in
        # place: give it copies, so that the caller's checkpoint stays as it was.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.batches.set_state(state["rng_batches"])
        torch.set_rng_state(state["rng_torch"])
        if "rng_cuda" in state and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["rng_cuda"], torch.device(self.device))
