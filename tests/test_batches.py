"""Random training windows and the sequential evaluation pass."""

from __future__ import annotations

import pytest
import torch

from data.batches import eval_batches, sample_batch


def batches(tokens, seed, n=3, batch_size=8, block_size=32):
    g = torch.Generator().manual_seed(seed)
    return [sample_batch(tokens, batch_size, block_size, g) for _ in range(n)]


def test_same_seed_same_batches_different_seed_different(corpus):
    tokens = corpus.tensor("train")
    a, b, c = batches(tokens, 0), batches(tokens, 0), batches(tokens, 1)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_windows_are_next_token_pairs_at_the_generator_offsets(corpus):
    tokens = corpus.tensor("train")
    g = torch.Generator().manual_seed(7)
    ix = torch.randint(len(tokens) - 32, (8,), generator=torch.Generator().manual_seed(7))
    x, y = sample_batch(tokens, 8, 32, g)
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.int64
    for row, i in enumerate(ix.tolist()):
        assert torch.equal(x[row], tokens[i : i + 32])
        assert torch.equal(y[row], tokens[i + 1 : i + 33])


def test_last_window_reaches_the_end_and_short_splits_are_refused():
    tokens = torch.arange(5)
    g = torch.Generator().manual_seed(0)
    x, y = sample_batch(tokens, 64, 4, g)  # only one window fits: offset 0
    assert torch.equal(x, tokens[:4].expand(64, 4)) and torch.equal(y, tokens[1:].expand(64, 4))
    with pytest.raises(ValueError, match="block_size"):
        sample_batch(tokens, 1, 5, g)


@pytest.mark.parametrize("n", [2, 9, 33, 97, 101])
def test_eval_pass_predicts_every_target_exactly_once(n):
    tokens = torch.arange(n) * 10
    xs, ys = [], []
    for x, y in eval_batches(tokens, block_size=4, batch_size=3):
        assert x.shape == y.shape and x.shape[0] <= 3 and x.shape[1] <= 4
        assert torch.equal(y, x + 10)  # y is x shifted by one token
        xs.append(x.flatten())
        ys.append(y.flatten())
    assert torch.equal(torch.cat(ys), tokens[1:])
    assert torch.equal(torch.cat(xs), tokens[:-1])


def test_eval_pass_over_the_real_val_split(corpus):
    tokens = corpus.tensor("val")
    shapes = [x.shape for x, _ in eval_batches(tokens, block_size=128, batch_size=64)]
    assert sum(s[0] * s[1] for s in shapes) == 111_540 - 1
    assert shapes[0] == (64, 128) and shapes[-1] == (1, (111_540 - 1) % 128)
