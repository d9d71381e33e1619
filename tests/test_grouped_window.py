"""The grouped engine's CUDA paths that a CPU can run: read-back windows and the graph check.

On CUDA a group reads its per-step values back every LOG_EVERY_CUDA steps, and captures its
step in a CUDA graph that is checked against an eager step before it is used. ``log_every``
gives the CPU the same windows; the graph check runs here with stand-in recorders, since only
the recording itself (torch.cuda.graph) needs a GPU.
"""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import pytest
import torch
from test_grouped import Recorder, assert_close_in_norm, assert_same_run

from core.engine import train
from core.events import CheckpointSaved, RunFinished, StepLogged
from core.grouped import GRAPH_WARMUP, GroupJob, _Group, _Member, _StepGraph, train_group
from core.ledger import RunLedger
from core.spec import RunSpec
from data.batches import sample_offsets

WINDOW = 5
# Evaluations every 7 steps flush too: the windows are 1-5, 6-7, 8-12, 13-14, 15-19, 20-21, 22-24.
BASE = RunSpec(
    n_layer=2, n_embd=32, n_head=4, block_size=32, batch_size=8, iters=24,
    eval_interval=7, checkpoint_interval=0, device="cpu",
)  # fmt: skip
# The learning rate jumps from 0 at step 7 to 7.6e27 at step 8 (a cosine "decay" towards a huge
# min_lr), so step 9's loss is NaN however the arithmetic rounds: every engine diverges at 9,
# in the middle of the window 8-12, with steps 10-12 launched after it.
WILD = BASE.replace(variant="none", seed=3, schedule="cosine", warmup_iters=6, min_lr=1e30)
DIVERGES_AT = 9
SPECS = {
    "ln": BASE.replace(variant="layernorm", seed=0, lr=1e-3),
    "wild": WILD,
    "rms-small": BASE.replace(variant="rmsnorm-small", seed=1, grad_clip=0.5),
    "scaled": BASE.replace(variant="scaled", seed=2, beta2=0.99),
}
TIMING = {"tokens_per_s", "elapsed_s"}  # the only fields a window may change


def jobs(specs=SPECS):
    return [GroupJob(rid, spec) for rid, spec in specs.items()]


def same(a: float | None, b: float | None, rel: float) -> bool:
    if a is None or b is None:
        return a is b
    if not (math.isfinite(a) and math.isfinite(b)):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def assert_same_events(rec_a: Recorder, rec_b: Recorder, run_id: str, rel: float) -> None:
    """The two recordings of ``run_id`` agree event by event, timings aside."""
    assert rec_a.outline(run_id) == rec_b.outline(run_id)
    for a, b in zip(rec_a.events[run_id], rec_b.events[run_id], strict=True):
        if isinstance(a, (CheckpointSaved, RunFinished)):
            continue  # compared through their results and states below
        for name, value in vars(a).items():
            if name in TIMING:
                continue
            if not isinstance(value, float):
                assert value == getattr(b, name), (run_id, a, name)
            else:
                assert same(value, getattr(b, name), rel), (run_id, type(a).__name__, name)


def assert_same_result(a, b, rel: float) -> None:
    for name, value in a.to_dict().items():
        if name == "wall_s":
            continue
        if isinstance(value, float):
            assert same(value, getattr(b, name), rel), (a.run_id, name, value, getattr(b, name))
        else:
            assert value == getattr(b, name), (a.run_id, name)


def assert_same_state(a: dict, b: dict, rel: float) -> None:
    """Two engine checkpoints hold the same weights, moments, random streams and progress
    (each tensor to ``rel`` of its norm)."""
    assert a["step"] == b["step"] and a["spec"] == b["spec"]
    assert torch.equal(a["rng_batches"], b["rng_batches"])
    for key, tensor in b["model"].items():
        assert_close_in_norm(a["model"][key], tensor, rel)
    for i, st in b["optimizer"]["state"].items():
        assert a["optimizer"]["state"][i]["step"] == st["step"]
        for moment in ("exp_avg", "exp_avg_sq"):
            assert_close_in_norm(a["optimizer"]["state"][i][moment], st[moment], rel)


@pytest.fixture(scope="module")
def sequential(corpus):
    rec = Recorder()
    results = {rid: train(spec, corpus, rec, run_id=rid) for rid, spec in SPECS.items()}
    return results, rec


@pytest.fixture(scope="module")
def read_every_step(corpus):
    rec = Recorder()
    return {r.run_id: r for r in train_group(jobs(), corpus, rec, log_every=1)}, rec


