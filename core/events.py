"""Events the engines report while training: plain dataclasses, named as things that happened.

Every event carries the ``run_id`` it belongs to, so one callback can serve many runs (a grouped
engine, a Ray executor). Whoever receives them (the session runner, the console, a progress bar)
decides what to do; the engines never write files or touch a screen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.spec import RunSpec


class SinkError(Exception):
    """The receiver of the events failed (e.g. a full disk under the session folder).

    Not the run's fault: the engines let it through instead of ending the run as "failed", and
    whoever started training stops there. ``__cause__`` holds the original error.
    """


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    spec: RunSpec
    device: str  # resolved device, e.g. "cpu", "cuda:0"
    device_name: str  # "CPU" or the GPU's name
    n_params: int
    start_step: int = 0  # > 0 when resumed from a checkpoint
    precision: str = ""  # resolved: "fp32" | "tf32" | "bf16"


@dataclass(frozen=True)
class StepLogged:
    """One optimizer step. ``step`` counts completed steps (1..iters)."""

    run_id: str
    step: int
    tokens: int  # training tokens seen so far
    loss: float  # training loss of this step's batch (nats per character)
    grad_norm: float  # total L2 norm of all gradients, before clipping
    embed_norm: float  # mean L2 norm of the first block's input over this batch's positions
    lr: float
    tokens_per_s: float
    elapsed_s: float  # training wall time of the run so far (resumed runs include earlier time)
    max_logit: float | None = None  # largest |output logit| over this step's batch


@dataclass(frozen=True)
class EvalLogged:
    """A full pass over the validation split."""

    run_id: str
    step: int
    tokens: int
    elapsed_s: float
    val_loss: float  # nats per character
    val_bpc: float  # bits per character = val_loss / ln 2
    val_ppl: float  # exp(val_loss)
    max_logit: float | None = None  # largest |output logit| over the pass
    max_attn_logit: float | None = None  # largest pre-softmax attention score over the pass


@dataclass(frozen=True)
class CheckpointSaved:
    """A resumable state of the run, for the receiver to store (``state`` is torch.save-able).

    ``final`` is True for the trained model at the end of a finished run.
    """

    run_id: str
    step: int
    state: dict[str, Any] = field(repr=False)
    final: bool = False


@dataclass(frozen=True)
class RunResult:
    """How a run ended and every metric of it. Metrics are None when the run never got there."""

    run_id: str
    status: str  # a RunStatus: finished, cancelled, diverged, failed or interrupted
    step: int  # optimizer steps completed
    tokens: int  # training tokens seen
    n_params: int
    device: str
    wall_s: float  # training + evaluation wall time
    val_loss: float | None = None
    val_bpc: float | None = None
    val_ppl: float | None = None
    best_val_loss: float | None = None
    final_grad_norm: float | None = None
    accuracy: float | None = None  # top-1 next-character accuracy over the validation split
    macro_accuracy: float | None = None  # mean per-character recall over characters in the split
    embed_norm: float | None = None  # mean first-block input norm over the validation split
    max_logit: float | None = None  # largest |output logit| of the final evaluation
    max_attn_logit: float | None = None  # largest attention score of the final evaluation
    max_grad_norm: float | None = None  # largest gradient norm of any step
    loss_spikes: int | None = None  # steps whose loss spiked (core.metrics.spike_steps)
    grad_spikes: int | None = None  # steps whose gradient norm spiked
    diverged_step: int | None = None  # the step with a non-finite loss or gradient
    precision: str | None = None  # resolved compute precision
    error: str | None = None  # one line; the traceback goes with RunFinished

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """The result of ``to_dict`` (unknown keys are ignored); TypeError for data that is not a
        result: not a mapping, or a field missing or of the wrong kind."""
        if not isinstance(data, dict):
            raise TypeError(f"a run result is a mapping, not {type(data).__name__}")
        result = cls(**{k: v for k, v in data.items() if k in _RESULT_KINDS})
        for name, kinds in _RESULT_KINDS.items():
            value = getattr(result, name)
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise TypeError(f"{name} of a run result cannot be {value!r}")
        return result


def _kinds(annotation: str) -> tuple[type, ...]:
    """ "float | None" -> (int, float, NoneType): the JSON values a field of that type takes."""
    name, _, optional = annotation.partition(" | ")
    kinds = {"int": (int,), "float": (int, float), "str": (str,)}[name]
    return kinds + ((type(None),) if optional else ())


_RESULT_KINDS = {f.name: _kinds(str(f.type)) for f in dataclasses.fields(RunResult)}


@dataclass(frozen=True)
class RunFinished:
    """The run is over, whatever the reason; ``traceback`` is set for status "failed"."""

    run_id: str
    result: RunResult
    traceback: str | None = None


Event = RunStarted | StepLogged | EvalLogged | CheckpointSaved | RunFinished
EventSink = Callable[[Event], None]
