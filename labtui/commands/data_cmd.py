"""`labtui data`: prepare the corpus and say where it came from and what it holds."""

from __future__ import annotations

import sys
from pathlib import Path

from data import Corpus, DataError, load_corpus
from labtui.commands.options import DataOption
from labtui.errors import fail


def load_or_fail(path: str | Path | None = None, *, progress: bool = False) -> Corpus:
    """load_corpus, with a DataError turned into one line on stderr and exit code 2.

    ``progress``: draw a download bar on stderr when it is a terminal.
    """
    bar = DownloadBar() if progress and sys.stderr.isatty() else None
    try:
        return load_corpus(path, progress=bar)
    except DataError as err:
        fail(str(err))
    finally:
        if bar is not None:
            bar.close()


class DownloadBar:
    """A rich progress bar for the corpus download, started by its first report."""

    def __init__(self) -> None:
        self.progress = None

    def __call__(self, received: int, total: int | None) -> None:
        if self.progress is None:
            from rich.console import Console
            from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

            self.progress = Progress(
                *Progress.get_default_columns(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("tiny Shakespeare", total=total)
        self.progress.update(self.task, completed=received)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def data(path: DataOption = None) -> None:
    """Prepare the corpus and print its source, checksum, vocabulary and split sizes."""
    corpus = load_or_fail(path, progress=True)
    print(f"source      {corpus.source}")
    print(f"sha256      {corpus.sha256}")
    print(f"vocabulary  {corpus.vocab_size:,} characters")
    print(f"train       {len(corpus.train):,} tokens")
    print(f"val         {len(corpus.val):,} tokens")
    print(f"cache       {corpus.cache_dir}")
