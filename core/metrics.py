"""The one definition of each evaluation metric, over a whole split.

All metrics come from one deterministic pass over the split in non-overlapping windows of the
context length (``data.batches.eval_batches``): every token after the first is predicted exactly
once, with as much left context as its window gives it.

- val_loss: mean cross-entropy in nats per character; val_bpc = val_loss / ln 2;
  val_ppl = exp(val_loss).
- accuracy: top-1 next-character accuracy over every predicted position.
- macro_accuracy: mean over the characters present as targets of that character's recall.
- embed_norm: mean over positions of the L2 norm of the first block's input.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from data.batches import eval_batches

EVAL_BATCH_SIZE = 64  # windows per forward pass; the result does not depend on it


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
    for x, y in eval_batches(tokens, block_size, batch_size):
        with autocast or contextlib.nullcontext():
            logits, _ = model(x)
        totals.add(logits, y, model.last_embed_norm)
    model.train(was_training)
    return totals.metrics()


class Totals:
    """Sums over a pass, kept on the device so that the pass synchronizes once, at the end."""

    def __init__(self, vocab: int, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.embed = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.count = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.vocab = vocab

    def add(self, logits: torch.Tensor, y: torch.Tensor, embed_norm: torch.Tensor) -> None:
        logits, y = logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1)
        self.loss += F.cross_entropy(logits, y, reduction="sum").double()
        self.embed += embed_norm.double() * y.numel()
        hit = (logits.argmax(-1) == y).double()
        self.correct += torch.bincount(y, weights=hit, minlength=self.vocab)
        self.count += torch.bincount(y, minlength=self.vocab).double()

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
        }


def total_grad_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """L2 norm over all gradients together, as ``clip_grad_norm_`` computes it (no sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack(norms))
