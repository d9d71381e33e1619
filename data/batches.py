"""Training batches (random windows) and the evaluation pass (every target exactly once)."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def sample_offsets(
    n_tokens: int, batch_size: int, block_size: int, generator: torch.Generator
) -> torch.Tensor:
    """``batch_size`` random window starts in a split of ``n_tokens`` (a CPU LongTensor).

    Drawn on the CPU ``generator``, so a seed gives the same batches on every device.
    """
    if n_tokens <= block_size:
        raise ValueError(f"split has {n_tokens} tokens; block_size {block_size} needs more")
    return torch.randint(n_tokens - block_size, (batch_size,), generator=generator)


def windows(
    tokens: torch.Tensor, offsets: torch.Tensor, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x = the ``block_size`` tokens from each offset, y = the next ones: (*offsets.shape, L)."""
    idx = offsets.to(tokens.device)[..., None] + torch.arange(block_size, device=tokens.device)
    return tokens[idx], tokens[idx + 1]


def sample_batch(
    tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: x = L tokens, y = the next L, both (B, L) on tokens.device."""
    offsets = sample_offsets(len(tokens), batch_size, block_size, generator)
    return windows(tokens, offsets, block_size)


def eval_batches(
    tokens: torch.Tensor, block_size: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows over the whole split, in order, predicting each target once.

    Full windows come in batches of ``batch_size`` (the last batch may have fewer rows), then
    one shorter window (1, r) for the remaining r targets, if any.
    """
    targets = len(tokens) - 1
    full = targets // block_size
    end = full * block_size
    x = tokens[:end].view(full, block_size)
    y = tokens[1 : end + 1].view(full, block_size)
    for i in range(0, full, batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]
    if end < targets:
        yield tokens[end:-1][None], tokens[end + 1 :][None]
