"""Replicated parameters: S independent copies of a model trained as one batched model,
every tensor stacked along a new leading dimension of size S (as
``torch.func.stack_module_state`` does). Elementwise base optimizers are then exactly
per-replica; what reduces over a tensor (Magma's scores and masks, C-AdamW's caution,
Muon's orthogonalisation) must reduce over each leading slice instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def check_replicas(replicas: object) -> int | None:
    """``replicas`` as validated: None (no replicas) or an int >= 1."""
    if replicas is None:
        return None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise ValueError(f"replicas must be None or an int >= 1, got {replicas!r}")
    return replicas


def check_stacked(tensors: Iterable[Tensor], replicas: int, what: str) -> None:
    """ValueError unless every tensor's leading dimension indexes the ``replicas``."""
    for t in tensors:
        if t.dim() == 0 or t.shape[0] != replicas:
            raise ValueError(
                f"replicas={replicas}: every {what} must have shape[0] == {replicas}, "
                f"got a tensor of shape {tuple(t.shape)}"
            )


def replica_seeds(seed: int | Sequence[int] | None, replicas: int | None) -> tuple[int, ...]:
    """Each replica's mask seed: a sequence gives them, an int ``seed + r``, None
    ``torch.initial_seed() + r``. Without replicas, the one seed."""

    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if seed is not None and not is_int(seed):
        if isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence):
            raise ValueError(f"seed must be an int, a sequence of ints or None, got {seed!r}")
        if replicas is None:
            raise ValueError(f"a sequence of seeds needs replicas; got seed={list(seed)!r}")
        if len(seed) != replicas or not all(is_int(s) for s in seed):
            raise ValueError(f"seed must hold one int per replica ({replicas}), got {list(seed)!r}")
        return tuple(int(s) for s in seed)
    first = int(seed) if seed is not None else torch.initial_seed()
    return tuple(first + r for r in range(replicas or 1))


def slice_mean(x: Tensor) -> Tensor:
    """The mean of each leading slice, shaped (S, 1, ..., 1) to broadcast against ``x``."""
    return x.reshape(x.shape[0], -1).mean(1).reshape(x.shape[:1] + (1,) * (x.dim() - 1))


def broadcastable(per_replica: Tensor, dims: int) -> Tensor:
    """A per-replica tensor (leading dim S) padded with trailing unit dims to ``dims``."""
    return per_replica.reshape(per_replica.shape + (1,) * (dims - per_replica.dim()))
