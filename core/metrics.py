"""The one definition of each evaluation metric, over a whole split.

All metrics come from one deterministic pass over the split in non-overlapping windows of the
context length (``data.batches.eval_batches``): every token after the first is predicted exactly
once, with as much left context as its window gives it.

- val_loss: mean cross-entropy in nats per character; val_bpc = val_loss / ln 2;
  val_ppl = exp(val_loss).
- accuracy: top-1 next-character accuracy over every predicted position.
- macro_accuracy: mean over the characters present as targets of that character's recall.
- embed_norm: mean over positions of the L2 norm of the first block's input.
- max_logit: the largest |output logit| over the pass (also logged per training step, over the
  step's batch).
- max_attn_logit: the largest pre-softmax attention score q·k/sqrt(d_head) over every layer, head
  and (causally allowed) query-key pair of the pass's first batch: the first EVAL_BATCH_SIZE
  windows of the split (8,192 positions at context 128). A fixed part, because every score of the
  whole pass would make a CPU evaluation about 1.8x slower (the fused attention never forms them).

Stability over a run's training steps (``spike_steps``, ``stability``):

- a loss spike is a step whose training loss is more than LOSS_SPIKE_FACTOR times the median
  loss of the SPIKE_WINDOW steps before it; a gradient spike the same for the gradient norm with
  GRAD_SPIKE_FACTOR. Only steps after the first SPIKE_WINDOW can spike, and only finite values
  count (the step a run diverges at is its ``diverged_step``, not a spike).
- max_grad_norm: the largest finite gradient norm of any step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from data.batches import eval_batches

EVAL_BATCH_SIZE = 64  # windows per forward pass; only max_attn_logit depends on it (first batch)
SPIKE_WINDOW = 50  # steps of history a spike is judged against
LOSS_SPIKE_FACTOR = 1.5  # a loss 50% above the recent median: most of the way back to init
GRAD_SPIKE_FACTOR = 3.0  # gradient norms wander more; three times the recent median


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    block_size: int,
    batch_size: int = EVAL_BATCH_SIZE,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Every metric above over ``tokens`` (a 1-D LongTensor on the model's device)."""
    was_training = model.training
    model.eval()
    vocab = model.config.vocab_size
    totals = Totals(vocab, tokens.device)
    try:
        for i, (x, y) in enumerate(eval_batches(tokens, block_size, batch_size)):
            model.record_attention(i == 0)
            with autocast or contextlib.nullcontext():
                logits, _ = model(x)
            totals.add(logits, y, model.last_embed_norm, model.last_max_attn_logit)
    finally:
        model.record_attention(False)
        model.train(was_training)
    return totals.metrics()


class Totals:
    """Sums over a pass, kept on the device so that the pass synchronizes once, at the end."""

    def __init__(self, vocab: int, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.embed = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.count = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.max_logit = torch.zeros((), device=device)
        self.max_attn = torch.full((), -math.inf, device=device)
        self.vocab = vocab

    def add(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        embed_norm: torch.Tensor,
        max_attn_logit: torch.Tensor | None = None,
    ) -> None:
        logits, y = logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1)
        self.loss += F.cross_entropy(logits, y, reduction="sum").double()
        self.embed += embed_norm.double() * y.numel()
        hit = (logits.argmax(-1) == y).double()
        self.correct += torch.bincount(y, weights=hit, minlength=self.vocab)
        self.count += torch.bincount(y, minlength=self.vocab).double()
        self.max_logit = torch.maximum(self.max_logit, max_abs(logits))
        if max_attn_logit is not None:
            self.max_attn = torch.maximum(self.max_attn, max_attn_logit.float())

    def metrics(self) -> dict[str, float]:
        n = self.count.sum().item()
        loss = self.loss.item() / n
        present = self.count > 0
        return {
            "val_loss": loss,
            "val_bpc": loss / math.log(2),
            "val_ppl": math.exp(loss) if loss < 700 else math.inf,
            "accuracy": self.correct.sum().item() / n,
            "macro_accuracy": (self.correct[present] / self.count[present]).mean().item(),
            "embed_norm": self.embed.item() / n,
            "max_logit": self.max_logit.item(),
            "max_attn_logit": self.max_attn.item(),
        }


def max_abs(logits: torch.Tensor) -> torch.Tensor:
    """The largest |logit| (a 0-d float tensor, no sync): ``max_logit`` of a batch."""
    return logits.detach().abs().amax().float()


def spike_steps(values: Sequence[float], factor: float, window: int = SPIKE_WINDOW) -> list[int]:
    """0-based indices of the spikes in a per-step series (the rule in this module's docstring)."""
    v = np.asarray(values, dtype=float)
    spikes = []
    for t in range(window, len(v)):
        recent = v[t - window : t]
        recent = recent[np.isfinite(recent)]
        if np.isfinite(v[t]) and len(recent) and v[t] > factor * np.median(recent):
            spikes.append(t)
    return spikes


def stability(losses: Sequence[float], grad_norms: Sequence[float]) -> dict[str, float | int]:
    """A run's per-run stability metrics from its per-step training loss and gradient norm."""
    finite = [g for g in grad_norms if math.isfinite(g)]
    return {
        "max_grad_norm": max(finite) if finite else None,
        "loss_spikes": len(spike_steps(losses, LOSS_SPIKE_FACTOR)),
        "grad_spikes": len(spike_steps(grad_norms, GRAD_SPIKE_FACTOR)),
    }


def total_grad_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """L2 norm over all gradients together, as ``clip_grad_norm_`` computes it (no sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack(norms))
