"""Tokenize a split once and keep the ids on disk, memory-mapped, for every trial.

The cache key hashes the source files' contents, the tokenizer and the document
limit. A split is built under an exclusive file lock into temporary files and
published by ``os.replace``, metadata last, so concurrent trials either wait for the
builder or read a complete cache, never a half-written one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.data import corpus
from worker.data.tokenizer import Tokenizer
from worker.settings import get_settings

CACHE_VERSION = 1
CHUNK_DOCUMENTS = 512


def default_cache_dir() -> Path:
    """Absolute, so that trials (which Ray Tune runs in their own working directories)
    share one cache; the driver hands its value to every trial it starts."""
    return get_settings().cache_dir.resolve()


@dataclass(frozen=True)
class TokenizedSplit:
    """All documents' ids back to back, each followed by EOS; ``offsets[i]`` is where
    document i starts (``offsets[-1]`` is the total)."""

    tokens: np.ndarray
    offsets: np.ndarray
    path: Path

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1


def tokenized_split(
    sources: list[str],
    split: str,
    tokenizer: Tokenizer,
    cache_dir: Path,
    max_documents: int | None = None,
) -> TokenizedSplit:
    key_material = "|".join(
        [str(CACHE_VERSION), corpus.fingerprint(sources), tokenizer.fingerprint, str(max_documents)]
    )
    stem = cache_dir / f"{split}-{hashlib.sha256(key_material.encode()).hexdigest()[:20]}"
    meta_path = stem.with_suffix(".json")
    if not meta_path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(stem.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not meta_path.exists():
                _build(stem, sources, split, tokenizer, max_documents)
    return _load(stem)


def _build(
    stem: Path, sources: list[str], split: str, tokenizer: Tokenizer, max_documents: int | None
) -> None:
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    tmp_tokens = stem.with_suffix(f".tokens.tmp{os.getpid()}")
    lengths: list[int] = []
    with open(tmp_tokens, "wb") as out:
        chunk: list[str] = []
        for text in corpus.documents(sources, split, max_documents):
            chunk.append(text)
            if len(chunk) == CHUNK_DOCUMENTS:
                lengths += _write_chunk(out, chunk, tokenizer, dtype)
                chunk = []
        if chunk:
            lengths += _write_chunk(out, chunk, tokenizer, dtype)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    tmp_offsets = stem.with_suffix(f".offsets.tmp{os.getpid()}.npy")
    np.save(tmp_offsets, offsets)
    os.replace(tmp_tokens, stem.with_suffix(".tokens"))
    os.replace(tmp_offsets, stem.with_suffix(".offsets.npy"))
    meta = {
        "version": CACHE_VERSION,
        "dtype": np.dtype(dtype).name,
        "documents": len(lengths),
        "tokens": int(offsets[-1]),
        "sources": sources,
        "tokenizer": tokenizer.fingerprint,
    }
    tmp_meta = stem.with_suffix(f".json.tmp{os.getpid()}")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, stem.with_suffix(".json"))


def _write_chunk(out, texts: list[str], tokenizer: Tokenizer, dtype: type) -> list[int]:
    ids = [doc + [tokenizer.eos_id] for doc in tokenizer.encode(texts)]
    out.write(np.fromiter((t for doc in ids for t in doc), dtype=dtype).tobytes())
    return [len(doc) for doc in ids]


def _load(stem: Path) -> TokenizedSplit:
    meta = json.loads(stem.with_suffix(".json").read_text())
    tokens = np.memmap(stem.with_suffix(".tokens"), dtype=meta["dtype"], mode="r")
    offsets = np.load(stem.with_suffix(".offsets.npy"))
    return TokenizedSplit(tokens=tokens, offsets=offsets, path=stem)
