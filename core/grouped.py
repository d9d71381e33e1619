"""Train the runs of a study together as one batched model (core.grouped_model).

Same mathematics and same events as core.engine.train, run by run: each run starts from the
engine's initialization, draws its batches from its own generator, follows its own schedule and
AdamW settings, and is cancelled, diverges or finishes on its own; its checkpoints are the
engine's format, so a run can move between the two engines.

On CUDA a step never waits for the device: per-step values stay on the GPU and are read back
every ``LOG_EVERY_CUDA`` steps (and before an evaluation, a checkpoint or a cancel), which is
when their StepLogged events go out. A run that diverges there has had its later updates
skipped on the device, so it ends exactly as it would have on its own. The step is captured in
a CUDA graph when that works (checked against an eager step once; when the check fails the
group trains eagerly and says so with a RuntimeWarning; ``LABTUI_CUDA_GRAPHS=0`` turns graphs
off); everything else is plain eager PyTorch, which is what runs on the CPU.
"""

from __future__ import annotations

import copy
import os
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from core.device import (
    apply_precision,
    autocast_for,
    device_name,
    resolve_device,
    resolve_precision,
)
from core.engine import build_model, derive_seed, make_optimizer
from core.events import EventSink, RunResult, SinkError
from core.grouped_model import GroupedAdamW, GroupedGPT, Layout, clip_, grad_norms
from core.ledger import RunLedger, error_line
from core.metrics import EVAL_BATCH_SIZE, Totals
from core.spec import RunSpec
from core.status import RunStatus
from data import Corpus
from data.batches import eval_batches, sample_offsets, windows

# Fields every run of a group must share: they fix the tensors' shapes and the step schedule.
GROUP_FIELDS = (
    "n_layer", "n_embd", "n_head", "block_size", "batch_size", "iters", "eval_interval",
    "checkpoint_interval", "device", "precision",
)  # fmt: skip
LOG_EVERY_CUDA = 25  # steps between host synchronizations on CUDA
GRAPH_WARMUP = 3  # eager steps before a CUDA graph capture
# How closely a graph replay must match the eager step (relative to the step's change): a bad
# capture (a stale input, a missing op) is off by O(1); a sound one only by summation order,
# which bf16 outputs (one rounding step 2^-8 = 4e-3) can turn into a few rounding steps.
GRAPH_CHECK_RTOL = {"bf16": 3e-2}  # others: 1e-3


@dataclass(frozen=True)
class GroupJob:
    """One run of a group: its id, spec, and the engine checkpoint to resume from (or None)."""

    run_id: str
    spec: RunSpec
    resume: dict[str, Any] | None = field(default=None, repr=False)


def group_key(spec: RunSpec) -> tuple | None:
    """Runs with equal keys can train as one group; None for a run that cannot (dropout)."""
    if spec.dropout != 0.0:
        return None
    return tuple(getattr(spec, name) for name in GROUP_FIELDS)


def can_group(specs: Sequence[RunSpec]) -> bool:
    keys = {group_key(s) for s in specs}
    return len(keys) == 1 and None not in keys


def default_grouping(device: str = "auto") -> bool:
    """Whether grouping is the faster path on ``device``: on CUDA yes, on a CPU (or MPS) no.

    A CPU is already bound by arithmetic at batch 16, so batching runs only adds copies
    (see benchmarks/README.md for the measurements).
    """
    try:
        return resolve_device(device).startswith("cuda")
    except RuntimeError:
        return False


def train_group(
    jobs: Sequence[GroupJob | tuple],
    corpus: Corpus,
    on_event: EventSink | None = None,
    stops: dict[str, threading.Event] | None = None,
    *,
    log_every: int | None = None,
) -> list[RunResult]:
    """Train ``jobs`` (GroupJob or (run_id, spec, resume) tuples); results in the jobs' order.

    Events are core.engine.train's, per run. Runs that cannot share a group (different shapes,
    or resumed at different steps) train in successive groups. Never raises for a run's failure;
    a failure of ``on_event`` is raised as SinkError. ``log_every``: steps between read-backs
    (default LOG_EVERY_CUDA on CUDA, 1 elsewhere).
    """
    emit = on_event or (lambda event: None)
    stops = stops or {}
    jobs = [job if isinstance(job, GroupJob) else GroupJob(*job) for job in jobs]
    if len({job.run_id for job in jobs}) != len(jobs):
        raise ValueError("run ids in a group must be unique")
    groups: dict[tuple, list[_Member]] = {}
    members = []
    for job in jobs:
        member = _Member(job, corpus, RunLedger(job.run_id, job.spec, emit))
        member.stop = stops.get(job.run_id) or threading.Event()
        members.append(member)
        try:
            member.prepare()
        except SinkError:
            raise
        except Exception as err:  # a bad checkpoint fails that run alone, as in the engine
            member.ledger.fail(err)
            continue
        key = (group_key(job.spec) or ("single", job.run_id), member.ledger.step)
        groups.setdefault(key, []).append(member)
    for group in groups.values():
        _Group(group, corpus, log_every).train()
    return [m.ledger.result for m in members]


