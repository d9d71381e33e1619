"""Many GPTs of one shape as one batched model, and AdamW over all of them at once.

Run r's parameters are row r of one flat (R, P) buffer; each parameter is a view of it shaped
(R, *shape), so linear layers become batched matmuls and the optimizer works on the whole buffer
with per-run hyperparameters as (R, 1) columns. The mathematics is core.model.GPT's and
torch.optim.AdamW's, run by run: nothing in a forward or update mixes two runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.model import GPT, TREATMENTS, max_causal_score

# The embedding norms' parameters live side by side; each run uses those its variant's norm names.
EMBED_PARAMS = {
    "embed_norm.ln_weight": ("layernorm", "embed_norm.weight"),
    "embed_norm.ln_bias": ("layernorm", "embed_norm.bias"),
    "embed_norm.rms_weight": ("rmsnorm", "embed_norm.weight"),
}
NORM_EPS = 1e-5  # nn.LayerNorm's and core.model.RMSNorm's default


@dataclass(frozen=True)
class Layout:
    """Where each parameter sits in a run's row of the flat buffer.

    Weight matrices come first, then the position table, then vectors, so that weight decay is
    two slices: [0, n_matrix) always, [n_matrix, n_decay_max) when the run decays positions.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    size: int  # P
    n_matrix: int  # elements of the decayed matrices (wte, attention and MLP weights)
    n_wpe: int  # elements of the position table

    @classmethod
    def of(cls, model: GPT) -> Layout:
        """The layout for models shaped like ``model`` (of any variant)."""
        c = model.config.n_embd
        params = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
        params = [(n, s) for n, s in params if not n.startswith("embed_norm.")]
        params += [(name, (c,)) for name in EMBED_PARAMS]
        matrices = [(n, s) for n, s in params if len(s) >= 2 and n != "wpe.weight"]
        vectors = [(n, s) for n, s in params if len(s) < 2]
        ordered = [*matrices, ("wpe.weight", tuple(model.wpe.weight.shape)), *vectors]
        offsets, total = [], 0
        for _, shape in ordered:
            offsets.append(total)
            total += math.prod(shape)
        return cls(
            names=tuple(n for n, _ in ordered),
            shapes=tuple(s for _, s in ordered),
            offsets=tuple(offsets),
            size=total,
            n_matrix=sum(math.prod(s) for _, s in matrices),
            n_wpe=model.wpe.weight.numel(),
        )

    def gpt_name(self, name: str, variant: str) -> str | None:
        """The GPT parameter a stacked one stands for in a run of ``variant`` (None: unused)."""
        if name in EMBED_PARAMS:
            norm, gpt = EMBED_PARAMS[name]
            return gpt if norm == TREATMENTS[variant].norm else None
        return name

    def row(
        self, tensors: dict[str, torch.Tensor], variant: str, fill: float | None = None
    ) -> torch.Tensor:
        """One run's flat row from GPT-named tensors (a state_dict, or AdamW moments).

        Parameters the variant lacks get ``fill``, or their initial value (gain 1, bias 0).
        """
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            gpt = self.gpt_name(name, variant)
            if gpt is not None:
                parts.append(tensors[gpt].detach().float().reshape(-1).cpu())
            else:
                value = fill if fill is not None else 0.0 if name.endswith("bias") else 1.0
                parts.append(torch.full((math.prod(shape),), value))
        return torch.cat(parts)

    def tensors(self, row: torch.Tensor, variant: str) -> dict[str, torch.Tensor]:
        """GPT-named views into one run's flat row (lm_head.weight is the tied wte.weight)."""
        by_gpt = {}
        for name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True):
            gpt = self.gpt_name(name, variant)
            if gpt is not None:
                by_gpt[gpt] = row[off : off + math.prod(shape)].view(shape)
        by_gpt["lm_head.weight"] = by_gpt["wte.weight"]
        return by_gpt


