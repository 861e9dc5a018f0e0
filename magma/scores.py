"""Momentum-gradient alignment (Section 3, eq. 3) at each masking granularity.

Pure functions over tensors; the wrapper owns the EMA state. Scores are float32
whatever the parameter dtype, so bf16 training does not quantise the EMA.
"""

from __future__ import annotations

import torch
from torch import Tensor

GRANULARITIES = ("block", "row", "column", "element")

_TINY = torch.finfo(torch.float32).tiny


def score_shape(param: Tensor, granularity: str, replicated: bool = False) -> tuple[int, ...]:
    """Shape of one parameter's scores and mask; broadcasts against the parameter.

    A row is a slice along dim 0 and a column a slice along the last dim; tensors
    with fewer than two dims have neither, so they are masked as one block.
    ``replicated``: dim 0 indexes replicas, each slice scored as a tensor of its own,
    so the shape is (S, *the slice's); (S,) for one block per replica.
    """
    if replicated:
        return (param.shape[0], *_slice_score_shape(tuple(param.shape[1:]), granularity))
    return _slice_score_shape(tuple(param.shape), granularity)


def _slice_score_shape(shape: tuple[int, ...], granularity: str) -> tuple[int, ...]:
    if granularity == "block" or len(shape) < 2:
        return ()
    if granularity == "element":
        return shape
    keep = 0 if granularity == "row" else len(shape) - 1
    return tuple(n if d == keep else 1 for d, n in enumerate(shape))


def block_cosines(mus: list[Tensor], grads: list[Tensor]) -> Tensor:
    """cos(mu_b, g_b) for every block, as one float32 vector, without host syncs."""
    pairs = zip(mus, grads, strict=True)
    # vdot conjugates its first argument: Re<mu, g> is the real inner product.
    dots = torch.stack([torch.vdot(m.reshape(-1), g.reshape(-1)).real for m, g in pairs])
    norms_mu = torch.stack(torch._foreach_norm(mus))
    norms_g = torch.stack(torch._foreach_norm(grads))
    return dots.float() / (norms_mu.float() * norms_g.float()).clamp_min(_TINY)


def sliced_cosine(mu: Tensor, grad: Tensor, granularity: str, replicated: bool = False) -> Tensor:
    """cos(mu, g) per row, column or element of one tensor, in ``score_shape``;
    ``replicated``: per replica (dim 0) as well, a block being each replica's slice."""
    shape = score_shape(mu, granularity, replicated)
    lead = 1 if replicated else 0
    if replicated and len(shape) == lead:  # one block per replica: reduce its flat slice
        mu, grad = mu.reshape(*shape, -1), grad.reshape(*shape, -1)
    product = (mu.conj() * grad).real.float() if mu.is_complex() else mu.float() * grad.float()
    if granularity == "element" and len(shape) > lead:
        return torch.sign(product)
    dims = [d for d in range(lead, mu.dim()) if d >= len(shape) or shape[d] == 1]
    keep = len(shape) > lead
    norms = mu.abs().float().square().sum(dims, keepdim=keep) * grad.abs().float().square().sum(
        dims, keepdim=keep
    )
    return product.sum(dims, keepdim=keep) / norms.sqrt().clamp_min(_TINY)


def alignment(cosine: Tensor, tau: float) -> Tensor:
    """s~ = sigmoid(cos / tau): in (0, 1), 0.5 for orthogonal moment and gradient."""
    return torch.sigmoid(cosine / tau)


def smoothed(previous: Tensor | None, fresh: Tensor, ema: float) -> Tensor:
    """s_t = ema * s_{t-1} + (1 - ema) * s~_t, starting at s_1 = s~_1."""
    if previous is None:
        return fresh
    return previous * ema + fresh * (1 - ema)
