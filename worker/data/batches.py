"""Rows of token ids for training and evaluation.

``pack`` concatenates documents (each ending in EOS) and cuts the stream into
``seq_len`` windows: no padding, every position trains. ``truncate`` is GaLore's
protocol: one document per row, cut at ``seq_len`` and padded, pad positions masked
from the loss, so long documents lose their tails. The training order is a fresh
permutation of the rows per epoch, drawn from the trial seed alone.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from worker.data.token_cache import TokenizedSplit

IGNORE_INDEX = -100


class Rows:
    def __init__(self, split: TokenizedSplit, seq_len: int, packing: str, pad_id: int) -> None:
        self.split, self.seq_len, self.packing, self.pad_id = split, seq_len, packing, pad_id
        if packing == "pack":
            self.count = len(split.tokens) // seq_len
        else:
            self.count = split.num_documents
        if self.count == 0:
            raise ValueError(f"seq_len {seq_len} is longer than the whole split {split.path.name}")

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels) for these rows, int64 arrays of shape (len, seq_len)."""
        length = self.seq_len
        if self.packing == "pack":
            starts = indices.astype(np.int64) * length
            ids = np.stack([self.split.tokens[s : s + length] for s in starts]).astype(np.int64)
            return ids, ids
        ids = np.full((len(indices), length), self.pad_id, dtype=np.int64)
        labels = np.full((len(indices), length), IGNORE_INDEX, dtype=np.int64)
        for row, doc in enumerate(indices):
            start, end = self.split.offsets[doc], self.split.offsets[doc + 1]
            tokens = self.split.tokens[start : min(end, start + length)]
            ids[row, : len(tokens)] = tokens
            labels[row, : len(tokens)] = tokens
        return ids, labels


class TrainOrder:
    """Sample k of the run is row ``perm_{k // n}[k % n]``: epochs reshuffle, and the
    order depends only on (seed, k), so the step number is the whole data position."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed = count, seed

    def rows(self, first: int, size: int) -> np.ndarray:
        samples = np.arange(first, first + size)
        epochs, positions = np.divmod(samples, self.count)
        return np.array(
            [self._permutation(int(e))[p] for e, p in zip(epochs, positions, strict=True)]
        )

    @lru_cache(maxsize=2)  # noqa: B019 - one instance per trial; bounded
    def _permutation(self, epoch: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.count, generator=generator, device="cpu").numpy()