class _Member:
    """One run inside a group: its ledger, its random streams and its optimizer's layout."""

    def __init__(self, job: GroupJob, corpus: Corpus, ledger: RunLedger):
        self.run_id, self.spec, self.resume = job.run_id, job.spec, job.resume
        self.corpus, self.ledger = corpus, ledger
        self.stop = threading.Event()
        self.adam_steps = 0  # AdamW's step count when the group starts

    def prepare(self) -> None:
        """Build the engine's model and optimizer for this run and load its checkpoint."""
        spec = self.spec
        self.device = self.ledger.device = resolve_device(spec.device)
        self.ledger.precision = resolve_precision(spec.precision, self.device)
        self.template = build_model(spec, self.corpus.vocab_size)
        self.ledger.n_params = self.template.n_params()
        optimizer = make_optimizer(self.template, spec, "cpu")
        names = {id(p): n for n, p in self.template.named_parameters()}
        self.opt_names = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
        self.opt_groups = optimizer.state_dict()["param_groups"]
        for group in self.opt_groups:  # the engine's optimizer on CUDA is the fused one
            group["fused"] = True if self.device.startswith("cuda") else group.get("fused")
        self.model_keys = list(self.template.state_dict())
        self.batches = torch.Generator().manual_seed(derive_seed(spec.seed, "batches"))
        self.rng_torch = torch.Generator().manual_seed(derive_seed(spec.seed, "dropout"))
        self.moments: tuple[dict, dict] | None = None
        if self.resume is not None:
            self.load_state(self.resume, optimizer)
        self.template.requires_grad_(False)

    def load_state(self, state: dict[str, Any], optimizer: torch.optim.AdamW) -> None:
        self.ledger.restore(state)  # checks that the checkpoint is this spec's
        self.template.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        params = dict(self.template.named_parameters())
        moments = [optimizer.state.get(params[n], {}) for n in self.opt_names]
        if moments and "step" in moments[0]:
            self.adam_steps = int(moments[0]["step"])
            self.moments = (
                {n: s["exp_avg"] for n, s in zip(self.opt_names, moments, strict=True)},
                {n: s["exp_avg_sq"] for n, s in zip(self.opt_names, moments, strict=True)},
            )
        self.batches.set_state(state["rng_batches"])
        self.rng_torch.set_state(state["rng_torch"])

    def state(
        self, row: torch.Tensor, m: torch.Tensor, v: torch.Tensor, layout: Layout, group_start: int
    ) -> dict[str, Any]:
        """The engine's checkpoint format, from this run's rows of the group's CPU buffers."""
        variant, step = self.spec.variant, self.ledger.step
        weights = layout.tensors(row, variant)
        adam_t = self.adam_steps + step - group_start
        optimizer: dict[str, Any] = {"state": {}, "param_groups": copy.deepcopy(self.opt_groups)}
        for group in optimizer["param_groups"]:
            group["lr"] = self.spec.lr_at(step - 1) if step else self.spec.lr
        if adam_t > 0:
            ms, vs = layout.tensors(m, variant), layout.tensors(v, variant)
            for i, name in enumerate(self.opt_names):
                optimizer["state"][i] = {
                    "step": torch.tensor(float(adam_t), dtype=torch.float32),
                    "exp_avg": ms[name].clone(),
                    "exp_avg_sq": vs[name].clone(),
                }
        tensors = {
            "model": {k: weights[k].clone() for k in self.model_keys},
            "optimizer": optimizer,
            "rng_batches": self.batches.get_state(),
            "rng_torch": self.rng_torch.get_state(),
        }
        if self.device.startswith("cuda"):
            tensors["rng_cuda"] = torch.cuda.get_rng_state(torch.device(self.device))
        return self.ledger.state(**tensors)


@dataclass
class _Logged:
    """One step launched but not yet reported: its device values (4, R) and its run order."""

    step: int
    values: torch.Tensor
    members: list[_Member]


