"""Text sampled from a session's runs: which checkpoint, which vocabulary, which runs to compare.

The vocabulary of a session is found in this order: the characters its provenance records
(``corpus_vocab``, written by sessions created from now on, so a session copied to another machine
still decodes), then the prepared corpus in the cache with the recorded sha256 (older sessions),
then a text file the caller names, accepted only if its sha256 is the recorded one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.status import RunStatus
from sessions.store import Session

CHECKPOINTS = ("final", "latest")  # checkpoint.pt; the newer of resume.pt and checkpoint.pt
_FILES = {"final": ("checkpoint.pt",), "latest": ("resume.pt", "checkpoint.pt")}


class SampleError(Exception):
    """A sample that cannot be drawn; the message is one line for the user."""


@dataclass(frozen=True)
class Sample:
    run_id: str
    variant: str
    seed: int  # the run's seed (the sampling seed is the caller's)
    step: int  # the training step the checkpoint was saved at
    checkpoint: str  # the file the weights came from
    prompt: str
    text: str  # the generated continuation, without the prompt


def checkpoint_path(session: Session, run_id: str, checkpoint: str = "final") -> Path | None:
    """The run's checkpoint file to sample from ("final" or "latest"), None if it has none."""
    if checkpoint not in CHECKPOINTS:
        raise SampleError(f"unknown checkpoint {checkpoint!r}: choose {' or '.join(CHECKPOINTS)}")
    files = [session.run_dir(run_id) / name for name in _FILES[checkpoint]]
    found = [(f.stat().st_mtime_ns, f) for f in files if f.exists()]
    return max(found)[1] if found else None


def comparison_runs(session: Session, checkpoint: str = "final") -> list[str]:
    """Per variant, in queue order, its lowest-seed run to sample from.

    "final": among the finished runs; "latest": among the runs with any checkpoint (a study still
    training can be looked into).
    """
    chosen = {}
    for record in session.runs():
        if checkpoint == "final":
            usable = record.status == RunStatus.FINISHED
        else:
            usable = checkpoint_path(session, record.run_id, checkpoint) is not None
        variant = record.spec.variant
        if usable and (variant not in chosen or record.spec.seed < chosen[variant].spec.seed):
            chosen[variant] = record
    return [record.run_id for record in chosen.values()]


def session_vocab(session: Session, data: str | Path | None = None) -> list[str]:
    """The characters of the session's corpus in token-id order (see the module docstring)."""
    from data import DataError, prepare
    from data.corpus import prepared_vocab

    sha256 = session.provenance.get("corpus_sha256")
    if data is not None:
        try:
            corpus = prepare(data)
        except DataError as err:
            raise SampleError(str(err)) from None
        if sha256 and corpus.sha256 != sha256:
            raise SampleError(
                f"{data} is not the corpus session {session.name} trained on "
                f"(sha256 {corpus.sha256[:12]}…, the session's is {sha256[:12]}…)"
            )
        return corpus.itos
    recorded = session.provenance.get("corpus_vocab")
    if isinstance(recorded, str) and recorded:
        return list(recorded)
    itos = prepared_vocab(sha256) if isinstance(sha256, str) else None
    if itos is None:
        known = f" (sha256 {sha256[:12]}…)" if isinstance(sha256, str) else ""
        raise SampleError(
            f"the vocabulary of session {session.name} is unknown: its corpus{known} is not in "
            "the cache; pass --data PATH to the text it trained on"
        )
    return itos


