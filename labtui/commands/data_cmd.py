"""`labtui data`: prepare the corpus and say where it came from and what it holds."""

from __future__ import annotations

from pathlib import Path

from data import Corpus, DataError, load_corpus
from labtui.commands.options import DataOption
from labtui.errors import fail


def load_or_fail(path: str | Path | None = None, *, progress: bool = False) -> Corpus:
    """load_corpus, with a DataError turned into one line on stderr and exit code 2."""
    try:
        return load_corpus(path, progress=progress)
    except DataError as err:
        fail(str(err))


def data(path: DataOption = None) -> None:
    """Prepare the corpus and print its source, checksum, vocabulary and split sizes."""
    corpus = load_or_fail(path, progress=True)
    print(f"source      {corpus.source}")
    print(f"sha256      {corpus.sha256}")
    print(f"vocabulary  {corpus.vocab_size:,} characters")
    print(f"train       {len(corpus.train):,} tokens")
    print(f"val         {len(corpus.val):,} tokens")
    print(f"cache       {corpus.cache_dir}")
