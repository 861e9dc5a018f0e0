"""Tokenize a split once and keep the ids on disk, memory-mapped, for every trial.

The cache key covers what is read: the sources' identity (``corpus.fingerprint``), the
split, the tokenizer and the budget (the document and token caps at which reading stops),
so two trials share a cache exactly when they would read the same documents.

A split is built under an exclusive file lock by ``workers`` processes that tokenize
chunks of documents, consumed in order, into shards listed in a manifest as each is
finished: a build killed part way (the lock dies with its process) is resumed by the next
trial from its last shard. The shards are then joined into one file and published by
``os.replace``, metadata last, so concurrent trials either wait for the builder or read a
complete cache, never a half-written one.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from worker.data import corpus
from worker.data.tokenizer import Tokenizer
from worker.settings import get_settings

CACHE_VERSION = 2
#: documents per task handed to a tokenizing process
CHUNK_DOCUMENTS = 256
#: tokens per shard of a build in progress: at most what a crash costs to redo
SHARD_TOKENS = 1 << 24


def default_cache_dir() -> Path:
    """Absolute, so that trials (which Ray Tune runs in their own working directories)
    share one cache; the driver hands its value to every trial it starts."""
    return get_settings().cache_dir.resolve()


def default_workers() -> int:
    """``MAGMA_TOKENIZE_WORKERS``, else every CPU this process may run on; 1 in a
    daemonic process (a ``multiprocessing`` pool's worker), which may not start any."""
    if multiprocessing.current_process().daemon:
        return 1
    return get_settings().tokenize_workers or len(os.sched_getaffinity(0))


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
    max_tokens: int | None = None,
    *,
    workers: int | None = None,
    chunk_documents: int = CHUNK_DOCUMENTS,
    shard_tokens: int = SHARD_TOKENS,
) -> TokenizedSplit:
    """The sources' first documents, up to ``max_documents`` of them and until
    ``max_tokens`` tokens (EOS included; the document that reaches the budget is kept
    whole), whichever comes first. Only ``sources``, ``split``, ``tokenizer`` and the two
    caps decide the result: ``workers`` and the chunk and shard sizes change how it is
    built, not what."""
    key_material = "|".join(
        [
            str(CACHE_VERSION),
            split,
            corpus.fingerprint(sources, split),
            tokenizer.fingerprint,
            f"documents={max_documents}",
            f"tokens={max_tokens}",
        ]
    )
    key = hashlib.sha256(key_material.encode()).hexdigest()
    stem = cache_dir / f"{split}-{key[:20]}"
    meta_path = stem.with_suffix(".json")
    if not meta_path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(stem.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not meta_path.exists():
                _Build(
                    stem=stem,
                    key=key,
                    sources=sources,
                    split=split,
                    tokenizer=tokenizer,
                    max_documents=max_documents,
                    max_tokens=max_tokens,
                    workers=workers or default_workers(),
                    chunk_documents=chunk_documents,
                    shard_tokens=shard_tokens,
                ).run()
    return _load(stem)


class _Pending(Protocol):
    def get(self) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class _Done:
    value: tuple[np.ndarray, np.ndarray]

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        return self.value


@dataclass
class _Parts:
    """A build's finished shards (``NNNNN.tokens``, ``NNNNN.lengths.npy``) and the
    manifest that lists them, rewritten atomically after each one."""

    directory: Path
    key: str
    dtype: str
    shards: list[dict[str, int]] = field(default_factory=list)
    finished: bool = False

    @classmethod
    def open(cls, directory: Path, key: str, dtype: str) -> _Parts:
        """The shards of an interrupted build of this key, or a fresh, empty set."""
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = None
        if manifest is not None and manifest["key"] == key and manifest["dtype"] == dtype:
            parts = cls(directory, key, dtype, manifest["shards"], manifest["finished"])
            if all(parts._intact(i) for i in range(len(parts.shards))):
                return parts
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return cls(directory, key, dtype)

    @property
    def documents(self) -> int:
        return sum(shard["documents"] for shard in self.shards)

    @property
    def tokens(self) -> int:
        return sum(shard["tokens"] for shard in self.shards)

    def tokens_file(self, index: int) -> Path:
        return self.directory / f"{index:05d}.tokens"

    def lengths_file(self, index: int) -> Path:
        return self.directory / f"{index:05d}.lengths.npy"

    def add(self, lengths: list[np.ndarray], tokens: list[np.ndarray]) -> None:
        index = len(self.shards)
        joined_lengths = np.concatenate(lengths)
        joined_tokens = np.concatenate(tokens)
        tmp = self.directory / f"tmp{os.getpid()}"
        joined_tokens.tofile(tmp)
        os.replace(tmp, self.tokens_file(index))
        np.save(tmp.with_suffix(".npy"), joined_lengths)
        os.replace(tmp.with_suffix(".npy"), self.lengths_file(index))
        self.shards.append({"documents": len(joined_lengths), "tokens": len(joined_tokens)})
        self._save()

    def finish(self) -> None:
        self.finished = True
        self._save()

    def _intact(self, index: int) -> bool:
        tokens = self.tokens_file(index)
        expected = self.shards[index]["tokens"] * np.dtype(self.dtype).itemsize
        return (
            self.lengths_file(index).is_file()
            and tokens.is_file()
            and (tokens.stat().st_size == expected)
        )

    def _save(self) -> None:
        manifest = {
            "key": self.key,
            "dtype": self.dtype,
            "shards": self.shards,
            "finished": self.finished,
        }
        tmp = self.directory / f"manifest.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.directory / "manifest.json")


@dataclass
class _Build:
    stem: Path
    key: str
    sources: list[str]
    split: str
    tokenizer: Tokenizer
    max_documents: int | None
    max_tokens: int | None
    workers: int
    chunk_documents: int
    shard_tokens: int

    def run(self) -> None:
        vocab = self.tokenizer.vocab_size
        dtype = np.dtype(np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32)
        parts = _Parts.open(self.stem.with_suffix(".parts"), self.key, dtype.name)
        resumed, resumed_tokens = parts.documents, parts.tokens
        started = time.perf_counter()
        tokenized = 0 if parts.finished else self._tokenize(parts, dtype)
        seconds = time.perf_counter() - started
        new_tokens = parts.tokens - resumed_tokens
        meta = {
            "version": CACHE_VERSION,
            "dtype": dtype.name,
            "documents": parts.documents,
            "tokens": parts.tokens,
            "sources": self.sources,
            "split": self.split,
            "tokenizer": self.tokenizer.fingerprint,
            "max_documents": self.max_documents,
            "max_tokens": self.max_tokens,
            # the documents this build tokenized: the ones kept past those taken over from
            # an interrupted build, plus those read ahead of the budget and dropped
            "documents_tokenized": tokenized,
            "resumed_documents": resumed,
            "workers": self.workers,
            "seconds": round(seconds, 3),
            "tokens_per_s": round(new_tokens / seconds) if seconds > 0 else None,
        }
        _publish(self.stem, parts, meta)
        print(
            f"token cache {self.stem.name}: {meta['documents']:,} documents, "
            f"{meta['tokens']:,} tokens ({resumed:,} documents resumed), "
            f"{meta['tokens_per_s'] or 0:,} tokens/s with {self.workers} processes",
            file=sys.stderr,
        )

    def _tokenize(self, parts: _Parts, dtype: np.dtype) -> int:
        """Tokenize past the parts' documents until the budget or the sources' end; the
        number of documents tokenized. Reading stays just ahead of the budget: chunks
        are sized by the tokens per document seen so far, and only ``2 x workers`` are
        in flight, so at the budget little has been read that is not kept."""
        stream = itertools.islice(
            corpus.documents(self.sources, self.split, self.max_documents), parts.documents, None
        )
        done_documents, done_tokens = parts.documents, parts.tokens
        pending: deque[tuple[int, _Pending]] = deque()
        buffer_lengths: list[np.ndarray] = []
        buffer_tokens: list[np.ndarray] = []
        buffered = tokenized = 0
        exhausted = reached = False
        in_flight = 1 if self.workers == 1 else 2 * self.workers
        with (
            _encoder(self.tokenizer, self.workers, dtype) as submit,
            _progress(self.split, self.max_tokens, done_tokens, self.workers) as bar,
        ):
            while not reached:
                while not exhausted and len(pending) < in_flight:
                    size = self._chunk_size(done_documents, done_tokens, pending)
                    texts = list(itertools.islice(stream, size))
                    if not texts:
                        exhausted = size > 0
                        break
                    pending.append((len(texts), submit(texts)))
                    tokenized += len(texts)
                if not pending:
                    break
                lengths, tokens = pending.popleft()[1].get()
                if self.max_tokens is not None:
                    ends = done_tokens + np.cumsum(lengths)
                    over = np.flatnonzero(ends >= self.max_tokens)
                    if over.size:
                        reached = True
                        lengths = lengths[: over[0] + 1]
                        tokens = tokens[: int(lengths.sum())]
                buffer_lengths.append(lengths)
                buffer_tokens.append(tokens)
                buffered += len(tokens)
                done_documents += len(lengths)
                done_tokens += len(tokens)
                bar.update(len(tokens))
                if buffered >= self.shard_tokens:
                    parts.add(buffer_lengths, buffer_tokens)
                    buffer_lengths, buffer_tokens, buffered = [], [], 0
        if buffer_lengths:
            parts.add(buffer_lengths, buffer_tokens)
        parts.finish()
        return tokenized

    def _chunk_size(self, documents: int, tokens: int, pending: deque[tuple[int, Any]]) -> int:
        """Documents to read next: a full chunk without a token budget; under one, about
        as many as the budget still needs at the mean document length so far (one chunk
        at a time until that mean is known), 0 when those in flight should suffice."""
        if self.max_tokens is None:
            return self.chunk_documents
        if documents == 0:
            return 0 if pending else self.chunk_documents
        mean = tokens / documents
        needed = self.max_tokens - tokens - mean * sum(count for count, _ in pending)
        return 0 if needed <= 0 else min(self.chunk_documents, math.ceil(needed / mean))


def _encode(
    tokenizer: Tokenizer, texts: list[str], dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, ids) of the texts, each document's ids followed by EOS."""
    ids = tokenizer.encode(texts)
    sizes = np.fromiter((len(doc) for doc in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(sizes.sum()))
    return sizes + 1, np.insert(flat, np.cumsum(sizes), tokenizer.eos_id)


_worker_state: tuple[Tokenizer, np.dtype] | None = None


def _start_worker(tokenizer: Tokenizer, dtype: np.dtype) -> None:
    global _worker_state
    _worker_state = (tokenizer, dtype)


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker_state is not None, "set by the pool's initializer"
    return _encode(_worker_state[0], texts, _worker_state[1])


@contextmanager
def _encoder(
    tokenizer: Tokenizer, workers: int, dtype: np.dtype
) -> Iterator[Callable[[list[str]], _Pending]]:
    """Submit texts for tokenizing: in this process for one worker, else to a pool of
    spawned processes (safe under threads, as in Ray and torch), each with its own copy
    of the tokenizer."""
    if workers == 1:
        yield lambda texts: _Done(_encode(tokenizer, texts, dtype))
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(tokenizer, dtype)) as pool:
        yield lambda texts: pool.apply_async(_encode_in_worker, (texts,))


@contextmanager
def _progress(split: str, total: int | None, initial: int, workers: int) -> Iterator[tqdm]:
    """A progress bar in tokens, with the tokens/s rate; in a log (not a terminal), one
    line every 30 s."""
    interactive = sys.stderr.isatty()
    with tqdm(
        total=total,
        initial=initial,
        unit="tok",
        unit_scale=True,
        desc=f"tokenizing {split} ({workers} processes)",
        file=sys.stderr,
        mininterval=0.5 if interactive else 30,
        dynamic_ncols=interactive,
    ) as bar:
        yield bar


def _publish(stem: Path, parts: _Parts, meta: dict[str, Any]) -> None:
    """Join the shards into ``stem.tokens`` and ``stem.offsets.npy``, publish the
    metadata last, then drop the shards."""
    pid = os.getpid()
    tmp_tokens = stem.with_suffix(f".tokens.tmp{pid}")
    lengths = [np.zeros(1, dtype=np.int64)]
    with open(tmp_tokens, "wb") as out:
        for index in range(len(parts.shards)):
            with open(parts.tokens_file(index), "rb") as shard:
                shutil.copyfileobj(shard, out, 1 << 24)
            lengths.append(np.load(parts.lengths_file(index)))
    offsets = np.cumsum(np.concatenate(lengths), dtype=np.int64)
    tmp_offsets = stem.with_suffix(f".offsets.tmp{pid}.npy")
    np.save(tmp_offsets, offsets)
    os.replace(tmp_tokens, stem.with_suffix(".tokens"))
    os.replace(tmp_offsets, stem.with_suffix(".offsets.npy"))
    tmp_meta = stem.with_suffix(f".json.tmp{pid}")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, stem.with_suffix(".json"))
    shutil.rmtree(parts.directory)


def _load(stem: Path) -> TokenizedSplit:
    meta = json.loads(stem.with_suffix(".json").read_text())
    tokens = np.memmap(stem.with_suffix(".tokens"), dtype=meta["dtype"], mode="r")
    offsets = np.load(stem.with_suffix(".offsets.npy"))
    return TokenizedSplit(tokens=tokens, offsets=offsets, path=stem)
