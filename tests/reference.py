"""A plain reference implementation of Algorithm 1 (SkipUpdate / Magma), for the tests.

This file is the specification the library is checked against. It favours clarity over
speed: it lets the *unmodified* base optimizer take its full, dense step, and then moves
each masked tensor back along that step:

    theta <- theta_before - scale * m * Delta,     Delta = theta_before - theta_after_base

Per masked tensor ("block") b with a gradient, at every step t:

    g_t        the gradient as the base's moments see it: -grad if ``maximize``, plus
               weight_decay * theta_before for coupled (L2) decay (Adam without
               decoupled decay, RMSprop, SGD: ``coupled_decay`` in
               tests/optimizer_infos.py). The generic path (any optimizer not in its
               ``OPTIMIZERS``) uses the raw ``p.grad``.
    mu_t       the base's first moment after folding in g_t (its ``first_moment``:
               ``exp_avg`` for Adam, AdamW and C-AdamW; ``momentum_buffer`` for SGD with
               momentum and Muon); for RMSprop, LaProp, SGD without momentum and the
               generic path, our own mu_t = 0.9 mu_{t-1} + 0.1 g_t from mu_0 = 0.
               With ``momentum="previous"`` the cosine reads mu_{t-1} instead: the
               moment before the base's step (0 where it has none yet).
    s~_t       sigmoid(cos(mu_t, g_t) / tau), cos = 0 if either vector is zero; per row /
               column at those granularities, sign(mu_t * g_t) per element at "element".
    s_t        ema * s_{t-1} + (1 - ema) * s~_t, with s_1 = s~_1 (``score_init`` "first")
               or s_1 = ema * c + (1 - ema) * s~_1 (``score_init`` c), stored as float32.
    m_t        the mask (see ``_draw_masks`` for the exact RNG protocol).
    scale      1/p (uniform sampling without damping), s_t (damping), 1/s_t (alignment
               sampling without damping), 1 (no sampling, no damping: the plain base).
    decay      with ``decay_on_skip``, a masked-out block (m = 0) is theta (1 - lr * wd),
               the base's decoupled decay, instead of theta.

Scores are computed in float64 and stored in float32, and the parameter update is
formed in float64, so the library only has to agree up to float32 reordering error.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim import Optimizer

from tests.optimizer_infos import info_for

OWN_MOMENT_BETA = 0.9


def score_shape(param: Tensor, granularity: str) -> tuple[int, ...]:
    """Shape of one tensor's scores and mask. Rows are dim-0 slices, columns last-dim
    slices; tensors with fewer than 2 dims are always one block."""
    if granularity == "block" or param.dim() < 2:
        return ()
    if granularity == "element":
        return tuple(param.shape)
    if granularity == "row":
        return (param.shape[0],) + (1,) * (param.dim() - 1)
    if granularity == "column":
        return (1,) * (param.dim() - 1) + (param.shape[-1],)
    raise ValueError(granularity)


def slice_cosines(a: Tensor, b: Tensor) -> Tensor:
    """cos(a[i], b[i]) for every row i of two (n, k) matrices, in float64; 0 for a row
    where either vector is zero."""
    a, b = a.double(), b.double()
    dots = (a * b).sum(dim=1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, dots / torch.where(norms > 0, norms, 1.0), 0.0)


def cosine(a: Tensor, b: Tensor) -> float:
    """cos(a, b) of two whole tensors, in float64; 0 when either is zero."""
    return slice_cosines(a.reshape(1, -1), b.reshape(1, -1)).item()


def cosines(mu: Tensor, g: Tensor, granularity: str) -> Tensor:
    """cos(mu, g) per block / row / column (float64, in ``score_shape``); sign per element."""
    shape = score_shape(mu, granularity)
    if shape == ():
        return torch.tensor(cosine(mu, g), dtype=torch.float64)
    if granularity == "element":
        return torch.sign(mu.double() * g.double())
    if granularity == "row":  # slice i = mu[i, ...]
        n = mu.shape[0]
        values = slice_cosines(mu.reshape(n, -1), g.reshape(n, -1))
    else:  # column: slice j = mu[..., j]
        n = mu.shape[-1]
        values = slice_cosines(mu.movedim(-1, 0).reshape(n, -1), g.movedim(-1, 0).reshape(n, -1))
    return values.reshape(shape)


def _first_moment_key(base: Optimizer, group: dict) -> str | None:
    """The base state entry that is an EMA (or running sum) of g, or None."""
    info = info_for(base)
    return None if info is None else info.moment_key(group)


def moment_gradient(base: Optimizer, group: dict, param: Tensor) -> Tensor:
    """g as the base's moments see it, computed from theta *before* the step."""
    info = info_for(base)
    g = param.grad.detach().clone()
    if info is None:  # generic path: the raw gradient
        return g
    if group.get("maximize", False):
        g = -g
    if info.couples_decay(group) and group["weight_decay"] != 0:
        g = g + group["weight_decay"] * param.detach()
    return g


