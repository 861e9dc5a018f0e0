"""LaProp (Ziyin et al. 2020): momentum over RMS-normalised gradients.

    v_t = beta2 v + (1 - beta2) g^2
    m_t = beta1 m + (1 - beta1) g / (sqrt(v_t / bc2_t) + eps)
    Delta = lr * m_t / bc1_t + lr * wd * theta

``exp_avg`` accumulates *normalised* gradients, not raw ones, so the wrapper keeps
its own first moment for the alignment score.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from magma.rules.base import ParamGroup, UpdateRule, maximized_with_decay, step_value


class LaPropRule(UpdateRule):
    first_moment_key = None

    def init_state(self, group: ParamGroup, param: Tensor) -> dict[str, Tensor]:
        return {
            "step": torch.tensor(0.0, device="cpu"),  # a host counter, whatever the default device
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    def seen_gradients(self, group, params, grads):
        return maximized_with_decay(group, params, grads, 0.0)

    def decoupled_decay(self, group: ParamGroup) -> float | Tensor | None:
        return group["lr"] * group["weight_decay"]

    def update_moments(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        grads = self.seen_gradients(group, params, grads)
        torch._foreach_add_([s["step"] for s in states], 1)
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        bc2_sqrt = [math.sqrt(1 - beta2 ** step_value(s["step"])) for s in states]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, [group["eps"] * b for b in bc2_sqrt])
        torch._foreach_div_(denom, bc2_sqrt)
        normalised = torch._foreach_div(grads, denom)
        torch._foreach_lerp_([s["exp_avg"] for s in states], normalised, 1 - beta1)
        return grads

    def direction(self, group, params, grads, states):
        beta1 = group["betas"][0]
        lr = group["lr"]
        factors = [lr / (1 - beta1 ** step_value(s["step"])) for s in states]
        deltas = torch._foreach_mul([s["exp_avg"] for s in states], factors)
        if group["weight_decay"] != 0:
            torch._foreach_add_(deltas, params, alpha=lr * group["weight_decay"])
        return deltas
