"""What determines a run (RunSpec) and a study (a grid of RunSpecs)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

# Embedding treatments (core.model): the protocol's three, then the controls that separate scale
# from normalization ("scaled": scale alone; "-small": normalization at the baseline's scale).
VARIANTS = ("none", "layernorm", "rmsnorm", "scaled", "layernorm-small", "rmsnorm-small")
PROTOCOL_VARIANTS = VARIANTS[:3]
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")  # auto: tf32 on CUDA, else fp32 (core.device)
ORDERS = ("grid", "interleaved")
# The most runs a study may have unless asked for more (`labtui run --max-runs`): a guard against
# a typo such as --seeds 0-1000000000, which would otherwise build its runs until memory runs out.
MAX_RUNS = 10_000
# The most runs any study may have, whatever --max-runs says: its runs are built in memory (about
# 2.5 kB each with their ids), so a study of 10^9 runs would exhaust the machine, not fail.
MAX_RUNS_CEILING = 1_000_000
# Whole numbers fit in 64 bits (a step count in a CSV, a seed in a run's folder name: a seed of
# hundreds of digits would make a name no file system takes).
MAX_INT = 2**63


class SpecError(ValueError):
    """A run or study specification that cannot work; the message is one line for the user."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run. Same spec (and device) -> same numbers.

    Defaults are the embedding-normalization protocol: a 1.6M-parameter Pre-LN GPT trained for
    300 AdamW steps of 16 x 128 characters.
    """

    variant: str = "none"  # embedding treatment, one of VARIANTS
    seed: int = 0  # initialization, batch order and dropout all derive from it
    # model
    n_layer: int = 8
    n_embd: int = 128
    n_head: int = 8
    block_size: int = 128  # context length
    dropout: float = 0.0
    # budget: every run of a study sees iters * batch_size * block_size tokens
    iters: int = 300
    batch_size: int = 16
    # AdamW, PyTorch's own defaults apart from lr. Weight decay applies to weight matrices only
    # (attention, MLP and the tied token embedding / head), never to norm gains or biases, and to
    # the position table only when decay_position_embedding is set.
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    decay_position_embedding: bool = False
    # schedule: "constant" (the protocol), or linear warmup then cosine decay to min_lr
    schedule: str = "constant"
    warmup_iters: int = 0
    min_lr: float = 3e-5
    grad_clip: float = 0.0  # max total gradient norm; 0 = off
    # evaluation and bookkeeping (they do not change the trained weights)
    eval_interval: int = 100  # full validation pass every N steps and at the end; 0 = end only
    checkpoint_interval: int = 50  # resumable checkpoint every N steps; 0 = only when stopped
    # where and how: "auto" = cuda, else mps, else cpu
    device: str = "auto"
    # compute dtype: "fp32" | "tf32" | "bf16" (autocast) | "auto" (core.device.resolve_precision)
    precision: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def tokens(self) -> int:
        """Training tokens the run sees: the compute budget."""
        return self.iters * self.batch_size * self.block_size

    def lr_at(self, it: int) -> float:
        """Learning rate of 0-based step ``it``: linear warmup, then constant or cosine decay."""
        if it < self.warmup_iters:
            return self.lr * (it + 1) / self.warmup_iters
        if self.schedule == "constant":
            return self.lr
        progress = (it - self.warmup_iters) / max(1, self.iters - self.warmup_iters)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (
            self.lr - self.min_lr
        )

    def validate(self) -> None:
        """Raise SpecError with a one-line reason when this spec cannot work."""
        for f in fields(self):
            value = getattr(self, f.name)
            want = _FIELD_TYPES[f.name]
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                value = float(value)
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise SpecError(f"{f.name} must be {want.__name__}, got {value!r}")
            if want is float and not math.isfinite(value):
                raise SpecError(f"{f.name} must be finite, got {value!r}")
            if want is int and abs(value) >= MAX_INT:
                raise SpecError(f"{f.name} must be below 2**63 in magnitude")
        if self.variant not in VARIANTS:
            raise SpecError(
                f"unknown variant {self.variant!r}: choose one of {', '.join(VARIANTS)}"
            )
        if self.schedule not in SCHEDULES:
            raise SpecError(f"unknown schedule {self.schedule!r}: choose {' or '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise SpecError(f"unknown precision {self.precision!r}: choose {', '.join(PRECISIONS)}")
        for name in ("n_layer", "n_embd", "n_head", "block_size", "iters", "batch_size"):
            if getattr(self, name) <= 0:
                raise SpecError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise SpecError(
                f"width {self.n_embd} is not divisible by {self.n_head} heads "
                f"(n_embd % n_head must be 0)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.min_lr < 0:
            raise SpecError(
                f"lr must be positive and min_lr non-negative, got {self.lr}, {self.min_lr}"
            )
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise SpecError(f"AdamW betas must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.eps <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise SpecError("eps must be positive; weight_decay and grad_clip non-negative")
        for name in ("seed", "warmup_iters", "eval_interval", "checkpoint_interval"):
            if getattr(self, name) < 0:
                raise SpecError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.device not in ("auto", "cpu", "mps", "cuda") and not self.device.startswith(
            "cuda:"
        ):
            raise SpecError(f"unknown device {self.device!r}: use auto, cpu, cuda, cuda:N or mps")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        unknown = sorted(set(data) - set(FIELD_NAMES))
        if unknown:
            raise SpecError(f"unknown run field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def key(self) -> str:
        """A short hash of the fields that change the numbers (not device or bookkeeping)."""
        science = {k: v for k, v in self.to_dict().items() if k not in NON_SCIENCE_FIELDS}
        return hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()[:10]

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)


FIELD_NAMES = tuple(f.name for f in fields(RunSpec))
_FIELD_TYPES = {
    f.name: {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
    for f in fields(RunSpec)
}
# Fields that do not change the trained weights or the metrics' values.
NON_SCIENCE_FIELDS = frozenset({"eval_interval", "checkpoint_interval", "device"})


def check_size(runs: int, max_runs: int = MAX_RUNS) -> None:
    """Raise SpecError when a study of ``runs`` runs is over the limit ``max_runs``, or over
    MAX_RUNS_CEILING whatever the limit."""
    if max_runs > MAX_RUNS_CEILING and runs > MAX_RUNS_CEILING:
        raise SpecError(
            f"the study has {runs:,} runs, over the most a study can have "
            f"({MAX_RUNS_CEILING:,}: its runs are built in memory)"
        )
    if runs > max_runs:
        raise SpecError(f"the study has {runs:,} runs, over the limit of {max_runs:,}")


@dataclass(frozen=True)
class Study:
    """A grid of runs: every combination of the listed values, each applied to one base spec.

    ``grid`` maps RunSpec field names to tuples of values; "variant" and "seed" are the usual axes,
    any other field (lr, iters, n_embd, ...) may be swept too.
    """

    base: RunSpec = field(default_factory=RunSpec)
    grid: dict[str, tuple] = field(
        default_factory=lambda: {"variant": PROTOCOL_VARIANTS, "seed": (0, 1, 2, 3, 4)}
    )
    order: str = "grid"  # "grid": variant-major; "interleaved": seed-major, every variant early
    description: str = ""  # one line: what the study is for

    def __post_init__(self) -> None:
        grid = {}
        for name, values in self.grid.items():
            if name not in FIELD_NAMES:
                raise SpecError(f"unknown study field {name!r}")
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                values = (values,)
            values = tuple(values)
            if not values:
                raise SpecError(f"study field {name!r} has no values: the grid is empty")
            if len(set(map(repr, values))) != len(values):
                raise SpecError(f"study field {name!r} repeats a value: {list(values)}")
            grid[name] = values
        object.__setattr__(self, "grid", grid)
        if self.order not in ORDERS:
            raise SpecError(f"unknown order {self.order!r}: choose grid or interleaved")
        # Each value once, in the first cell of the grid (itself a cell): a bad value is refused
        # here at a cost that grows with the axes, not with their product (check() does the rest).
        first = {name: values[0] for name, values in grid.items()}
        for name, values in grid.items():
            for value in values:
                self._cell({**first, name: value})

    @property
    def size(self) -> int:
        """The number of runs: the product of the axes' lengths (counted, not built)."""
        return math.prod(len(values) for values in self.grid.values())

    @property
    def axes(self) -> list[str]:
        """Swept fields other than variant and seed (a learning-rate sweep, a budget sweep...)."""
        return [k for k, v in self.grid.items() if k not in ("variant", "seed") and len(v) > 1]

    def check(self, max_runs: int = MAX_RUNS) -> None:
        """Raise SpecError when the study has more than ``max_runs`` runs (counted before any is
        built) or when a combination of its values cannot work (e.g. a width and a head count)."""
        check_size(self.size, max_runs)
        self.specs()

    def specs(self) -> list[RunSpec]:
        """The runs of the study, in the study's order (built once; raises SpecError for a cell
        that cannot work)."""
        return list(self._specs)

    @functools.cached_property
    def _specs(self) -> tuple[RunSpec, ...]:
        names = list(self.grid)
        if self.order == "interleaved" and "seed" in names:
            names.remove("seed")
            names.insert(0, "seed")
        return tuple(
            self._cell(dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(self.grid[n] for n in names))
        )

    def _cell(self, values: dict[str, Any]) -> RunSpec:
        try:
            return self.base.replace(**values)
        except SpecError as err:
            raise SpecError(f"study cell {values}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "base": self.base.to_dict(),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "order": self.order,
        }
        if self.description:
            data["description"] = self.description
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Study:
        """Build from {"base": {...}, "grid": {...}, "order": ..., "description": ...}.

        Raises SpecError."""
        unknown = sorted(set(data) - {"base", "grid", "order", "description"})
        if unknown:
            raise SpecError(f"unknown study section(s): {', '.join(unknown)}")
        base = data.get("base", {})
        grid = data.get("grid", {"variant": PROTOCOL_VARIANTS, "seed": (0, 1, 2, 3, 4)})
        if not isinstance(base, dict) or not isinstance(grid, dict):
            raise SpecError("a study needs a [base] table and a [grid] table")
        try:
            base_spec = RunSpec.from_dict(base)
        except TypeError as err:
            raise SpecError(str(err)) from None
        description = data.get("description", "")
        if not isinstance(description, str):
            raise SpecError("a study's description must be a string")
        return cls(
            base=base_spec, grid=grid, order=data.get("order", "grid"), description=description
        )

    @classmethod
    def from_toml(cls, text: str) -> Study:
        """Parse a study TOML file's text; raises SpecError with a one-line reason."""
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SpecError(f"study file is not valid TOML: {err}") from None
        return cls.from_dict(data)