@dataclass(frozen=True)
class Sampler:
    """A run's model loaded from one of its checkpoints, ready to draw text (``open_sampler``)."""

    run_id: str
    variant: str
    seed: int  # the run's seed
    step: int  # the training step the checkpoint was saved at
    checkpoint: str  # the file the weights came from
    model: Any = field(repr=False)
    vocab: list[str] = field(repr=False)

    def draw(
        self,
        prompt: str = "",
        tokens: int = 500,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> Iterator[str]:
        """The characters that follow ``prompt``, one at a time as they are drawn; the same seed
        gives the same text. Everything is checked before the first one (SampleError); a model
        whose output is not finite raises SampleError while drawing.

        An empty prompt starts from a newline (or the vocabulary's first character if it has none).
        """
        import torch

        from core.sample import stream

        if not 0 <= seed < 2**64:
            raise SampleError(f"the sampling seed must be from 0 to 2**64 - 1, got {seed}")
        stoi = {c: i for i, c in enumerate(self.vocab)}
        unknown = sorted({c for c in prompt if c not in stoi})
        if unknown:
            raise SampleError(
                f"the prompt has characters outside the vocabulary of {self.run_id}: "
                + ", ".join(repr(c) for c in unknown)
            )
        start = torch.tensor([stoi[c] for c in prompt] or [stoi.get("\n", 0)])
        generator = torch.Generator().manual_seed(seed)
        try:
            ids = stream(
                self.model, start, tokens, temperature=temperature, top_k=top_k, generator=generator
            )
        except ValueError as err:  # an argument out of range
            raise SampleError(str(err)) from None
        return self._chars(ids)

    def _chars(self, ids: Iterator[int]) -> Iterator[str]:
        try:
            for i in ids:
                yield self.vocab[i]
        except ValueError as err:
            raise SampleError(f"cannot sample {self.run_id}: {err}") from None


def open_sampler(
    session: Session,
    run_id: str,
    *,
    checkpoint: str = "final",
    device: str = "auto",
    vocab: list[str] | None = None,
) -> Sampler:
    """A run's model from its checkpoint ("final" or "latest"), on ``device``.

    ``vocab`` defaults to ``session_vocab(session)``. Raises SampleError or SessionError (an
    unknown run); OSError when the checkpoint cannot be read.
    """
    from core.device import resolve_device
    from core.engine import build_model
    from core.spec import RunSpec

    planned = session.spec(run_id)  # an unknown run: SessionError
    path = checkpoint_path(session, run_id, checkpoint)
    if path is None:
        what = "final checkpoint (it has not finished)" if checkpoint == "final" else "checkpoint"
        raise SampleError(f"run {run_id} has no {what}")
    vocab = vocab if vocab is not None else session_vocab(session)
    try:
        device = resolve_device(device)
    except RuntimeError as err:
        raise SampleError(str(err)) from None
    try:
        state = session.load_checkpoint(run_id, final=path.name == "checkpoint.pt")
        spec = RunSpec.from_dict(state["spec"])
        weights, step = state["model"], int(state.get("step", 0))
    except OSError:
        raise  # the file cannot be read (not that it is broken): the caller says so
    except Exception as err:
        detail = " ".join(str(err).split(". ")[0].split())[:200]  # torch's advice left out
        raise SampleError(
            f"the {path.name} of run {run_id} cannot be loaded ({type(err).__name__}: {detail})"
        ) from None
    if spec.key() != planned.key():
        raise SampleError(f"the {path.name} of run {run_id} belongs to another run spec")
    model = build_model(spec, len(vocab))
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise SampleError(
            f"the checkpoint of {run_id} does not fit a model with its spec and a vocabulary "
            f"of {len(vocab)} characters: {detail}"
        ) from None
    model.to(device)
    return Sampler(run_id, spec.variant, spec.seed, step, path.name, model, list(vocab))


def sample_run(
    session: Session,
    run_id: str,
    *,
    prompt: str = "",
    tokens: int = 500,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    checkpoint: str = "final",
    device: str = "auto",
    vocab: list[str] | None = None,
) -> Sample:
    """Sample ``tokens`` characters from a run's checkpoint (``open_sampler``, then
    ``Sampler.draw``); the same seed gives the same text. Raises SampleError or SessionError."""
    sampler = open_sampler(session, run_id, checkpoint=checkpoint, device=device, vocab=vocab)
    drawn = sampler.draw(prompt, tokens, temperature=temperature, top_k=top_k, seed=seed)
    text = "".join(drawn)
    return Sample(
        run_id, sampler.variant, sampler.seed, sampler.step, sampler.checkpoint, prompt, text
    )
