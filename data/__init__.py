"""labtui's data layer: where the corpus comes from, its preparation, and batches.

``data.batches`` (sample_batch, eval_batches) needs torch and is imported on its own.
"""

from data.corpus import Corpus, load_corpus, prepare
from data.source import CANONICAL_SHA256, CANONICAL_URL, DataError, cache_root

__all__ = [
    "CANONICAL_SHA256",
    "CANONICAL_URL",
    "Corpus",
    "DataError",
    "cache_root",
    "load_corpus",
    "prepare",
]
