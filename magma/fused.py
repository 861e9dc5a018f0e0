"""Compiled ("fused") masked step for the Adam family: ``fused=`` on Magma/SkipUpdate.

The eager path (``magma.rules``) is a chain of foreach kernels, each a full pass over
memory. Here the same math is two ``torch.compile``'d kernels: ``moments``, one dense graph
per bucket (the moments and Magma's score in one pass), and ``update``, one launch per
surviving block. Which bases and settings qualify (``FUSED_BASES``), and how it is tested,
is in the README ("Fused step").

Masks are known on the host, so a masked-out block's parameter is not read or written at
all (its gradient, moments and score still are: Algorithm 1 keeps them dense). A single
where-masked kernel per bucket would launch once but rewrite every masked-out parameter,
so it is not used. Hyperparameters are Python floats (a changing lr becomes a graph input
after one recompile); structural flags are constants of the graph.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from magma.bases import FUSED_BASES as FUSED_BASES  # re-exported: magma.fused.FUSED_BASES
from magma.replicas import broadcastable, slice_mean
from magma.rules import rule_for
from magma.rules.adam import AdamRule, _decoupled
from magma.rules.base import ParamGroup, UpdateRule, step_value
from magma.rules.cautious_adamw import CAUTION_FLOOR, CautiousAdamWRule
from magma.rules.laprop import LaPropRule

_TINY = torch.finfo(torch.float32).tiny

#: the rules of the bases whose masked step the kernels compile (``FUSED_BASES``, named in
#: ``magma.bases``): what ``magma.rules.rule_for`` gives for those exact types
_FUSED_RULES = (AdamRule, CautiousAdamWRule, LaPropRule)


def _seen(
    param: Tensor, grad: Tensor, weight_decay: float, *, maximize: bool, coupled_decay: bool
) -> Tensor:
    """The gradient as the base's moments see it."""
    g = -grad if maximize else grad
    return g + weight_decay * param if coupled_decay else g


def _moments(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    own_moments: list[Tensor],
    bias_corrections2_sqrt: list[float],
    previous: Tensor | None,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    own_beta: float,
    tau: float,
    ema: float,
    *,
    maximize: bool,
    coupled_decay: bool,
    amsgrad: bool,
    normalised: bool,
    replicated: bool,
) -> Tensor | None:
    """Dense moment update of a bucket; the new float32 scores when ``previous`` is given.

    ``normalised`` (LaProp): ``exp_avg`` averages g / (sqrt(v / bc2) + eps), written as
    its rule does, with ``bias_corrections2_sqrt`` the host's sqrt(bc2) per tensor.
    ``own_moments``: the wrapper's EMAs of g (factor ``own_beta``) to score with, or empty
    when ``exp_avg`` is mu. ``replicated``: one score per replica (dim 0), each over its
    slice; ``previous`` then has a column per replica.
    """
    new_scores = []
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(
        zip(params, grads, exp_avgs, exp_avg_sqs, strict=True)
    ):
        g = _seen(param, grad, weight_decay, maximize=maximize, coupled_decay=coupled_decay)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if normalised:
            bc2_sqrt = bias_corrections2_sqrt[i]
            exp_avg.lerp_(g / ((exp_avg_sq.sqrt() + eps * bc2_sqrt) / bc2_sqrt), 1 - beta1)
        else:
            exp_avg.lerp_(g, 1 - beta1)
        if amsgrad:
            max_exp_avg_sqs[i].copy_(torch.maximum(max_exp_avg_sqs[i], exp_avg_sq))
        if previous is not None:
            mu = own_moments[i].lerp_(g, 1 - own_beta) if own_moments else exp_avg
            mu, gf = mu.float(), g.float()
            if replicated:  # one row per replica, each reduced on its own
                mu, gf = mu.reshape(mu.shape[0], -1), gf.reshape(gf.shape[0], -1)
                norms = mu.square().sum(1).sqrt() * gf.square().sum(1).sqrt()
                fresh = torch.sigmoid((mu * gf).sum(1) / norms.clamp_min(_TINY) / tau)
            else:
                norms = mu.square().sum().sqrt() * gf.square().sum().sqrt()
                fresh = torch.sigmoid((mu * gf).sum() / norms.clamp_min(_TINY) / tau)
            new_scores.append(fresh)
    if previous is None:
        return None
    fresh = torch.stack(new_scores)
    return torch.where(previous.isnan(), fresh, previous * ema + fresh * (1 - ema))


