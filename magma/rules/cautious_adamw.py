"""Cautious AdamW, "C-AdamW" (Liang et al. 2024), for comparison with Magma.

AdamW's moments, but each coordinate of the update is kept only where it agrees in
sign with the current gradient (``exp_avg * grad > 0``), and the kept ones are
rescaled by 1 / mean(mask) (clamped at 1e-3) so the update keeps its magnitude:

    u = m_hat / (sqrt(v_hat) + eps);  c = 1[exp_avg * g > 0] / max(mean(c), 1e-3)
    Delta = lr * u * c + lr * wd * theta

``exp_avg`` is an EMA of raw gradients and serves as mu. A group with ``replicas`` (dim 0
stacks independent replicas) takes mean(c) over each replica's slice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from magma.replicas import slice_mean
from magma.rules.adam import AdamRule
from magma.rules.base import ParamGroup

#: the floor on mean(c), the fraction of coordinates kept, before dividing by it
CAUTION_FLOOR = 1e-3


class CautiousAdamWRule(AdamRule):
    def supports(self, group: ParamGroup) -> bool:
        return True

    def decoupled_decay(self, group: ParamGroup) -> float | Tensor | None:
        return group["lr"] * group["weight_decay"]  # decoupled whatever the group's flag

    def direction(self, group, params, grads, states):
        lr, wd = group["lr"], group["weight_decay"]
        decay_free = {**group, "weight_decay": 0.0}
        deltas = super().direction(decay_free, params, grads, states)
        exp_avgs = [s["exp_avg"] for s in states]
        replicated = group.get("replicas") is not None
        for delta, exp_avg, grad in zip(deltas, exp_avgs, grads, strict=True):
            agree = (exp_avg * grad > 0).to(delta.dtype)
            kept = slice_mean(agree) if replicated else agree.mean()
            agree.div_(kept.clamp_(min=CAUTION_FLOOR))
            delta.mul_(agree)
        if wd != 0:
            torch._foreach_add_(deltas, params, alpha=lr * wd)
        return deltas

    def apply(self, group, params, grads, states, scales) -> None:
        super(AdamRule, self).apply(group, params, grads, states, scales)