@pytest.fixture(scope="module")
def windowed(corpus):
    rec = Recorder()
    return {r.run_id: r for r in train_group(jobs(), corpus, rec, log_every=WINDOW)}, rec


def test_a_window_changes_only_when_values_are_read(read_every_step, windowed):
    """Same runs, same events, same results and checkpoints with a window of 5 as of 1.

    1e-6, not bit-equality: besides when values are read, the two differ only in when the
    diverged run leaves the group (a batched op over fewer rows may round its last bit
    differently). Measured here: bit-identical.
    """
    (one, one_ev), (five, five_ev) = read_every_step, windowed
    for rid in SPECS:
        assert_same_result(five[rid], one[rid], rel=1e-6)
        assert_same_events(five_ev, one_ev, rid, rel=1e-6)
        ckpts_5, ckpts_1 = five_ev.of(rid, CheckpointSaved), one_ev.of(rid, CheckpointSaved)
        for a, b in zip(ckpts_5, ckpts_1, strict=True):
            assert_same_state(a.state, b.state, rel=1e-6)


def test_windowed_group_matches_sequential(sequential, windowed):
    (seq, seq_ev), (grp, grp_ev) = sequential, windowed
    for rid in SPECS:
        assert grp[rid].status == seq[rid].status
        assert_same_run(grp[rid], seq[rid])
        assert grp[rid].max_attn_logit == pytest.approx(seq[rid].max_attn_logit, rel=1e-4)
        assert_same_events(grp_ev, seq_ev, rid, rel=1e-4)
        ckpts = zip(grp_ev.of(rid, CheckpointSaved), seq_ev.of(rid, CheckpointSaved), strict=True)
        for a, b in ckpts:
            assert_same_state(a.state, b.state, rel=1e-3)


def test_a_run_diverging_inside_a_window_ends_as_alone(corpus, sequential, windowed):
    (seq, seq_ev), (grp, grp_ev) = sequential, windowed
    alone_ev = Recorder()
    (alone,) = train_group([GroupJob("wild", WILD)], corpus, alone_ev, log_every=WINDOW)
    for result, rec in ((grp["wild"], grp_ev), (alone, alone_ev)):
        assert result.status == "diverged" == seq["wild"].status
        assert result.step == result.diverged_step == DIVERGES_AT == seq["wild"].diverged_step
        assert result.error == seq["wild"].error
        assert result.max_grad_norm == pytest.approx(seq["wild"].max_grad_norm, rel=1e-4)
        steps = rec.of("wild", StepLogged)
        assert [e.step for e in steps] == list(range(1, DIVERGES_AT + 1))
        assert not math.isfinite(steps[-1].loss) and rec.outline("wild")[-1] == (
            "RunFinished",
            "diverged",
        )
        assert_same_events(rec, seq_ev, "wild", rel=1e-4)
    assert_same_result(alone, grp["wild"], rel=1e-6)
    for rid in ("ln", "rms-small", "scaled"):  # the others never noticed
        assert grp[rid].status == "finished" and grp[rid].step == BASE.iters


def hand_built_group(corpus, specs: dict[str, RunSpec], log_every: int = 1000) -> _Group:
    """A group as train_group builds one, not yet trained (its ledgers send nothing)."""
    members = []
    for rid, spec in specs.items():
        member = _Member(GroupJob(rid, spec), corpus, RunLedger(rid, spec))
        member.prepare()
        members.append(member)
    group = _Group(members, corpus, log_every)
    group.build()
    return group


def rows(group: _Group, r: int) -> list[torch.Tensor]:
    return [
        t[r].clone()
        for t in (group.model.flat, group.optimizer.exp_avg, group.optimizer.exp_avg_sq)
    ]


def test_a_diverged_run_is_frozen_until_the_window_is_read(corpus):
    """After its non-finite step a run's weights and moments stay as they were, step after step,
    while the group goes on launching steps that nobody has read yet."""
    group = hand_built_group(corpus, {"ok": SPECS["ln"], "wild": WILD})
    history = []
    for step in range(1, 13):
        group.launch(step)
        history.append((rows(group, 1), group.alive.clone()))
    assert len(group.pending) == 12  # nothing read back
    values = torch.stack([p.values for p in group.pending])  # (steps, 4, R)
    assert torch.isfinite(values[: DIVERGES_AT - 1]).all()
    assert not torch.isfinite(values[DIVERGES_AT - 1, :2, 1]).all()
    assert torch.isfinite(values[:, :, 0]).all()  # the other run trains on
    frozen, _ = history[DIVERGES_AT - 2]  # after step 8, its last good update
    for step in range(DIVERGES_AT, 13):
        tensors, alive = history[step - 1]
        assert alive.tolist() == [True, False], step
        for a, b in zip(tensors, frozen, strict=True):
            assert torch.equal(a, b), step
    assert all(alive.tolist() == [True, True] for _, alive in history[: DIVERGES_AT - 1])