def _adam_direction(
    exp_avg: Tensor,
    second: Tensor,
    step: float | Tensor,
    beta1: float,
    beta2: float,
    lr: float,
    eps: float,
    scale: float | Tensor,
) -> Tensor:
    """scale * lr * m_hat / (sqrt(v_hat) + eps) in float32.

    ``step`` is a host number, or the base's on-device counter (capturable or fused
    bases), whose bias corrections are then computed here rather than by extra launches.
    """
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = second.float().sqrt() / bias_correction2_sqrt + eps
    return (scale * lr / bias_correction1) * exp_avg.float() / denom


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
    """Adam/AdamW: theta <- theta - scale * Delta for one surviving block (``decay`` =
    lr * wd when decoupled, else 0)."""
    update = _adam_direction(exp_avg, second, step, beta1, beta2, lr, eps, scale)
    param.copy_(param.float() * (1 - scale * decay) - update)


def _cautious_update(
    param: Tensor,
    exp_avg: Tensor,
    second: Tensor,
    grad: Tensor,
    step: float | Tensor,
    beta1: float,
    beta2: float,
    lr: float,
    eps: float,
    weight_decay: float,
    decay: float,
    scale: float | Tensor,
    *,
    maximize: bool,
    coupled_decay: bool,
    replicated: bool = False,
) -> None:
    """C-AdamW: Adam's update kept where it agrees in sign with g (as the moments saw it),
    rescaled by 1 / max(fraction kept, CAUTION_FLOOR) (of each replica's slice when
    ``replicated``); ``decay`` = lr * wd."""
    update = _adam_direction(exp_avg, second, step, beta1, beta2, lr, eps, scale)
    g = _seen(param, grad, weight_decay, maximize=maximize, coupled_decay=coupled_decay)
    agree = (exp_avg * g > 0).float()
    kept = slice_mean(agree) if replicated else agree.mean()
    update = update * (agree / kept.clamp_min(CAUTION_FLOOR))
    param.copy_(param.float() * (1 - scale * decay) - update)


def _laprop_update(
    param: Tensor,
    exp_avg: Tensor,
    step: float,
    beta1: float,
    lr: float,
    decay: float,
    scale: float | Tensor,
) -> None:
    """LaProp: Delta = lr * m / bc1 (``exp_avg`` is already normalised); ``decay`` = lr * wd."""
    update = (scale * lr / (1 - beta1**step)) * exp_avg.float()
    param.copy_(param.float() * (1 - scale * decay) - update)


class _Kernels(NamedTuple):
    moments: Callable[..., Tensor | None]
    update: Callable[..., None]
    cautious_update: Callable[..., None]
    laprop_update: Callable[..., None]


@functools.cache
def _kernels() -> _Kernels:
    """Compiled on first use, so importing magma does not load the compiler stack.

    The updates are separate functions because dynamo's recompile limit (8 graphs by
    default) counts per function: tensor ranks x scale kinds can fill it for one base.
    """
    return _Kernels(
        torch.compile(_moments),
        torch.compile(_update, dynamic=True),
        torch.compile(_cautious_update, dynamic=True),
        torch.compile(_laprop_update, dynamic=True),
    )


def supports(optimizer: Optimizer, group: ParamGroup) -> bool:
    """Whether the fused kernels reproduce the base's math for this group."""
    return type(rule_for(optimizer, group)) in _FUSED_RULES