class GroupedGPT:
    """R GPTs of one shape, trained together. ``forward`` returns per-run losses (R,)."""

    def __init__(self, layout: Layout, rows: torch.Tensor, variants: list[str], n_head: int):
        self.layout = layout
        self.n_head = n_head
        self.variants = list(variants)
        self.flat = rows  # (R, P), on the device
        self.last_embed_norm: torch.Tensor | None = None  # (R,) mean first-block input norm
        self.record_attention = False  # compute attention scores (evaluation only)
        self.last_max_attn_logit: torch.Tensor | None = None  # (R,) when recorded
        self._bind()

    def _bind(self) -> None:
        R = self.flat.size(0)
        self.params = []
        self.p: dict[str, torch.Tensor] = {}
        for name, shape, off in zip(
            self.layout.names, self.layout.shapes, self.layout.offsets, strict=True
        ):
            view = self.flat[:, off : off + math.prod(shape)].view(R, *shape).requires_grad_()
            self.params.append(view)
            self.p[name] = view
        self.n_layer = sum(1 for n in self.p if n.endswith("ln_1.weight"))
        treatments = [TREATMENTS[v] for v in self.variants]
        device = self.flat.device
        norms = [t.norm for t in treatments]
        self.is_ln = torch.tensor([n == "layernorm" for n in norms], device=device).view(R, 1, 1)
        self.is_rms = torch.tensor([n == "rmsnorm" for n in norms], device=device).view(R, 1, 1)
        self.any_ln, self.any_rms = "layernorm" in norms, "rmsnorm" in norms
        # the fixed factor of a variant without a norm (1 for "none"); a norm's gain is learned
        factors = [t.scale if t.norm is None else 1.0 for t in treatments]
        self.embed_scale = torch.tensor(factors, device=device).view(R, 1, 1)
        self.any_scaled = any(f != 1.0 for f in factors)

    @property
    def n_runs(self) -> int:
        return self.flat.size(0)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the runs at indices ``keep`` (a LongTensor), in that order."""
        self.flat = self.flat.index_select(0, keep.to(self.flat.device))
        self.variants = [self.variants[i] for i in keep.tolist()]
        self._bind()

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (R, B, T) -> logits (R, B*T, vocab), loss (R,) or None."""
        p, R = self.p, self.n_runs
        _, B, T = idx.shape
        C = p["wte.weight"].size(-1)
        wte = p["wte.weight"].contiguous()
        flat_idx = idx.reshape(R, B * T, 1).expand(R, B * T, C)
        tok = torch.gather(wte, 1, flat_idx)  # (R, BT, C), backward is scatter_add
        x = (tok.view(R, B, T, C) + p["wpe.weight"][:, None, :T]).view(R, B * T, C)
        x = self._embed_norm(x)
        self.last_embed_norm = x.detach().float().norm(dim=-1).mean(dim=1)
        scores = []
        for i in range(self.n_layer):
            x = self._block(x, i, B, T, scores)
        if self.record_attention:
            self.last_max_attn_logit = torch.stack(scores).amax(dim=0)
        h = _layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
        logits = torch.bmm(h, wte.transpose(1, 2))  # tied head: (R, BT, vocab)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.reshape(R * B * T, -1).float(), targets.reshape(-1), reduction="none"
        )
        return logits, loss.view(R, B * T).mean(dim=1)

    __call__ = forward

    def _embed_norm(self, x: torch.Tensor) -> torch.Tensor:
        p, out = self.p, x
        if self.any_scaled:
            out = x * self.embed_scale
        if self.any_ln:
            ln = _layer_norm(x, p["embed_norm.ln_weight"], p["embed_norm.ln_bias"])
            out = torch.where(self.is_ln, ln, out)
        if self.any_rms:
            rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS)
            rms = rms * p["embed_norm.rms_weight"][:, None, :]
            out = torch.where(self.is_rms, rms, out)
        return out

    def _block(self, x: torch.Tensor, i: int, B: int, T: int, scores: list) -> torch.Tensor:
        p, R, C = self.p, self.n_runs, x.size(-1)
        pre = f"blocks.{i}."
        h = _layer_norm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        qkv = _linear(h, p[pre + "attn.c_attn.weight"], p[pre + "attn.c_attn.bias"])
        q, k, v = (
            t.reshape(R * B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (RB, nh, T, hs)
            for t in qkv.split(C, dim=2)
        )
        if self.record_attention:  # per run: (R, B*nh, T, hs) -> (R,)
            qr, kr = (t.reshape(R, B * self.n_head, T, -1) for t in (q, k))
            scores.append(max_causal_score(qr, kr, keep=1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(R, B * T, C)
        x = x + _linear(y, p[pre + "attn.c_proj.weight"], p[pre + "attn.c_proj.bias"])
        h = _layer_norm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        h = F.gelu(_linear(h, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"]))
        return x + _linear(h, p[pre + "mlp.c_proj.weight"], p[pre + "mlp.c_proj.bias"])


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-run nn.Linear: x (R, N, in), weight (R, out, in), bias (R, out) -> (R, N, out)."""
    # A run's row is contiguous but runs are P apart: BLAS wants the (R, out, in) block dense.
    return torch.baddbmm(bias[:, None, :], x, weight.contiguous().transpose(1, 2))


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-run nn.LayerNorm over the last dimension: x (R, N, C), weight and bias (R, C)."""
    return torch.addcmul(
        bias[:, None, :], F.layer_norm(x, x.shape[-1:], eps=NORM_EPS), weight[:, None, :]
    )


class GroupedAdamW:
    """torch.optim.AdamW (decoupled weight decay) over a flat (R, P) buffer, per-run settings.

    ``step`` takes this step's per-run scalars, computed on the host in float64 as PyTorch does:
    lr, step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t). Runs whose ``ok`` is False
    are left exactly as they were (as the engine skips the step of a non-finite run).
    """

    def __init__(self, model: GroupedGPT, hyper: torch.Tensor, exp_avg=None, exp_avg_sq=None):
        # hyper (R, 6): beta1, beta2, eps, weight_decay, decay_position_embedding, grad_clip
        self.model = model
        self.hyper = hyper.to(model.flat.device)
        self.exp_avg = torch.zeros_like(model.flat) if exp_avg is None else exp_avg
        self.exp_avg_sq = torch.zeros_like(model.flat) if exp_avg_sq is None else exp_avg_sq

    def select(self, keep: torch.Tensor) -> None:
        keep = keep.to(self.hyper.device)
        self.hyper = self.hyper.index_select(0, keep)
        self.exp_avg = self.exp_avg.index_select(0, keep)
        self.exp_avg_sq = self.exp_avg_sq.index_select(0, keep)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, scalars: torch.Tensor, ok: torch.Tensor) -> None:
        """grad (R, P); scalars (3, R): lr, step_size, bc2_sqrt; ok (R,) bool."""
        beta1, beta2, eps, wd, decay_wpe = (c[:, None] for c in self.hyper.T[:5])
        lr, step_size, bc2_sqrt = (c[:, None] for c in scalars)
        keep = ok[:, None]
        p, m, v = self.model.flat, self.exp_avg, self.exp_avg_sq
        grad = torch.where(keep, grad, 0.0)
        nm, nw = self.model.layout.n_matrix, self.model.layout.n_wpe
        p[:, :nm].mul_(torch.where(keep, 1 - lr * wd, 1.0))
        p[:, nm : nm + nw].mul_(torch.where(keep, 1 - lr * wd * decay_wpe, 1.0))
        m.lerp_(grad, torch.where(keep, 1 - beta1, 0.0))
        v.mul_(torch.where(keep, beta2, 1.0)).addcmul_(grad, grad * (1 - beta2))
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        p.addcdiv_(m * torch.where(keep, -step_size, 0.0), denom)


def grad_norms(grads: list[torch.Tensor], n_runs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat (R, P) gradient and each run's total L2 norm (R,), as clip_grad_norm_ sees it."""
    flat = torch.cat([g.reshape(n_runs, -1) for g in grads], dim=1)
    return flat, torch.linalg.vector_norm(flat, dim=1)


def clip_(grad: torch.Tensor, norm: torch.Tensor, max_norm: torch.Tensor) -> None:
    """Per-run clip_grad_norm_ (max_norm 0 = off), in place on the flat (R, P) gradient."""
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    grad.mul_(torch.where(max_norm > 0, coef, 1.0)[:, None])
