"""What the trainer needs from a problem, whether Llama on C4 or a synthetic one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from worker.config import TrialConfig


class Workload(ABC):
    """A model, deterministic batches, a loss and an evaluation.

    Batches are a pure function of ``(config.seed, step, micro_step)``, so a resumed
    trial needs no data-loader state: the step number is the data position.
    """

    def __init__(self, config: TrialConfig, device: torch.device) -> None:
        self.config = config
        self.device = device

    @property
    @abstractmethod
    def model(self) -> nn.Module: ...

    def tokens(self, batch: Any) -> int:
        """Tokens a batch trains on, known on the host (0 for non-token workloads)."""
        return 0

    @abstractmethod
    def masked_params(self) -> dict[str, list[nn.Parameter]]:
        """The tensors Magma/SkipUpdate mask, by component label (``config.components``)."""

    @abstractmethod
    def batch(self, step: int, micro_step: int) -> Any: ...

    @abstractmethod
    def loss(self, batch: Any) -> Tensor: ...

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics; must include ``val_loss`` (and ``val_ppl`` for language): the
        names ``worker.contract.WORKLOAD_METRICS`` promises."""
