"""Samples from really trained tiny runs: determinism, length, vocabulary, and the CLI's errors."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from typer.testing import CliRunner

from core.engine import build_model, train
from core.events import StepLogged
from core.sample import generate
from core.spec import Study
from labtui.cli import app
from sessions.provenance import collect
from sessions.samples import (
    SampleError,
    comparison_runs,
    sample_run,
    session_vocab,
)
from sessions.store import Session

CANCEL_AT = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """Four runs, seeds listed 1 then 0: three finish, r003-rmsnorm-s0 is cancelled mid-way."""
    from conftest import TINY

    root = tmp_path_factory.mktemp("sample-root")
    base = TINY.replace(iters=12, eval_interval=0, checkpoint_interval=0)
    study = Study(base=base, grid={"variant": ("none", "rmsnorm"), "seed": (1, 0)})
    session = Session.create(root, study, name="s", provenance=collect(corpus, "cpu"))
    for run_id in session.run_ids():
        stop = threading.Event()

        def on_event(event, stop=stop, run_id=run_id):
            session.record(event)
            cancel = run_id == "r003-rmsnorm-s0" and isinstance(event, StepLogged)
            if cancel and event.step == CANCEL_AT:
                stop.set()

        session.begin(run_id)
        train(session.spec(run_id), corpus, on_event, stop, run_id=run_id)
    session.close()
    return root


def invoke(*args):
    return CliRunner().invoke(app, ["sample", *map(str, args)])


def test_runs_are_as_planned(trained):
    statuses = {r.run_id: r.status for r in Session.open(trained, "s").runs()}
    assert statuses == {
        "r000-none-s1": "finished",
        "r001-none-s0": "finished",
        "r002-rmsnorm-s1": "finished",
        "r003-rmsnorm-s0": "cancelled",
    }


def test_same_seed_same_text(trained):
    session = Session.open(trained, "s")
    a = sample_run(session, "r001-none-s0", prompt="ROMEO:", tokens=120, seed=7, device="cpu")
    b = sample_run(session, "r001-none-s0", prompt="ROMEO:", tokens=120, seed=7, device="cpu")
    c = sample_run(session, "r001-none-s0", prompt="ROMEO:", tokens=120, seed=8, device="cpu")
    assert a == b and a.text != c.text
    assert (a.variant, a.seed, a.step, a.checkpoint) == ("none", 0, 12, "checkpoint.pt")
    first = invoke("s", "r001-none-s0", "--root", trained, "--seed", 7, "--prompt", "ROMEO:")
    again = invoke("s", "r001-none-s0", "--root", trained, "--seed", 7, "--prompt", "ROMEO:")
    assert first.exit_code == 0, first.output
    assert first.output == again.output and first.output.startswith("ROMEO:")


def test_tokens_is_the_number_of_characters(trained):
    session = Session.open(trained, "s")
    assert len(sample_run(session, "r000-none-s1", tokens=77, device="cpu").text) == 77
    assert sample_run(session, "r000-none-s1", tokens=0, device="cpu").text == ""
    result = invoke("s", "r000-none-s1", "--root", trained, "--tokens", 45, "--prompt", "To be")
    assert result.exit_code == 0, result.output
    assert len(result.output) == len("To be") + 45 + 1  # the prompt, 45 characters, a newline


def test_generate_greedy_is_the_argmax_and_crops_the_context(trained, corpus):
    session = Session.open(trained, "s")
    state = session.load_checkpoint("r001-none-s0")
    model = build_model(session.spec("r001-none-s0"), corpus.vocab_size)
    model.load_state_dict(state["model"])
    prompt = torch.from_numpy(corpus.encode("First Citizen:\nBefore we proceed any further, hear"))
    assert len(prompt) > model.config.block_size  # longer than the context: cropped
    greedy = generate(model, prompt, 40, temperature=0)
    with torch.no_grad():
        logits, _ = model.eval()(prompt[None, -model.config.block_size :])
    assert greedy[0] == logits[0, -1].argmax()
    top1 = generate(model, prompt, 40, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy, top1)  # top-1 sampling is greedy whatever the seed


def test_one_sample_per_variant_from_the_lowest_seed(trained):
    session = Session.open(trained, "s")
    assert comparison_runs(session, "final") == ["r001-none-s0", "r002-rmsnorm-s1"]
    assert comparison_runs(session, "latest") == ["r001-none-s0", "r003-rmsnorm-s0"]
    result = invoke("s", "--root", trained, "--tokens", 30, "--seed", 1)
    assert result.exit_code == 0, result.output
    headers = [line for line in result.output.splitlines() if line.startswith("── ")]
    assert len(headers) == 2
    assert headers[0].startswith("── none · r001-none-s0 · step 12 · val_loss ")
    assert headers[1].startswith("── rmsnorm · r002-rmsnorm-s1 · step 12 · val_loss ")


def test_latest_checkpoint_of_a_cancelled_run(trained):
    session = Session.open(trained, "s")
    drawn = sample_run(session, "r003-rmsnorm-s0", checkpoint="latest", tokens=10, device="cpu")
    assert (drawn.checkpoint, drawn.step) == ("resume.pt", CANCEL_AT)
    refused = invoke("s", "r003-rmsnorm-s0", "--root", trained)
    assert refused.exit_code == 2
    assert "run r003-rmsnorm-s0 has no final checkpoint" in refused.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["r001-none-s0", "--prompt", "ROMEO€"], "outside the vocabulary of r001-none-s0: '€'"),
        (["r999-none-s0"], "session s has no run 'r999-none-s0'"),
        (["r001-none-s0", "--checkpoint", "best"], "unknown --checkpoint 'best'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(trained, args, message):
    result = invoke("s", *args, "--root", trained)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("labtui: error: ") and message in line


def test_missing_session_is_one_line_and_exit_2(trained):
    result = invoke("nope", "--root", trained)
    assert result.exit_code == 2 and result.output.startswith("labtui: error: no session 'nope'")


def test_vocabulary_recorded_in_the_session(trained, corpus):
    session = Session.open(trained, "s")
    assert session.provenance["corpus_vocab"] == "".join(corpus.itos)
    assert session_vocab(session) == corpus.itos


def test_vocabulary_of_an_older_session(trained, corpus, corpus_path, tmp_path):
    """Without a recorded vocabulary: the prepared cache by sha256, else --data, checked."""
    root = tmp_path / "root"
    shutil.copytree(trained / "s", root / "old")
    meta_file = root / "old" / "session.json"
    meta = json.loads(meta_file.read_text())
    meta["name"] = "old"
    del meta["provenance"]["corpus_vocab"]
    meta_file.write_text(json.dumps(meta))
    old = Session.open(root, "old")

    with pytest.raises(SampleError, match="pass --data PATH"):
        session_vocab(old)  # this test's cache is empty
    refused = invoke("old", "r001-none-s0", "--root", root)
    assert refused.exit_code == 2 and "pass --data PATH" in refused.output

    other = tmp_path / "other.txt"
    other.write_text("a different corpus, long enough to split into train and val\n" * 10)
    with pytest.raises(SampleError, match="is not the corpus session old trained on"):
        session_vocab(old, other)
    assert session_vocab(old, corpus_path) == corpus.itos  # prepares it into this test's cache
    assert session_vocab(old) == corpus.itos  # now found in the cache

    result = invoke("old", "r001-none-s0", "--root", root, "--tokens", 20, "--seed", 7)
    fresh = invoke("s", "r001-none-s0", "--root", trained, "--tokens", 20, "--seed", 7)
    assert result.exit_code == 0 and result.output == fresh.output
