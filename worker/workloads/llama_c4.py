"""Llama pre-training on C4, the paper's main benchmark (Section 4.1, Appendix B.1)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import magma
from worker.config import TrialConfig
from worker.contract import COMPONENT_LABELS
from worker.data import corpus
from worker.data.batches import IGNORE_INDEX, Rows, TrainOrder
from worker.data.token_cache import TokenizedSplit, default_cache_dir, tokenized_split
from worker.data.tokenizer import load_tokenizer
from worker.models import build_model
from worker.workloads.base import Workload


def read_budget(config: TrialConfig, rows: int, large: bool) -> tuple[int | None, int | None]:
    """(max_documents, max_tokens) to read of a split whose trial uses ``rows`` rows.

    A small source (the bundled sample) is read whole, as far as ``max_documents``
    allows: its cache then serves trials of every length. A large one (a hub id, or more
    than 64 MiB of files) is read only as far as the rows need: ``rows x seq_len``
    tokens when packing (the document that reaches it is kept whole, so the last window
    is full), ``rows`` documents when truncating (one document per row). Training needs
    ``steps x batch_size`` rows (``batch_size`` already counts every micro-batch) and
    validation ``ceil(eval_tokens / seq_len)``. No margin beyond that is read: every
    row is then trained on once, in the seed's order."""
    if not large:
        return config.max_documents, None
    if config.packing == "pack":
        return config.max_documents, rows * config.seq_len
    return min(rows, config.max_documents or rows), None


class LlamaC4Workload(Workload):
    def __init__(self, config: TrialConfig, device: torch.device) -> None:
        super().__init__(config, device)
        tokenizer = load_tokenizer(config.tokenizer)
        cache_dir = config.cache_dir or default_cache_dir()
        eval_rows = math.ceil(config.eval_tokens / config.seq_len)
        splits: dict[str, TokenizedSplit] = {}
        for name, files, rows in (
            ("train", config.train_files, config.steps * config.batch_size),
            ("validation", config.validation_files, eval_rows),
        ):
            sources = corpus.resolve_sources(files, name)
            max_documents, max_tokens = read_budget(config, rows, corpus.is_large(sources))
            splits[name] = tokenized_split(
                sources, name, tokenizer, cache_dir, max_documents, max_tokens
            )
        self._model = build_model(config.model, config.seed, config.model_sha256).to(device)
        if tokenizer.vocab_size > self._model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but model {config.model!r} "
                f"only {self._model.config.vocab_size}"
            )
        self.train_rows = Rows(splits["train"], config.seq_len, config.packing, tokenizer.pad_id)
        self.eval_rows = Rows(
            splits["validation"], config.seq_len, config.packing, tokenizer.pad_id
        )
        self.order = TrainOrder(self.train_rows.count, config.seed)
        self.micro_batch = config.batch_size // config.grad_accum
        self.eval_indices = np.arange(min(self.eval_rows.count, eval_rows))
        self._autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if config.bf16(device.type)
            else nullcontext()
        )

    @property
    def model(self) -> nn.Module:
        return self._model

    def masked_params(self) -> dict[str, list[nn.Parameter]]:
        labels = COMPONENT_LABELS[self.config.components] or magma.COMPONENTS
        return magma.components(self._model, labels)

    def batch(self, step: int, micro_step: int) -> dict[str, Any]:
        first = step * self.config.batch_size + micro_step * self.micro_batch
        ids, labels = self.train_rows.get(self.order.rows(first, self.micro_batch))
        return self._to_device(ids, labels)

    def _to_device(self, ids: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        return {
            "input_ids": torch.from_numpy(ids).to(self.device, non_blocking=True),
            "labels": torch.from_numpy(labels).to(self.device, non_blocking=True),
            # Positions that are predicted: HF shifts labels left by one.
            "tokens": int((labels[:, 1:] != IGNORE_INDEX).sum()),
        }

    def tokens(self, batch: dict[str, Any]) -> int:
        return batch["tokens"]

    def loss(self, batch: dict[str, Any]) -> Tensor:
        with self._autocast:
            return self._model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

    @torch.no_grad()
    def row_losses(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(summed NLL, predicted tokens) of each validation row in ``indices``, float64 and
        int64 arrays: ``evaluate`` averages them over its rows, and any other subset of the
        split (``benchmarks/eval_noise.py``'s draws) is scored exactly as it is."""
        was_training = self._model.training
        self._model.eval()
        losses, counts = [], []
        for start in range(0, len(indices), self.micro_batch):
            ids, labels = self.eval_rows.get(indices[start : start + self.micro_batch])
            batch = self._to_device(ids, labels)
            with self._autocast:
                logits = self._model(input_ids=batch["input_ids"]).logits
            nll = nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                batch["labels"][:, 1:].flatten(),
                ignore_index=IGNORE_INDEX,
                reduction="none",
            )
            losses.append(nll.view(len(ids), -1).sum(1, dtype=torch.float64).cpu().numpy())
            counts.append((labels[:, 1:] != IGNORE_INDEX).sum(1))
        self._model.train(was_training)
        return np.concatenate(losses), np.concatenate(counts)

    def evaluate(self) -> dict[str, float]:
        """Perplexity = exp(mean NLL over every predicted validation token)."""
        losses, counts = self.row_losses(self.eval_indices)
        val_loss = float(losses.sum()) / max(int(counts.sum()), 1)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700.0))}
