"""Text from a trained model: autoregressive sampling with temperature and top-k."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from core.model import GPT


def generate(
    model: GPT,
    prompt: torch.Tensor,
    tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The ``tokens`` ids that follow ``prompt`` (1-D ids, at least one), as a 1-D CPU tensor.

    The model sees at most its context (the last ``block_size`` ids). ``temperature`` 0 takes the
    most likely id; otherwise ids are drawn from the softmax of logits / temperature, restricted to
    the ``top_k`` most likely when given. Draws come from ``generator``, a CPU generator, so a seed
    gives the same draws on every device. Dropout is off while sampling. Raises ValueError for an
    argument out of range, or a model whose output is not finite (weights of a diverged run).
    """
    ids = stream(model, prompt, tokens, temperature=temperature, top_k=top_k, generator=generator)
    return torch.tensor(list(ids), dtype=torch.long)


def stream(
    model: GPT,
    prompt: torch.Tensor,
    tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """``generate``'s ids one at a time, as they are drawn (to show a long sample as it comes).

    The arguments are checked at once (ValueError); a model whose output is not finite raises
    ValueError while drawing.
    """
    if prompt.dim() != 1 or prompt.numel() == 0:
        raise ValueError("the prompt must be a non-empty 1-D tensor of token ids")
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    return _draw(model, prompt, tokens, temperature, top_k, generator)


@torch.no_grad()
def _draw(model, prompt, tokens, temperature, top_k, generator) -> Iterator[int]:
    device = next(model.parameters()).device
    block_size = model.config.block_size
    idx = prompt.to(device=device, dtype=torch.long)[None, -block_size:]  # (1, T <= block_size)
    was_training = model.training
    model.eval()
    try:
        for _ in range(tokens):
            logits, _ = model(idx)
            logits = logits[0, -1].float().cpu()  # (vocab,)
            if not torch.isfinite(logits).all():
                raise ValueError("the model's output is not finite (its weights hold NaN or inf)")
            if temperature == 0:
                next_id = int(logits.argmax())
            else:
                # the largest logit becomes 0: a tiny temperature cannot overflow to inf - inf
                logits = (logits - logits.max()) / temperature
                if top_k is not None and top_k < logits.numel():
                    kth = torch.topk(logits, top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                next_id = int(torch.multinomial(probs, 1, generator=generator))
            yield next_id
            idx = torch.cat([idx, idx.new_tensor([[next_id]])], dim=1)[:, -block_size:]
    finally:
        model.train(was_training)
