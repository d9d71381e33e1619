"""A small decoder-only Pre-LN GPT whose embeddings can be normalized before the first block.

References: GPT-2 (Radford et al. 2019) and karpathy/nanoGPT's model.py. The one addition is
``embed_norm``, the embedding treatment: "none" feeds token + position embedding to the first block
as GPT-2 does; "layernorm" or "rmsnorm" normalizes that sum first. Three controls separate scale
from normalization: "scaled" multiplies the sum by a fixed 1/(σ√2), so it starts at unit RMS per
coordinate as after a norm, without normalizing; "layernorm-small" and "rmsnorm-small" normalize
with a gain that starts at σ√2, the baseline's scale, so they normalize without rescaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.spec import VARIANTS, RunSpec

EMBED_STD = 0.02  # init std of the token and position tables (GPT-2)
EMBED_RMS = EMBED_STD * math.sqrt(2)  # RMS of the sum of the two tables at init


@dataclass(frozen=True)
class EmbedTreatment:
    """What a variant does to the embedding sum: an optional norm, and a scale."""

    norm: str | None  # "layernorm" | "rmsnorm" | None
    scale: float  # the norm's initial gain; without a norm, a fixed factor


TREATMENTS = {
    "none": EmbedTreatment(None, 1.0),
    "layernorm": EmbedTreatment("layernorm", 1.0),
    "rmsnorm": EmbedTreatment("rmsnorm", 1.0),
    "scaled": EmbedTreatment(None, 1.0 / EMBED_RMS),
    "layernorm-small": EmbedTreatment("layernorm", EMBED_RMS),
    "rmsnorm-small": EmbedTreatment("rmsnorm", EMBED_RMS),
}
assert tuple(TREATMENTS) == VARIANTS


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65  # tiny Shakespeare's characters; always taken from the data
    block_size: int = 128  # context length
    n_layer: int = 8
    n_head: int = 8
    n_embd: int = 128  # 8 heads of 16 dimensions
    dropout: float = 0.0  # the protocol trains without dropout
    embed_norm: str = "none"  # the embedding treatment: a key of TREATMENTS

    @classmethod
    def from_spec(cls, spec: RunSpec, vocab_size: int) -> GPTConfig:
        return cls(
            vocab_size=vocab_size,
            block_size=spec.block_size,
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            n_embd=spec.n_embd,
            dropout=spec.dropout,
            embed_norm=spec.variant,
        )


class RMSNorm(nn.Module):
    """Root-mean-square normalization with a learned gain (Zhang & Sennrich 2019)."""

    def __init__(self, ndim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Scale(nn.Module):
    """Multiplication by a fixed factor (no parameters)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def make_embed_norm(kind: str, ndim: int) -> nn.Module:
    """The module applied to the embedding sum; a norm's gain is set by ``GPT.init_weights``."""
    treatment = TREATMENTS[kind]
    if treatment.norm == "layernorm":
        return nn.LayerNorm(ndim)
    if treatment.norm == "rmsnorm":
        return RMSNorm(ndim)
    return nn.Identity() if treatment.scale == 1.0 else Scale(treatment.scale)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

        self.max_score: torch.Tensor | None = None  # set by forward when record_scores is on
        self.record_scores = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.record_scores:  # evaluation only: training keeps the fused kernel alone
            self.max_score = max_causal_score(q, k)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))


def max_causal_score(q: torch.Tensor, k: torch.Tensor, keep: int = 0) -> torch.Tensor:
    """The largest pre-softmax score q·k/sqrt(hs) a query gives a key it may attend to.

    q, k (..., T, hs) -> the maximum over all but the first ``keep`` dimensions (a float tensor
    of shape q.shape[:keep]).
    """
    T, hs = q.size(-2), q.size(-1)
    future = torch.full((T, T), -math.inf, device=q.device).triu(1)  # keys after the query
    qs, ks = q.reshape(-1, T, hs), k.reshape(-1, T, hs)
    scores = torch.baddbmm(  # (N, T, T), the mask added in the same pass
        future.to(q.dtype).expand(qs.size(0), T, T), qs, ks.transpose(1, 2), alpha=hs**-0.5
    )
    return scores.view(*q.shape[:keep], -1).float().amax(dim=-1)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, generator: torch.Generator | None = None):
        super().__init__()
        check_config(config)
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embedding
        self.embed_norm = make_embed_norm(config.embed_norm, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embedding
        # Mean L2 norm of the first block's input over the last forward's positions (no sync).
        self.last_embed_norm: torch.Tensor | None = None
        # Largest attention score of the last forward, when ``record_attention(True)`` is on.
        self.last_max_attn_logit: torch.Tensor | None = None
        self.init_weights(generator)

    def record_attention(self, on: bool) -> None:
        """Compute every layer's attention scores in forward (slower; for evaluation)."""
        for block in self.blocks:
            block.attn.record_scores = on
        self.last_max_attn_logit = None

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """GPT-2 initialization, drawn from ``generator`` in a fixed order.

        Norm gains and biases hold no randomness, so every embedding variant built from the
        same generator state gets identical values for all the parameters the variants share.
        """
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled as in GPT-2
                std = EMBED_STD / math.sqrt(2 * self.config.n_layer)
                torch.nn.init.normal_(p, mean=0.0, std=std, generator=generator)
            elif p.dim() == 2:  # linear weights and the embedding tables
                torch.nn.init.normal_(p, mean=0.0, std=EMBED_STD, generator=generator)
            elif name.endswith("bias"):
                torch.nn.init.zeros_(p)
            elif name.startswith("embed_norm."):  # the variant's initial gain
                torch.nn.init.constant_(p, TREATMENTS[self.config.embed_norm].scale)
            else:  # norm gains
                torch.nn.init.ones_(p)

    def n_params(self) -> int:
        """Trainable parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(
                f"sequence of {T} tokens exceeds the context of {self.config.block_size}"
            )
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.embed_norm(self.wte(idx) + self.wpe(pos))  # (B, T, C): the first block's input
        self.last_embed_norm = x.detach().float().norm(dim=-1).mean()
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        if self.blocks[0].attn.record_scores:
            self.last_max_attn_logit = torch.stack([b.attn.max_score for b in self.blocks]).max()
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))
        return logits, loss


def check_config(config: GPTConfig) -> None:
    """Refuse a configuration that cannot work, with a one-line reason."""
    for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    if config.n_embd % config.n_head:
        raise ValueError(f"width {config.n_embd} is not divisible by {config.n_head} heads")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    if config.embed_norm not in TREATMENTS:
        raise ValueError(
            f"unknown embedding variant {config.embed_norm!r}: choose one of {', '.join(VARIANTS)}"
        )