def masked_step(
    rule: UpdateRule,
    group: ParamGroup,
    params: list[Tensor],
    states: list[dict[str, Tensor]],
    keep: list[bool] | list[tuple[bool, ...]],
    previous: Tensor | None,
    own_moments: list[Tensor],
    own_beta: float,
    scale: float | None,
    tau: float,
    ema: float,
    *,
    replicated: bool = False,
) -> Tensor | None:
    """One masked step of a bucket whose states exist, for a base ``supports`` accepts
    (``rule``: its rule).

    ``keep``: the host mask per tensor. ``previous``: s_{t-1} of each tensor as one float32
    vector (NaN where there is none yet) when scores are needed, else None.
    ``own_moments``: the wrapper's first moments (EMA factor ``own_beta``) to score with,
    for a rule without ``first_moment_key``, else empty. ``scale``: the survivors' constant
    scale, or None for Magma's damping (each survivor's new s_t). Returns the new scores
    (the vector) or None.

    ``replicated``: dim 0 of each tensor indexes replicas; ``keep`` holds a bool per
    replica, scores are per replica (``previous`` and the result a (tensors, S) matrix),
    and a tensor with any replica kept is written whole, the others' slices scaled by 0.
    """
    normalised = isinstance(rule, LaPropRule)
    cautious = isinstance(rule, CautiousAdamWRule)
    beta1, beta2 = group["betas"]
    lr, eps, maximize = group["lr"], group["eps"], bool(group["maximize"])
    amsgrad = not normalised and bool(group["amsgrad"])
    weight_decay = float(group["weight_decay"])
    # LaProp's decay is always decoupled; C-AdamW adds lr * wd * theta to Delta whatever
    # the group's flag (its rule's direction); Adam only when decoupled (AdamW).
    coupled_decay = not normalised and weight_decay != 0 and not _decoupled(group)
    decay = lr * weight_decay if normalised or cautious or _decoupled(group) else 0.0
    exp_avgs = [s["exp_avg"] for s in states]
    torch._foreach_add_([s["step"] for s in states], 1)
    steps = [step_value(s["step"]) for s in states]
    kernels = _kernels()
    new_scores = kernels.moments(
        params,
        [q.grad for q in params],
        exp_avgs,
        [s["exp_avg_sq"] for s in states],
        [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
        own_moments,
        [math.sqrt(1 - beta2**t) for t in steps] if normalised else [],
        previous,
        beta1,
        beta2,
        eps,
        weight_decay,
        own_beta,
        tau,
        ema,
        maximize=maximize,
        coupled_decay=coupled_decay,
        amsgrad=amsgrad,
        normalised=normalised,
        replicated=replicated,
    )
    if not any(map(any, keep) if replicated else keep):
        return new_scores
    seconds = [] if normalised else AdamRule()._second_moments(group, states)
    for i, q in enumerate(params):
        if not (any(keep[i]) if replicated else keep[i]):
            continue
        s = new_scores[i] if scale is None else scale
        if replicated:  # the survivors' scale per replica, 0 for the masked-out slices
            kept = torch.tensor(keep[i], dtype=torch.float32).to(q.device)
            s = broadcastable(kept * s, q.dim())
        if normalised:
            kernels.laprop_update(q, exp_avgs[i], steps[i], beta1, lr, decay, s)
        elif cautious:
            kernels.cautious_update(
                q,
                exp_avgs[i],
                seconds[i],
                q.grad,
                steps[i],
                beta1,
                beta2,
                lr,
                eps,
                weight_decay,
                decay,
                s,
                maximize=maximize,
                coupled_decay=coupled_decay,
                replicated=replicated,
            )
        else:
            kernels.update(q, exp_avgs[i], seconds[i], steps[i], beta1, beta2, lr, eps, decay, s)
    return new_scores