class StopAtPoll(threading.Event):
    """A stop that sets itself the ``n``-th time it is polled.

    train_group polls the stops of its runs before it launches each step (the first run's once
    a step), so for the first job ``n`` = 11 is a stop set while steps 8-10 are launched but
    not yet read back.
    """

    def __init__(self, n: int):
        super().__init__()
        self.n, self.polls = n, 0

    def is_set(self) -> bool:
        self.polls += 1
        if self.polls == self.n:
            self.set()
        return super().is_set()


def check_cancelled_inside_window(corpus, sequential, windowed, rec, results, at: int):
    """``ln`` ended cancelled at ``at`` with a checkpoint that resumes to the full run; the
    other runs are the uninterrupted windowed group's."""
    (seq, _), (grp, grp_ev) = sequential, windowed
    cancelled = results["ln"]
    assert cancelled.status == "cancelled" and cancelled.step == at
    assert [e.step for e in rec.of("ln", StepLogged)] == list(range(1, at + 1))
    assert rec.outline("ln")[-2:] == [
        ("CheckpointSaved", (at, False)),
        ("RunFinished", "cancelled"),
    ]
    state = rec.of("ln", CheckpointSaved)[-1].state
    assert state["step"] == at
    resumed_seq = train(SPECS["ln"], corpus, run_id="ln", resume=state)
    assert_same_run(resumed_seq, seq["ln"])
    resumed_ev = Recorder()
    (resumed,) = train_group(
        [GroupJob("ln", SPECS["ln"], state)], corpus, resumed_ev, log_every=WINDOW
    )
    assert resumed_ev.of("ln", StepLogged)[0].step == at + 1
    assert_same_result(resumed, grp["ln"], rel=1e-6)
    assert_same_state(
        resumed_ev.of("ln", CheckpointSaved)[-1].state,
        grp_ev.of("ln", CheckpointSaved)[-1].state,
        rel=1e-6,
    )
    for rid in ("wild", "rms-small", "scaled"):
        assert_same_result(results[rid], grp[rid], rel=1e-6)
        assert_same_events(rec, grp_ev, rid, rel=1e-6)


def test_a_stop_set_while_a_window_is_read_out(corpus, sequential, windowed):
    """Stop asked for on step 9's report, which arrives after steps 10-12 ran: cancelled at 12."""
    stops = {"ln": threading.Event()}
    rec = Recorder()

    def on_event(event):
        rec(event)
        if isinstance(event, StepLogged) and event.run_id == "ln" and event.step == 9:
            stops["ln"].set()

    results = train_group(jobs(), corpus, on_event, stops, log_every=WINDOW)
    results = {r.run_id: r for r in results}
    check_cancelled_inside_window(corpus, sequential, windowed, rec, results, at=12)


def test_a_stop_set_between_reads(corpus, sequential, windowed):
    """Stop set before step 11 launches, with 8-10 unread: those are read, then cancelled at 10
    (and the wild run's divergence at 9, in the same read, still ends it as diverged)."""
    stops = {"ln": StopAtPoll(11)}
    rec = Recorder()
    results = {r.run_id: r for r in train_group(jobs(), corpus, rec, stops, log_every=WINDOW)}
    assert results["wild"].status == "diverged" and results["wild"].step == DIVERGES_AT
    check_cancelled_inside_window(corpus, sequential, windowed, rec, results, at=10)


# -- the CUDA graph check, with the recording replaced by CPU stand-ins -------------------------


class ReplayOnCPU(_StepGraph):
    """A "graph" whose replay runs the eager step on its static inputs: what a faithful capture
    does. ``lr_factor`` and ``fail`` make it disagree or break, as a bad capture would (a graph
    that baked in a stale input, or one that dies in replay after writing)."""

    lr_factor = 1.0
    fail = False

    @classmethod
    def record(cls, group, offsets, scalars):
        static_off, static_scal = offsets.clone(), scalars.clone()
        values = torch.empty(4, group.model.n_runs)

        def replay():
            used = static_scal.clone()
            used[:2] *= cls.lr_factor  # lr (weight decay) and AdamW's step size
            values.copy_(group.step_values(static_off, used))
            if cls.fail:
                raise RuntimeError("replay failed after writing")

        return cls(SimpleNamespace(replay=replay), static_off, static_scal, values)