class _Group:
    """Runs sharing every shape, trained in lockstep; runs leave when they end."""

    def __init__(self, members: list[_Member], corpus: Corpus, log_every: int | None = None):
        self.members, self.corpus = members, corpus
        self.spec = members[0].spec  # the shared fields come from here
        self.rules = members[0].ledger  # the shared eval / checkpoint rules
        self.start = members[0].ledger.step
        self.device = members[0].device
        self.precision = members[0].ledger.precision
        self.cuda = self.device.startswith("cuda")
        self.log_every = log_every or (LOG_EVERY_CUDA if self.cuda else 1)
        self.use_graphs = self.cuda and os.environ.get("LABTUI_CUDA_GRAPHS", "1") != "0"
        self.pending: list[_Logged] = []
        self.window_t = time.perf_counter()
        self.graph: _StepGraph | None = None
        self.eager_steps = 0  # since the group last changed (CUDA graph warm-up)

    # -- set-up and membership -------------------------------------------------------------

    def build(self) -> None:
        spec, device = self.spec, self.device
        apply_precision(self.precision, device)
        self.eval_autocast = autocast_for(self.precision, device)
        self.step_autocast = autocast_for(self.precision, device, cache=False)
        self.train_tokens = self.corpus.tensor("train", device)
        self.val_tokens = self.corpus.tensor("val", device)
        self.layout = Layout.of(self.members[0].template)
        rows, ms, vs, hyper = [], [], [], []
        for m in self.members:
            variant = m.spec.variant
            rows.append(self.layout.row(m.template.state_dict(), variant))
            if m.moments is not None:
                ms.append(self.layout.row(m.moments[0], variant, fill=0.0))
                vs.append(self.layout.row(m.moments[1], variant, fill=0.0))
            else:
                ms.append(torch.zeros(self.layout.size))
                vs.append(torch.zeros(self.layout.size))
            hyper.append(_hyper(m.spec))
            m.template = None  # the rows hold the weights now
        self.model = GroupedGPT(
            self.layout,
            torch.stack(rows).to(device),
            [m.spec.variant for m in self.members],
            spec.n_head,
        )
        self.optimizer = GroupedAdamW(
            self.model,
            torch.tensor(hyper, dtype=torch.float32),
            torch.stack(ms).to(device),
            torch.stack(vs).to(device),
        )
        self.clipping = any(m.spec.grad_clip > 0 for m in self.members)
        self.alive = torch.ones(len(self.members), dtype=torch.bool, device=device)
        self.scalars = self._scalar_table().to(device)

    def _scalar_table(self) -> torch.Tensor:
        """(steps, 3, R): each step's lr, AdamW step size and sqrt bias correction, in float64."""
        table = []
        for s in range(self.start + 1, self.spec.iters + 1):
            row = []
            for m in self.members:
                lr, b1, b2 = m.spec.lr_at(s - 1), m.spec.beta1, m.spec.beta2
                t = m.adam_steps + s - self.start
                row.append((lr, lr / (1 - b1**t), (1 - b2**t) ** 0.5))
            table.append(list(zip(*row, strict=True)))
        return torch.tensor(table, dtype=torch.float64).float().reshape(-1, 3, len(self.members))

    def drop(self, leaving: list[_Member]) -> None:
        """Take runs out of the group; the others' tensors are untouched apart from a copy."""
        if not leaving:
            return
        keep = [i for i, m in enumerate(self.members) if m not in leaving]
        self.members = [self.members[i] for i in keep]
        if not self.members:
            return
        index = torch.tensor(keep, device=self.device)
        self.model.select(index)
        self.optimizer.select(index)
        self.alive = self.alive.index_select(0, index)
        self.scalars = self.scalars.index_select(2, index)
        self.clipping = any(m.spec.grad_clip > 0 for m in self.members)
        self.graph = None
        self.eager_steps = 0

    # -- the loop ----------------------------------------------------------------------------

    def train(self) -> None:
        try:
            self.build()
            for m in self.members:
                m.ledger.start(
                    self.device, device_name(self.device), m.ledger.n_params, self.precision
                )
            self.loop()
        except SinkError:
            raise
        except Exception as err:  # the group's failure is each remaining run's failure
            for m in self.members:
                if not m.ledger.ended:
                    m.ledger.fail(err)

    def loop(self) -> None:
        for step in range(self.start + 1, self.spec.iters + 1):
            self.cancel_stopped()
            if not self.members:
                return
            self.launch(step)
            at_eval, at_ckpt = self.rules.eval_due(step), self.rules.checkpoint_due(step)
            if at_eval or at_ckpt or len(self.pending) >= self.log_every:
                self.flush()
            if at_eval and self.members:
                self.log_eval()
            if at_ckpt and self.members:
                for m, state in zip(self.members, self.states(), strict=True):
                    m.ledger.save(state)
        self.flush()
        if self.members:
            for m, metrics in zip(self.members, self.log_eval(), strict=True):
                m.ledger.final = metrics
            for m, state in zip(self.members, self.states(), strict=True):
                m.ledger.save(state, final=True)
            for m in self.members:
                m.ledger.finish(RunStatus.FINISHED)

    def cancel_stopped(self) -> None:
        if not any(m.stop.is_set() for m in self.members):
            return
        self.flush()  # a run that diverged meanwhile ends as diverged, not cancelled
        stopped = [m for m in self.members if m.stop.is_set()]
        for m, state in zip(self.members, self.states(), strict=True):
            if m in stopped:
                m.ledger.save(state)
                m.ledger.finish(RunStatus.CANCELLED)
        self.drop(stopped)

    def launch(self, step: int) -> None:
        """Run one training step for every run; its values are read back by ``flush``."""
        spec = self.spec
        if not self.pending:
            self.window_t = time.perf_counter()
        n = len(self.train_tokens)
        offsets = torch.stack(
            [sample_offsets(n, spec.batch_size, spec.block_size, m.batches) for m in self.members]
        )
        if self.cuda:
            offsets = offsets.pin_memory().to(self.device, non_blocking=True)
        scalars = self.scalars[step - self.start - 1]
        if self.use_graphs and self.graph is None and self.eager_steps >= GRAPH_WARMUP:
            self.graph, values = _StepGraph.capture(self, offsets, scalars)
            self.use_graphs = self.graph is not None
        elif self.graph is not None:
            values = self.graph.replay(offsets, scalars)
        elif self.use_graphs:  # warm-up before capture, on a side stream as PyTorch advises
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                values = self.step_values(offsets, scalars)
            torch.cuda.synchronize(self.device)
            self.eager_steps += 1
        else:
            values = self.step_values(offsets, scalars)
        self.pending.append(_Logged(step, values, list(self.members)))

    def step_values(self, offsets: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """Forward, backward, clip and update all runs.

        Returns (4, R): loss, grad norm, embed norm and max |logit| of each run's step.
        """
        x, y = windows(self.train_tokens, offsets, self.spec.block_size)  # (R, B, T)
        with self.step_autocast:
            logits, loss = self.model(x, y)
        params = self.model.params  # norm gains no run of the group uses get no gradient
        grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]
        with torch.no_grad():
            grad, norm = grad_norms(grads, self.model.n_runs)
            if self.clipping:
                clip_(grad, norm, self.optimizer.hyper[:, 5])
            ok = self.alive & torch.isfinite(loss) & torch.isfinite(norm)
            self.optimizer.step(grad, scalars, ok)
            self.alive.copy_(ok)
            max_logit = logits.detach().abs().flatten(1).amax(dim=1).float()
            return torch.stack([loss.detach().float(), norm, self.model.last_embed_norm, max_logit])

    def flush(self) -> None:
        """Read back the launched steps (one synchronization), report them, end diverged runs."""
        if not self.pending:
            return
        values = torch.stack([p.values for p in self.pending]).cpu().tolist()
        now = time.perf_counter()
        dt = (now - self.window_t) / len(self.pending)
        diverged: list[_Member] = []
        for i, (logged, columns) in enumerate(zip(self.pending, values, strict=True)):
            at = self.window_t + dt * (i + 1)
            for r, m in enumerate(logged.members):
                if m.ledger.ended:
                    continue  # diverged earlier in this window
                loss, norm, embed, max_logit = (column[r] for column in columns)
                if not m.ledger.log_step(logged.step, loss, norm, embed, max_logit, dt, now=at):
                    m.ledger.diverge()
                    diverged.append(m)
        self.pending.clear()
        self.drop(diverged)

    # -- evaluation and checkpoints ----------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """core.metrics.evaluate for every run, in batched forward passes over the same windows."""
        R, vocab = self.model.n_runs, self.corpus.vocab_size
        totals = [Totals(vocab, self.val_tokens.device) for _ in range(R)]
        try:
            batches = eval_batches(self.val_tokens, self.spec.block_size, EVAL_BATCH_SIZE)
            for i, (x, y) in enumerate(batches):
                self.model.record_attention = i == 0  # max_attn_logit: the first batch
                with self.eval_autocast:
                    logits, _ = self.model(x.expand(R, *x.shape))
                logits = logits.view(R, *x.shape, vocab)
                embed, attn = self.model.last_embed_norm, self.model.last_max_attn_logit
                for r in range(R):
                    totals[r].add(logits[r], y, embed[r], attn[r] if i == 0 else None)
        finally:
            self.model.record_attention = False
        return [t.metrics() for t in totals]

    def log_eval(self) -> list[dict[str, float]]:
        all_metrics = self.evaluate()
        for m, metrics in zip(self.members, all_metrics, strict=True):
            m.ledger.log_eval(metrics)
        return all_metrics

    def states(self) -> list[dict[str, Any]]:
        """Every run's engine-format checkpoint, from one copy of the group's buffers."""
        rows = self.model.flat.detach().cpu()
        m, v = self.optimizer.exp_avg.cpu(), self.optimizer.exp_avg_sq.cpu()
        return [
            member.state(rows[r], m[r], v[r], self.layout, self.start)
            for r, member in enumerate(self.members)
        ]