class ReferenceMasking:
    """Algorithm 1 around a base optimizer, written the obvious way.

    ``sampling``: "uniform" (m ~ Bernoulli(p)), "alignment" (m ~ Bernoulli(s_t)) or
    "none" (m = 1). ``damping``: scale by s_t. SkipUpdate is sampling="uniform",
    damping=False.
    """

    def __init__(
        self,
        base: Optimizer,
        params: list[Tensor],
        *,
        p: float = 0.5,
        tau: float = 2.0,
        ema: float = 0.9,
        granularity: str = "block",
        sampling: str = "uniform",
        damping: bool = True,
        seed: int = 0,
        score_init: str | float = "first",
        momentum: str = "updated",
        decay_on_skip: bool = False,
    ) -> None:
        self.base = base
        wanted = {id(q) for q in params}
        # The masked tensors in the base's param order (groups in order).
        self.masked = [q for grp in base.param_groups for q in grp["params"] if id(q) in wanted]
        assert len(self.masked) == len(wanted), "every masked tensor must be in the base"
        self.p, self.tau, self.ema = p, tau, ema
        self.granularity, self.sampling, self.damping = granularity, sampling, damping
        self.score_init, self.momentum, self.decay_on_skip = score_init, momentum, decay_on_skip
        self.scores: dict[int, Tensor] = {}  # id(param) -> float32 s_t
        self.own_mu: dict[int, Tensor] = {}  # id(param) -> our own first moment
        self.cpu_gen = torch.Generator().manual_seed(seed)
        self.dev_gen = torch.Generator().manual_seed(seed + 1)
        self.last_masks: list[Tensor] = []  # m_t of the last step, per tensor with a grad

    def zero_grad(self) -> None:
        self.base.zero_grad(set_to_none=True)

    def _group_of(self, param: Tensor) -> dict:
        return next(g for g in self.base.param_groups if any(q is param for q in g["params"]))

    @torch.no_grad()
    def step(self) -> None:
        # 1. Host block masks come first, one per masked tensor (with a grad or not).
        host_keep = None
        if self.granularity == "block" and self.sampling == "uniform":
            host_keep = (torch.rand(len(self.masked), generator=self.cpu_gen) < self.p).tolist()

        # 2. Snapshot theta and g before the base moves anything.
        active = [(i, q) for i, q in enumerate(self.masked) if q.grad is not None]
        before = [q.detach().clone() for _, q in active]
        grads = [moment_gradient(self.base, self._group_of(q), q) for _, q in active]
        previous_mus = [self._moment_before(q) for _, q in active]

        # 3. The base's own dense step: moments and parameters of every tensor.
        self.base.step()

        # 4. Per masked tensor, in param order: mu, score, mask, masked update.
        self.last_masks = []
        for (index, q), theta_before, g, mu_before in zip(
            active, before, grads, previous_mus, strict=True
        ):
            group = self._group_of(q)
            key = _first_moment_key(self.base, group)
            if key is not None:
                mu = self.base.state[q][key]
            else:
                mu = self.own_mu.get(id(q), torch.zeros_like(q))
                mu = OWN_MOMENT_BETA * mu + (1 - OWN_MOMENT_BETA) * g
                self.own_mu[id(q)] = mu
            if self.momentum == "previous":
                mu = mu_before

            fresh = torch.sigmoid(cosines(mu, g, self.granularity) / self.tau)
            if id(q) in self.scores:
                s = self.ema * self.scores[id(q)].double() + (1 - self.ema) * fresh
            elif self.score_init == "first":
                s = fresh
            else:
                s = self.ema * self.score_init + (1 - self.ema) * fresh
            self.scores[id(q)] = s.float()
            score = self.scores[id(q)]

            shape = score_shape(q, self.granularity)
            if self.sampling == "none":
                m = torch.ones(shape, dtype=torch.bool)
            elif host_keep is not None:
                m = torch.tensor(host_keep[index])
            else:
                chance = self.p if self.sampling == "uniform" else score
                m = torch.rand(shape, generator=self.dev_gen) < chance
            self.last_masks.append(m)

            if self.damping:
                scale = score.double()
            elif self.sampling == "alignment":
                scale = 1.0 / score.double()
            elif self.sampling == "uniform":
                scale = torch.tensor(1.0 / self.p, dtype=torch.float64)
            else:  # no sampling, no damping: the plain base step
                scale = torch.tensor(1.0, dtype=torch.float64)

            delta = theta_before.double() - q.double()
            decay = self._decay(group) * (1 - m.double()) * theta_before.double()
            q.copy_(theta_before.double() - scale * m.double() * delta - decay)

    def _moment_before(self, param: Tensor) -> Tensor:
        """mu_{t-1}: the first moment before this step (zeros where there is none yet)."""
        key = _first_moment_key(self.base, self._group_of(param))
        if key is not None:
            mu = self.base.state.get(param, {}).get(key)
        else:
            mu = self.own_mu.get(id(param))
        return torch.zeros_like(param) if mu is None else mu.detach().clone()

    def _decay(self, group: dict) -> float:
        """lr * wd where ``decay_on_skip`` applies the base's decoupled decay, else 0."""
        info = info_for(self.base)
        if not self.decay_on_skip or group.get("weight_decay", 0) == 0:
            return 0.0
        assert info is not None and not info.couples_decay(group), "no decoupled decay"
        return group["lr"] * group["weight_decay"]


def expected_block_keeps(seed: int, n_masked: int, p: float, steps: int) -> list[list[bool]]:
    """Block masks of uniform block sampling for ``steps`` steps, per the RNG protocol."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(n_masked, generator=gen) < p).tolist() for _ in range(steps)]


def alignment_score(mu: Tensor, g: Tensor, tau: float) -> float:
    """s~ = sigmoid(cos(mu, g) / tau) for one block, in float64."""
    return 1.0 / (1.0 + math.exp(-cosine(mu, g) / tau))
