"""SkipUpdate: unbiased random block masking (Joo et al. 2026, Section 2)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from torch import Tensor
from torch.optim import Optimizer

from magma.masked import MaskedOptimizer


class SkipUpdate(MaskedOptimizer):
    """Each masked block survives a step with probability ``p`` and is scaled by 1/p,
    so the expected update equals the base optimizer's; moments stay dense. ``fused`` as
    for Magma: the compiled step of the Adam family (None: on CUDA where it applies).
    ``replicas`` as for Magma: dim 0 indexes S replicas, each masked as by its own seed.
    ``decay_on_skip`` as for Magma: a masked-out block still takes the decoupled decay."""

    def __init__(
        self,
        optimizer: Optimizer,
        p: float = 0.5,
        params: Iterable[Tensor] | Mapping[str, Iterable[Tensor]] | None = None,
        granularity: str = "block",
        seed: int | Sequence[int] | None = None,
        *,
        fused: bool | None = None,
        replicas: int | None = None,
        decay_on_skip: bool = False,
    ) -> None:
        super().__init__(
            optimizer,
            p=p,
            params=params,
            granularity=granularity,
            seed=seed,
            sampling="uniform",
            damping=False,
            tau=1.0,
            ema=0.0,
            fused=fused,
            replicas=replicas,
            decay_on_skip=decay_on_skip,
        )