def _hyper(s: RunSpec) -> list[float]:
    """A run's constant AdamW settings, the columns of GroupedAdamW.hyper."""
    return [s.beta1, s.beta2, s.eps, s.weight_decay, float(s.decay_position_embedding),
            s.grad_clip]  # fmt: skip


class _StepGraph:
    """The training step captured in a CUDA graph, with static inputs and output."""

    def __init__(self, graph: torch.cuda.CUDAGraph, offsets, scalars, values):
        self.graph, self.offsets, self.scalars, self.values = graph, offsets, scalars, values

    def replay(self, offsets: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        self.offsets.copy_(offsets, non_blocking=True)
        self.scalars.copy_(scalars, non_blocking=True)
        self.graph.replay()
        return self.values.clone()

    @classmethod
    def record(cls, group: _Group, offsets: torch.Tensor, scalars: torch.Tensor) -> _StepGraph:
        """Capture ``group``'s step on static copies of its inputs (capturing runs nothing)."""
        torch.cuda.synchronize(group.device)
        static_off, static_scal = offsets.clone(), scalars.clone()
        graph = torch.cuda.CUDAGraph()
        # "thread_local": the console captures in its worker thread while its UI thread may make
        # CUDA calls of its own; in "global" mode the console's capture failed on an H200.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            values = group.step_values(static_off, static_scal)
        return cls(graph, static_off, static_scal, values)

    @classmethod
    def capture(
        cls, group: _Group, offsets: torch.Tensor, scalars: torch.Tensor
    ) -> tuple[_StepGraph | None, torch.Tensor]:
        """Capture, then check one replay against the eager step from the same state.

        Returns (graph, this step's values), or (None, eager values) when capture or replay
        fails or disagrees; the group's tensors are then exactly as the eager step left them,
        and the group stays eager.
        """
        buffers = [
            group.model.flat,
            group.optimizer.exp_avg,
            group.optimizer.exp_avg_sq,
            group.alive,
        ]
        before = [b.clone() for b in buffers]
        rtol = GRAPH_CHECK_RTOL.get(group.precision, 1e-3)
        try:
            graph = cls.record(group, offsets, scalars)
            eager = group.step_values(offsets, scalars)
            after = [b.clone() for b in buffers]
            for b, saved in zip(buffers, before, strict=True):
                b.copy_(saved)
            values = graph.replay(offsets, scalars)
            if not torch.allclose(values, eager, rtol=rtol, atol=1e-6, equal_nan=True):
                raise RuntimeError("graph replay's values differ from the eager step's")
            for b, eager_b, old in zip(buffers, after, before, strict=True):
                if not _same_step(b, eager_b, old, rtol):
                    raise RuntimeError("graph replay's update differs from the eager step's")
            return graph, values
        except Exception as err:
            for b, saved in zip(buffers, before, strict=True):
                b.copy_(saved)
            if group.cuda:  # slower, not wrong: say so once rather than fail the runs
                message = f"grouped training goes on without a CUDA graph: {error_line(err)}"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            return None, group.step_values(offsets, scalars)


def _same_step(
    replayed: torch.Tensor, eager: torch.Tensor, before: torch.Tensor, rtol: float
) -> bool:
    """Whether ``replayed`` is ``eager`` to ``rtol`` of the change the eager step made.

    Non-finite entries (a diverged run's rows) must be non-finite in both; a bool buffer
    must be equal.
    """
    if replayed.dtype == torch.bool:
        return torch.equal(replayed, eager)
    finite = torch.isfinite(eager)
    if not torch.equal(finite, torch.isfinite(replayed)):
        return False
    finite &= torch.isfinite(before)
    diff = torch.where(finite, replayed - eager, 0.0)
    change = torch.where(finite, eager - before, 0.0)
    return bool(torch.linalg.vector_norm(diff) <= rtol * torch.linalg.vector_norm(change))
