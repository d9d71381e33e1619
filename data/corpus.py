"""Turn a UTF-8 text into a character vocabulary and uint16 train/val token files, cached by sha256.

Layout: ``<cache>/prepared/<sha256[:16]>/{train.bin,val.bin,vocab.json,meta.json}``. A preparation
is built in a temporary folder and renamed into place in one step, so two processes preparing
at once cannot corrupt it; ``meta.json`` records what a complete preparation holds and is checked
on every load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.source import DataError, Progress, cache_root, resolve_source

if TYPE_CHECKING:
    import torch

TRAIN_FRACTION = 0.9
MAX_VOCAB = 65_535
FORMAT = 1


@dataclass(frozen=True, eq=False)
class Corpus:
    """A prepared character-level corpus: vocabulary and memory-mapped uint16 splits."""

    source: str
    sha256: str
    itos: list[str]
    train: np.ndarray
    val: np.ndarray
    cache_dir: Path
    _tensors: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def stoi(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.itos)}

    def encode(self, text: str) -> np.ndarray:
        stoi = self.stoi
        try:
            return np.array([stoi[c] for c in text], dtype=np.int64)
        except KeyError as err:
            raise DataError(f"character {err.args[0]!r} is not in the corpus vocabulary") from None

    def decode(self, ids) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return "".join(self.itos[i] for i in ids)

    def tensor(self, split: str = "train", device="cpu") -> torch.Tensor:
        """The split as a 1-D int64 tensor on ``device``, built once per corpus and device."""
        import torch  # only the training side needs torch

        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        key = (split, str(torch.device(device)))
        if key not in self._tensors:
            tokens = torch.from_numpy(np.asarray(getattr(self, split), dtype=np.int64))
            self._tensors[key] = tokens.to(device)
        return self._tensors[key]


def load_corpus(
    path: str | Path | None = None,
    *,
    progress: Progress | None = None,
    url: str | None = None,
) -> Corpus:
    """Resolve the source (path, $LABTUI_DATA, cache, download), prepare it once, memory-map it."""
    src, origin = resolve_source(path, progress=progress, url=url)
    try:
        return prepare(src)
    except DataError as err:
        if origin != "LABTUI_DATA":
            raise
        raise DataError(f"{err} (from LABTUI_DATA)") from None


def prepare(path: str | Path) -> Corpus:
    """Prepare ``path`` (or reuse its cached preparation) and return the Corpus."""
    path = Path(path)
    raw = _read(path)
    digest = hashlib.sha256(raw).hexdigest()
    root = cache_root() / "prepared"
    final = root / digest[:16]
    corpus = _load(final, digest, path)
    if corpus is not None:
        return corpus
    itos, ids = _tokenize(raw, path)
    n = int(TRAIN_FRACTION * len(ids))
    if n < 2 or len(ids) - n < 2:
        raise DataError(f"corpus {path} is too short ({len(ids)} characters) to split 90/10")
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is not
        _write(tmp, digest, itos, ids[:n], ids[n:])
        _install(tmp, final, digest)
    except OSError as err:
        raise DataError(f"cannot write the corpus cache in {root}: {err.strerror or err}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    corpus = _load(final, digest, path)
    if corpus is None:
        raise DataError(f"prepared corpus in {final} is damaged; delete that folder and retry")
    return corpus


def prepared_vocab(sha256: str) -> list[str] | None:
    """The vocabulary of the text with this sha256 if its preparation is in the cache, else None."""
    found = _vocab(cache_root() / "prepared" / sha256[:16], sha256)
    return None if found is None else found[1]


def _read(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"corpus file not found: {path}") from None
    except OSError as err:
        raise DataError(f"cannot read corpus {path}: {err.strerror or err}") from None
    if not raw:
        raise DataError(f"corpus {path} is empty")
    return raw


def _tokenize(raw: bytes, path: Path) -> tuple[list[str], np.ndarray]:
    """Vocabulary = sorted unique characters; ids = each character's index in it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"corpus {path} is not UTF-8 text (invalid byte at offset {err.start:,})"
        ) from None
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab = np.unique(codes)  # sorted code points = sorted characters
    if len(vocab) > MAX_VOCAB:
        raise DataError(
            f"corpus {path} has {len(vocab):,} distinct characters; "
            f"at most {MAX_VOCAB:,} fit in uint16 token ids"
        )
    ids = np.searchsorted(vocab, codes).astype(np.uint16)
    return [chr(c) for c in vocab.tolist()], ids


def _write(folder: Path, digest: str, itos: list[str], train: np.ndarray, val: np.ndarray):
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    vocab = {"itos": itos, "stoi": {c: i for i, c in enumerate(itos)}}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    meta = {
        "format": FORMAT,
        "sha256": digest,
        "vocab_size": len(itos),
        "train_tokens": len(train),
        "val_tokens": len(val),
        "train_sha256": hashlib.sha256(train.tobytes()).hexdigest(),
        "val_sha256": hashlib.sha256(val.tobytes()).hexdigest(),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")  # last


def _install(tmp: Path, final: Path, digest: str) -> None:
    """Rename the finished folder into place; if another process won the race, keep theirs."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if _load(final, digest, final) is not None:
            return  # a complete preparation is there already
    # a damaged folder is in the way: move it aside in one step, then retry
    stale = final.with_name(f".stale-{tmp.name}")
    try:
        os.rename(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
        os.rename(tmp, final)
    except OSError:
        pass  # someone else replaced it meanwhile; the caller checks what is there


def _meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _vocab(folder: Path, digest: str) -> tuple[dict, list[str]] | None:
    """(meta, vocabulary) of the preparation of ``digest`` in ``folder``, or None."""
    meta = _meta(folder)
    if meta is None or meta.get("format") != FORMAT or meta.get("sha256") != digest:
        return None
    try:
        itos = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))["itos"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(itos, list) or len(itos) != meta.get("vocab_size"):
        return None
    return meta, itos


def _load(folder: Path, digest: str, source: Path) -> Corpus | None:
    """The verified preparation in ``folder``, or None if it is missing or incomplete."""
    found = _vocab(folder, digest)
    if found is None:
        return None
    meta, itos = found
    try:
        splits = {}
        for split in ("train", "val"):
            file = folder / f"{split}.bin"
            if file.stat().st_size != 2 * meta[f"{split}_tokens"]:
                return None
            if hashlib.sha256(file.read_bytes()).hexdigest() != meta[f"{split}_sha256"]:
                return None
            splits[split] = np.memmap(file, dtype=np.uint16, mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Corpus(
        source=str(source),
        sha256=digest,
        itos=itos,
        train=splits["train"],
        val=splits["val"],
        cache_dir=folder,
    )
