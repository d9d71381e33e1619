"""Preparation: vocabulary, 90/10 split, the sha256-keyed cache and its safety under concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data import CANONICAL_SHA256, DataError, cache_root, load_corpus, prepare

ROOT = Path(__file__).resolve().parents[1]


def test_canonical_corpus_counts_and_vocabulary(corpus, corpus_path):
    assert corpus.sha256 == CANONICAL_SHA256
    assert corpus.vocab_size == 65
    assert corpus.itos == sorted(set(corpus_path.read_text(encoding="utf-8")))
    assert (len(corpus.train), len(corpus.val)) == (1_003_854, 111_540)
    assert corpus.train.dtype == np.uint16 and isinstance(corpus.train, np.memmap)
    text = corpus_path.read_text(encoding="utf-8")
    assert corpus.decode(corpus.train) + corpus.decode(corpus.val) == text


def test_files_beside_each_other(corpus):
    folder = corpus.cache_dir
    assert folder.name == CANONICAL_SHA256[:16]
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["itos"] == corpus.itos
    assert vocab["stoi"] == {c: i for i, c in enumerate(corpus.itos)}
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["sha256"], meta["train_tokens"], meta["val_tokens"]) == (
        CANONICAL_SHA256,
        1_003_854,
        111_540,
    )
    assert (folder / "train.bin").stat().st_size == 2 * 1_003_854
    assert (folder / "val.bin").stat().st_size == 2 * 111_540


def test_encode_decode_and_tensor(corpus):
    ids = corpus.encode("First Citizen:")
    assert ids.dtype == np.int64
    assert corpus.decode(ids) == "First Citizen:"
    assert corpus.decode(torch.from_numpy(ids)) == "First Citizen:"
    with pytest.raises(DataError, match="not in the corpus vocabulary"):
        corpus.encode("é")
    t = corpus.tensor("val")
    assert t.dtype == torch.int64 and t.shape == (111_540,)
    assert torch.equal(t, torch.from_numpy(corpus.val.astype(np.int64)))
    assert corpus.tensor("val", "cpu") is t  # cached: built once, used every step
    with pytest.raises(ValueError):
        corpus.tensor("test")


def test_any_utf8_text_is_a_corpus(tmp_path):
    src = tmp_path / "poem.txt"
    src.write_text("Ça va? Ωμέγα — naïve 日本語\n" * 20, encoding="utf-8")
    corpus = prepare(src)
    text = src.read_text(encoding="utf-8")
    assert corpus.itos == sorted(set(text))
    n = int(0.9 * len(text))
    assert (len(corpus.train), len(corpus.val)) == (n, len(text) - n)
    assert corpus.decode(corpus.train) + corpus.decode(corpus.val) == text


def test_largest_vocabulary_that_fits_uint16(tmp_path):
    src = tmp_path / "wide.txt"
    chars = [chr(c) for c in range(0x20, 0x11000) if not 0xD800 <= c <= 0xDFFF][:65_535]
    src.write_text("".join(chars), encoding="utf-8")
    corpus = prepare(src)
    assert corpus.vocab_size == 65_535
    assert int(corpus.val.max()) == 65_534


def test_cached_preparation_is_reused_and_rebuilt_when_source_changes(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text("abcdefghij" * 10)
    first = prepare(src)
    mtime = (first.cache_dir / "meta.json").stat().st_mtime_ns
    again = prepare(src)
    assert again.cache_dir == first.cache_dir
    assert (again.cache_dir / "meta.json").stat().st_mtime_ns == mtime  # not rewritten

    src.write_text("xyz" * 40)
    changed = prepare(src)
    assert changed.cache_dir != first.cache_dir
    assert changed.itos == ["x", "y", "z"]


def test_damaged_preparation_is_rebuilt(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text("the quick brown fox jumps over the lazy dog\n" * 5)
    folder = prepare(src).cache_dir
    good = (folder / "train.bin").read_bytes()
    (folder / "train.bin").write_bytes(good[:10])  # e.g. a crash or a disk fault
    rebuilt = prepare(src)
    assert (rebuilt.cache_dir / "train.bin").read_bytes() == good
    assert sorted(p.name for p in (cache_root() / "prepared").iterdir()) == [folder.name]


def test_load_corpus_uses_labtui_data(tmp_path, monkeypatch):
    src = tmp_path / "env.txt"
    src.write_text("environment variable corpus\n" * 5)
    monkeypatch.setenv("LABTUI_DATA", str(src))
    assert load_corpus().source == str(src)
    monkeypatch.setenv("LABTUI_DATA", str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match=r"not found: .*nope.txt \(from LABTUI_DATA\)$"):
        load_corpus()


WORKER = """
import os, sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
from data import prepare
c = prepare(sys.argv[1])
print(c.cache_dir, len(c.train), len(c.val), c.vocab_size)
"""


def test_concurrent_preparation_gives_a_valid_cache(corpus_path, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(corpus_path), str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    time.sleep(1.0)  # let them import numpy and wait at the barrier
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.split()[1:] == ["1003854", "111540", "65"]
    prepared = cache_root() / "prepared"
    assert [p.name for p in prepared.iterdir()] == [CANONICAL_SHA256[:16]]  # no temp folders
    corpus = prepare(corpus_path)
    assert corpus.decode(corpus.val) == corpus_path.read_text(encoding="utf-8")[1_003_854:]
