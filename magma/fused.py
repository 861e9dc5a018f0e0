"""Compiled ("fused") Adam/AdamW step for the masked wrapper: ``fused=`` on Magma/SkipUpdate.

The eager path (``magma.rules.adam.AdamRule``) runs a chain of foreach kernels, each a
full pass over memory. Here the same math is two ``torch.compile``'d functional kernels:

- ``moments``: one graph per bucket (its fixed list of tensors). For every block: the
  gradient as the moments see it (``maximize``, coupled L2 decay), ``exp_avg``,
  ``exp_avg_sq`` (and the ``amsgrad`` maximum), and for Magma the alignment score
  s_t = ema * s_{t-1} + (1 - ema) * sigmoid(cos(mu_t, g_t) / tau), whose dot product
  and norms are reduced in the kernels that update the moments. A block without a
  previous score passes NaN and takes s~_t in-graph: no host sync, no branching on values.
- ``update``: one dynamic-shape graph per tensor rank, run for each surviving block:
  theta <- theta * (1 - scale lr wd) - scale lr m_hat / (sqrt(v_hat) + eps), the scale
  (1/p, or Magma's on-device s_t) multiplied inside the kernel, in float32.

Masks must be known on the host (block granularity, uniform or no sampling, where the
wrapper draws them from its CPU generator), which is what lets a masked-out block skip
its parameter entirely: it is not read, computed on or written. What it does not skip:
its gradient, moments and score, which Algorithm 1 keeps dense. Survivors cost one
``update`` launch each; a single where-masked kernel per bucket would launch once but
rewrite every masked-out parameter, so it is not used.

Hyperparameters are Python floats (torch.compile makes a changing lr or bias correction
a graph input after one recompile); structural flags are constants of the graph. A
bucket whose list changes (a tensor without a gradient) compiles another graph.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from magma.rules.adam import AdamRule, _decoupled
from magma.rules.base import ParamGroup, step_value

_TINY = torch.finfo(torch.float32).tiny


def _moments(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    previous: Tensor | None,
    beta1: float,
    beta2: float,
    weight_decay: float,
    tau: float,
    ema: float,
    *,
    maximize: bool,
    coupled_decay: bool,
    amsgrad: bool,
) -> Tensor | None:
    """Dense moment update of a bucket; the new float32 scores when ``previous`` is given."""
    new_scores = []
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(
        zip(params, grads, exp_avgs, exp_avg_sqs, strict=True)
    ):
        g = -grad if maximize else grad
        if coupled_decay:
            g = g + weight_decay * param
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if amsgrad:
            max_exp_avg_sqs[i].copy_(torch.maximum(max_exp_avg_sqs[i], exp_avg_sq))
        if previous is not None:
            mu, gf = exp_avg.float(), g.float()
            norms = mu.square().sum().sqrt() * gf.square().sum().sqrt()
            fresh = torch.sigmoid((mu * gf).sum() / norms.clamp_min(_TINY) / tau)
            new_scores.append(fresh)
    if previous is None:
        return None
    fresh = torch.stack(new_scores)
    return torch.where(previous.isnan(), fresh, previous * ema + fresh * (1 - ema))


def _update(
    param: Tensor,
    exp_avg: Tensor,
    second: Tensor,
    step: float | Tensor,
    beta1: float,
    beta2: float,
    lr: float,
    eps: float,
    decay: float,
    scale: float | Tensor,
) -> None:
    """theta <- theta - scale * Delta for one surviving block (``decay`` = lr * wd, decoupled).

    ``step`` is a host number, or the base's on-device counter (capturable or fused
    bases), whose bias corrections are then computed here rather than by extra launches.
    """
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = second.float().sqrt() / bias_correction2_sqrt + eps
    update = (scale * lr / bias_correction1) * exp_avg.float() / denom
    param.copy_(param.float() * (1 - scale * decay) - update)


@functools.cache
def _kernels() -> tuple[Callable[..., Tensor | None], Callable[..., None]]:
    """Compiled on first use, so importing magma does not load the compiler stack."""
    return torch.compile(_moments), torch.compile(_update, dynamic=True)


def supports(optimizer: torch.optim.Optimizer, group: ParamGroup) -> bool:
    """Whether the fused kernels reproduce the base's math for this group."""
    return type(optimizer) in (torch.optim.Adam, torch.optim.AdamW) and AdamRule().supports(group)


def adam_step(
    group: ParamGroup,
    params: list[Tensor],
    states: list[dict[str, Tensor]],
    keep: list[bool],
    previous: Tensor | None,
    scale: float | None,
    tau: float,
    ema: float,
) -> Tensor | None:
    """One masked Adam/AdamW step of a bucket whose states exist.

    ``keep``: the host mask per tensor. ``previous``: s_{t-1} of each tensor as one float32
    vector (NaN where there is none yet) when scores are needed, else None. ``scale``: the
    survivors' constant scale, or None for Magma's damping (each survivor's new s_t).
    Returns the new scores (the vector) or None.
    """
    beta1, beta2 = group["betas"]
    amsgrad = bool(group["amsgrad"])
    weight_decay = float(group["weight_decay"])
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    torch._foreach_add_([s["step"] for s in states], 1)
    moments_kernel, update_kernel = _kernels()
    new_scores = moments_kernel(
        params,
        [q.grad for q in params],
        exp_avgs,
        exp_avg_sqs,
        [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
        previous,
        beta1,
        beta2,
        weight_decay,
        tau,
        ema,
        maximize=bool(group["maximize"]),
        coupled_decay=weight_decay != 0 and not _decoupled(group),
        amsgrad=amsgrad,
    )
    if not any(keep):
        return new_scores
    seconds = AdamRule()._second_moments(group, states)
    lr, eps = group["lr"], group["eps"]
    decay = lr * weight_decay if _decoupled(group) else 0.0
    for i, q in enumerate(params):
        if keep[i]:
            update_kernel(
                q,
                exp_avgs[i],
                seconds[i],
                step_value(states[i]["step"]),
                beta1,
                beta2,
                lr,
                eps,
                decay,
                new_scores[i] if scale is None else scale,
            )
    return new_scores
