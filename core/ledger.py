"""The run ledger: one run's bookkeeping, whatever trains it.

A RunLedger holds what a run has done so far (steps, best validation loss, time, the per-step
loss and gradient norm its stability metrics come from), builds its events and its result, and
owns the rules for when to evaluate and checkpoint and what a checkpoint carries besides
weights. The engine, the grouped engine, the runner and the Ray executor all use it, so a run's
RunResult is built the same way whether it finished, diverged, was cancelled, failed, or was cut
short by a dead worker.

A ledger either *drives* a run (it has an ``emit`` and sends the events it builds) or *observes*
one (no ``emit``: ``observe`` is fed the events that arrive from elsewhere, as the runner and the
Ray driver do). Both paths update the same state through ``observe``.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Any

from core.events import (
    CheckpointSaved,
    EvalLogged,
    Event,
    EventSink,
    RunFinished,
    RunResult,
    RunStarted,
    SinkError,
    StepLogged,
)
from core.metrics import stability
from core.spec import RunSpec
from core.status import RunStatus


class RunLedger:
    """One run's progress, events, checkpoint bookkeeping and result."""

    def __init__(self, run_id: str, spec: RunSpec, emit: EventSink | None = None):
        self.run_id, self.spec, self.emit = run_id, spec, emit
        self.device = spec.device
        self.precision = spec.precision
        self.n_params = 0
        self.step = 0  # optimizer steps completed
        self.best_val_loss: float | None = None
        self.grad_norm: float | None = None  # of the last step
        self.losses: list[float] = []  # per step, from step 1 (stability metrics)
        self.grad_norms: list[float] = []
        self.final: dict[str, float] = {}  # the final evaluation's metrics
        self.result: RunResult | None = None
        self.started = False  # a RunStarted was built or seen
        self.elapsed_s = 0.0  # as of the last event (a driving ledger also has a live clock)
        self._base_s = 0.0  # time spent before this start (a resumed run's earlier time)
        self._t0: float | None = None

    @classmethod
    def observing(
        cls, run_id: str, spec: RunSpec, resume: dict[str, Any] | None = None
    ) -> RunLedger:
        """A ledger fed with a run's events from elsewhere, from its checkpoint's progress."""
        ledger = cls(run_id, spec)
        if resume is not None:
            ledger.restore(resume)
        return ledger

    @property
    def tokens_per_step(self) -> int:
        return self.spec.batch_size * self.spec.block_size

    @property
    def ended(self) -> bool:
        return self.result is not None

    # -- the rules -----------------------------------------------------------------------------

    def eval_due(self, step: int) -> bool:
        """A validation pass after ``step`` (the final one is not "due": it always happens)."""
        every = self.spec.eval_interval
        return step < self.spec.iters and every > 0 and step % every == 0

    def checkpoint_due(self, step: int) -> bool:
        """A resumable checkpoint after ``step`` (the final model is saved regardless)."""
        every = self.spec.checkpoint_interval
        return step < self.spec.iters and every > 0 and step % every == 0

    def elapsed(self, now: float | None = None) -> float:
        """Training wall time so far, including a resumed run's earlier time."""
        if self._t0 is None:
            return self.elapsed_s
        return self._base_s + (time.perf_counter() if now is None else now) - self._t0

    # -- checkpoints ---------------------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        """Take the progress of an engine checkpoint (weights are the engine's to load)."""
        if RunSpec.from_dict(state["spec"]).key() != self.spec.key():
            raise ValueError("checkpoint belongs to a different run spec")
        self.step = int(state["step"])
        self.best_val_loss = state["best_val_loss"]
        self.grad_norm = state["grad_norm"]
        self.elapsed_s = self._base_s = float(state["elapsed_s"])
        history = state.get("history") or {}  # checkpoints before stability metrics had none
        self.losses = list(history.get("loss", []))[: self.step]
        self.grad_norms = list(history.get("grad_norm", []))[: self.step]

    def state(self, **tensors: Any) -> dict[str, Any]:
        """An engine checkpoint: this ledger's progress plus the engine's ``tensors``
        (model, optimizer, rng_batches, rng_torch, and rng_cuda on CUDA)."""
        return {
            "spec": self.spec.to_dict(),
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "elapsed_s": self.elapsed(),
            "grad_norm": self.grad_norm,
            "history": {"loss": list(self.losses), "grad_norm": list(self.grad_norms)},
            **tensors,
        }

    # -- driving a run: build an event, observe it, send it --------------------------------------

    def start(self, device: str, device_name: str, n_params: int, precision: str) -> None:
        self._base_s, self._t0 = self.elapsed_s, time.perf_counter()
        self._send(
            RunStarted(
                self.run_id,
                self.spec,
                device,
                device_name,
                n_params,
                start_step=self.step,
                precision=precision,
            )
        )

    def log_step(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        embed_norm: float,
        max_logit: float,
        seconds: float,
        now: float | None = None,
    ) -> bool:
        """Report step ``step`` (``seconds``: its duration); False when it was not finite."""
        self._send(
            StepLogged(
                self.run_id,
                step,
                step * self.tokens_per_step,
                loss,
                grad_norm,
                embed_norm,
                self.spec.lr_at(step - 1),
                self.tokens_per_step / max(seconds, 1e-9),
                self.elapsed(now),
                max_logit,
            )
        )
        return math.isfinite(loss) and math.isfinite(grad_norm)

    def log_eval(self, metrics: dict[str, float]) -> None:
        """Report a validation pass at the current step (``core.metrics.evaluate``'s dict)."""
        self._send(
            EvalLogged(
                self.run_id,
                self.step,
                self.step * self.tokens_per_step,
                self.elapsed(),
                metrics["val_loss"],
                metrics["val_bpc"],
                metrics["val_ppl"],
                metrics.get("max_logit"),
                metrics.get("max_attn_logit"),
            )
        )

    def save(self, state: dict[str, Any], final: bool = False) -> None:
        self._send(CheckpointSaved(self.run_id, self.step, state, final=final))

    def finish(
        self, status: RunStatus, error: str | None = None, trace: str | None = None
    ) -> RunResult:
        self._send(self.end(status, error, trace))
        return self.result

    def fail(self, err: BaseException) -> RunResult:
        """End the run "failed" with the exception being handled."""
        return self.finish(RunStatus.FAILED, error_line(err), traceback.format_exc())

    def diverge(self) -> RunResult:
        return self.finish(
            RunStatus.DIVERGED, error=f"non-finite loss or gradient at step {self.step}"
        )

    def _send(self, event: Event) -> None:
        self.observe(event)
        if self.emit is None:
            return
        try:
            self.emit(event)
        except SinkError:
            raise
        except Exception as err:
            raise SinkError(f"{type(err).__name__}: {err}") from err

    # -- observing a run -----------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Update from one of this run's events (built here, or received from a worker)."""
        match event:
            case RunStarted():
                self.started = True
                self.device, self.n_params, self.step = (
                    event.device,
                    event.n_params,
                    event.start_step,
                )
                self.precision = event.precision or self.precision
                del self.losses[self.step :], self.grad_norms[self.step :]
            case StepLogged():
                self.step, self.grad_norm, self.elapsed_s = (
                    event.step,
                    event.grad_norm,
                    event.elapsed_s,
                )
                self.losses.append(event.loss)
                self.grad_norms.append(event.grad_norm)
            case EvalLogged():
                best = self.best_val_loss
                self.best_val_loss = event.val_loss if best is None else min(best, event.val_loss)
                self.elapsed_s = event.elapsed_s
            case CheckpointSaved():
                self.step = max(self.step, event.step)
            case RunFinished():
                self.result = event.result

    # -- the result ----------------------------------------------------------------------------

    def end(
        self, status: RunStatus, error: str | None = None, trace: str | None = None
    ) -> RunFinished:
        """The RunFinished of this run ending now with ``status`` (sets ``result``)."""
        diverged = status == RunStatus.DIVERGED
        wall = self.elapsed()
        self.result = RunResult(
            run_id=self.run_id,
            status=str(status),
            step=self.step,
            tokens=self.step * self.tokens_per_step,
            n_params=self.n_params,
            device=self.device,
            wall_s=wall,
            val_loss=self.final.get("val_loss"),
            val_bpc=self.final.get("val_bpc"),
            val_ppl=self.final.get("val_ppl"),
            best_val_loss=self.best_val_loss,
            final_grad_norm=self.grad_norm,
            accuracy=self.final.get("accuracy"),
            macro_accuracy=self.final.get("macro_accuracy"),
            embed_norm=self.final.get("embed_norm"),
            max_logit=self.final.get("max_logit"),
            max_attn_logit=self.final.get("max_attn_logit"),
            **stability(self.losses, self.grad_norms),
            diverged_step=self.step if diverged else None,
            precision=self.precision,
            error=error if error is not None else (error_line(trace) if trace else None),
        )
        return RunFinished(self.run_id, self.result, traceback=trace)


def error_line(err: BaseException | str) -> str:
    """One line for a result's ``error``: the exception, or the telling line of a traceback."""
    if isinstance(err, BaseException):
        return f"{type(err).__name__}: {err}".splitlines()[0]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    return lines[-1].strip() if lines[0].startswith("Traceback") else lines[0].strip()