class DisagreeingReplay(ReplayOnCPU):
    lr_factor = 2.0


class FailingReplay(ReplayOnCPU):
    fail = True


TWIN_SPECS = {rid: SPECS[rid] for rid in ("ln", "rms-small", "scaled")}


def state_of(group: _Group) -> list[torch.Tensor]:
    return [
        t.clone()
        for t in (
            group.model.flat,
            group.optimizer.exp_avg,
            group.optimizer.exp_avg_sq,
            group.alive,
        )
    ]


def assert_same_tensors(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def next_inputs(group: _Group, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the step's batch offsets (advancing the runs' batch streams) and its scalars."""
    n, spec = len(group.train_tokens), group.spec
    offsets = torch.stack(
        [sample_offsets(n, spec.batch_size, spec.block_size, m.batches) for m in group.members]
    )
    return offsets, group.scalars[step - group.start - 1]


@pytest.fixture(params=["fp32", "bf16"])
def twins(corpus, request):
    """Two identical groups after GRAPH_WARMUP eager steps: one to capture, one as reference
    (in fp32, and in bf16 autocast, where the check allows more)."""
    specs = {rid: spec.replace(precision=request.param) for rid, spec in TWIN_SPECS.items()}
    pair = [hand_built_group(corpus, specs) for _ in range(2)]
    for group in pair:
        for step in range(1, GRAPH_WARMUP + 1):
            group.launch(step)
    assert_same_tensors(state_of(pair[0]), state_of(pair[1]))
    return pair


def test_graph_capture_fails_on_the_cpu_and_the_group_goes_on_eagerly(twins):
    group, reference = twins
    group.use_graphs, group.eager_steps = True, GRAPH_WARMUP  # as a CUDA group would be now
    for step in range(GRAPH_WARMUP + 1, GRAPH_WARMUP + 4):
        group.launch(step)  # the first of these tries to capture (torch.cuda.synchronize fails)
        reference.launch(step)
        assert group.graph is None and not group.use_graphs
        assert torch.equal(group.pending[-1].values, reference.pending[-1].values)
        assert_same_tensors(state_of(group), state_of(reference))


@pytest.mark.parametrize("bad", [_StepGraph, DisagreeingReplay, FailingReplay])
def test_a_capture_that_fails_or_disagrees_leaves_exactly_the_eager_step(twins, bad):
    group, reference = twins
    step = GRAPH_WARMUP + 1
    offsets, scalars = next_inputs(group, step)
    ref_offsets, ref_scalars = next_inputs(reference, step)
    graph, values = bad.capture(group, offsets, scalars)
    eager = reference.step_values(ref_offsets, ref_scalars)
    assert graph is None
    assert torch.equal(values, eager)
    assert_same_tensors(state_of(group), state_of(reference))


def test_a_faithful_capture_is_kept_and_replays_the_next_steps(twins):
    group, reference = twins
    first = GRAPH_WARMUP + 1
    offsets, scalars = next_inputs(group, first)
    graph, values = ReplayOnCPU.capture(group, offsets, scalars)
    eager = reference.step_values(*next_inputs(reference, first))
    assert isinstance(graph, ReplayOnCPU)
    assert torch.equal(values, eager)
    assert_same_tensors(state_of(group), state_of(reference))
    for step in range(first + 1, first + 3):  # new inputs go through the static copies
        replayed = graph.replay(*next_inputs(group, step))
        assert torch.equal(replayed, reference.step_values(*next_inputs(reference, step)))
        assert_same_tensors(state_of(group), state_of(reference))


def test_a_diverged_run_in_the_group_does_not_spoil_the_capture(corpus):
    """A run that diverged earlier in the window is still in the group, frozen, with NaN
    values: a faithful replay agrees with the eager step there too, and is kept."""
    group, reference = (hand_built_group(corpus, {"ok": SPECS["ln"], "wild": WILD}) for _ in "ab")
    for step in range(1, DIVERGES_AT + 1):
        group.launch(step)
        reference.launch(step)
    step = DIVERGES_AT + 1
    graph, values = ReplayOnCPU.capture(group, *next_inputs(group, step))
    eager = reference.step_values(*next_inputs(reference, step))
    assert graph is not None
    assert not torch.isfinite(eager[:, 1]).all() and torch.isfinite(eager[:, 0]).all()
    assert torch.equal(values.isnan(), eager.isnan())
    assert torch.equal(values.nan_to_num(), eager.nan_to_num())
    assert_same_tensors(state_of(group), state_of(reference))
