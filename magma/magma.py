"""Magma: momentum-aligned gradient masking (Joo et al. 2026, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from torch import Tensor
from torch.optim import Optimizer

from magma.choices import MOMENTA, SCORE_INIT_FIRST
from magma.masked import MaskedOptimizer


class Magma(MaskedOptimizer):
    """Each masked block survives a step with probability ``p`` and is then scaled by
    ``s_t``, an EMA (``ema``) of sigmoid(cos(mu_t, g_t) / ``tau``).

    ``sampling`` and ``damping`` expose the Table A2 ablations: ``sampling="uniform"``
    is Bernoulli(p), ``"alignment"`` uses s_t as the survival probability, ``"none"``
    keeps every block; ``damping=False`` rescales survivors by 1/p (or 1/s_t) instead
    of s_t. The defaults are the paper's: p=0.5, tau=2, ema=0.9, block granularity.
    ``fused``: the compiled step of ``magma.fused`` for the bases in its ``FUSED_BASES``
    (None: on CUDA where it applies; True: forced, ValueError where impossible; False:
    the eager foreach path). ``replicas``: S when every masked tensor stacks S independent
    replicas along dim 0; each is masked, scored and drawn as a separate Magma with its own
    seed (``seed``: S ints, or an int ``seed + r``) would (``magma.replicas``).
    ``score_init``: s_0, which Algorithm 1 leaves undefined: "first" (s_1 = s~_1, the
    default) or a number in [0, 1] (0.5 and 1.0 are what other implementations use).
    ``momentum``: which first moment the cosine uses: "updated" (mu_t, Algorithm 1) or
    "previous" (mu_{t-1}, before this step's update, as the NorMuon pull requests do).
    ``decay_on_skip``: a masked-out block still takes the base's decoupled weight decay,
    theta <- theta (1 - lr * wd), as the base alone would (False: the decay is part of the
    masked update, Algorithm 1's Delta); ValueError for a base that couples its decay.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        p: float = 0.5,
        tau: float = 2.0,
        ema: float = 0.9,
        params: Iterable[Tensor] | Mapping[str, Iterable[Tensor]] | None = None,
        granularity: str = "block",
        seed: int | Sequence[int] | None = None,
        *,
        sampling: str = "uniform",
        damping: bool = True,
        fused: bool | None = None,
        replicas: int | None = None,
        score_init: str | float = SCORE_INIT_FIRST,
        momentum: str = MOMENTA[0],
        decay_on_skip: bool = False,
    ) -> None:
        super().__init__(
            optimizer,
            p=p,
            params=params,
            granularity=granularity,
            seed=seed,
            sampling=sampling,
            damping=damping,
            tau=tau,
            ema=ema,
            fused=fused,
            replicas=replicas,
            score_init=score_init,
            momentum=momentum,
            decay_on_skip=decay_on_skip,
        )

    def _describe(self) -> str:
        return (
            f"tau={self.tau}, ema={self.ema}, sampling={self.sampling!r}, damping={self.damping}, "
            f"score_init={self.score_init!r}, momentum={self.momentum!r}, "
            f"decay_on_skip={self.decay_on_skip}, "
        )
