"""torch.optim.Adam and AdamW (including ``amsgrad`` and ``maximize``).

The first moment ``exp_avg`` is an EMA of raw gradients, so the alignment score
reuses it. Delta = lr * m_hat / (sqrt(v_hat) + eps), plus lr * wd * theta for the
decoupled (AdamW) weight decay; Adam's coupled L2 decay is folded into the gradient
before the moments, exactly as torch does.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from magma.rules.base import (
    Corrections,
    ParamGroup,
    Scales,
    UpdateRule,
    bias_corrections,
    decoupled_decay_,
    maximized_with_decay,
    step_sizes,
)


def _decoupled(group: ParamGroup) -> bool:
    return bool(group.get("decoupled_weight_decay", False))


class AdamRule(UpdateRule):
    first_moment_key = "exp_avg"

    def supports(self, group: ParamGroup) -> bool:
        return not group.get("differentiable", False)

    def init_state(self, group: ParamGroup, param: Tensor) -> dict[str, Tensor]:
        on_device = group.get("capturable", False) or group.get("fused", False)
        step_dtype = _get_scalar_dtype(is_fused=group.get("fused", False))
        state = {
            "step": torch.zeros((), dtype=step_dtype, device=param.device)
            if on_device
            else torch.tensor(0.0, dtype=_get_scalar_dtype()),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def seen_gradients(self, group, params, grads):
        coupled = 0.0 if _decoupled(group) else group["weight_decay"]
        return maximized_with_decay(group, params, grads, coupled)

    def decoupled_decay(self, group: ParamGroup) -> float | Tensor | None:
        if _decoupled(group):
            return group["lr"] * group["weight_decay"]
        return super().decoupled_decay(group)

    def update_moments(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        grads = self.seen_gradients(group, params, grads)
        torch._foreach_add_([s["step"] for s in states], 1)
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        if group["amsgrad"]:
            max_sqs = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(max_sqs, exp_avg_sqs)
        return grads

    def _second_moments(self, group: ParamGroup, states: list[dict[str, Tensor]]) -> list[Tensor]:
        key = "max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"
        return [s[key] for s in states]

    def _bias_corrections(
        self, group: ParamGroup, states: list[dict[str, Tensor]]
    ) -> tuple[Corrections, Corrections]:
        beta1, beta2 = group["betas"]
        return bias_corrections([s["step"] for s in states], beta1, beta2)

    def direction(self, group, params, grads, states):
        lr, eps = group["lr"], group["eps"]
        bc1, bc2_sqrt = self._bias_corrections(group, states)
        denom = torch._foreach_sqrt(self._second_moments(group, states))
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, eps)
        deltas = torch._foreach_div([s["exp_avg"] for s in states], denom)
        torch._foreach_mul_(deltas, step_sizes(lr, bc1))
        if _decoupled(group) and group["weight_decay"] != 0:
            torch._foreach_add_(deltas, params, alpha=lr * group["weight_decay"])
        return deltas

    def apply(self, group, params, grads, states, scales: Scales) -> None:
        # One fused addcdiv per tensor, as torch's foreach Adam: the survivor's scale
        # is folded into the denominator instead of materialising Delta.
        lr, eps = group["lr"], group["eps"]
        if isinstance(lr, float | int) and lr == 0:
            return  # Delta = 0: nothing moves (and lr cannot be folded into a divisor)
        if _decoupled(group):
            decoupled_decay_(params, lr, group["weight_decay"], scales)
        bc1, bc2_sqrt = self._bias_corrections(group, states)
        denom = torch._foreach_sqrt(self._second_moments(group, states))
        # m_hat / (sqrt(v_hat) + eps) * lr * s  ==  m / (denom * bc1 / (lr * s * bc2_sqrt))
        if bc1 and isinstance(bc1[0], Tensor):  # on-device counters: foreach, no scalar kernels
            torch._foreach_add_(denom, torch._foreach_mul(bc2_sqrt, eps))
            factors = torch._foreach_div(bc1, bc2_sqrt)
            torch._foreach_div_(factors, lr)
        else:
            torch._foreach_add_(denom, [eps * b for b in bc2_sqrt])
            factors = [b1 / (lr * b2) for b1, b2 in zip(bc1, bc2_sqrt, strict=True)]
        if isinstance(scales, Tensor):
            inverse = scales.reciprocal()
            if all(isinstance(f, float) for f in factors) and len(set(factors)) == 1:
                multipliers = list((inverse * factors[0]).unbind(0))
            else:
                multipliers = torch._foreach_mul(list(inverse.unbind(0)), factors)
        elif factors and isinstance(factors[0], Tensor):
            multipliers = torch._foreach_div(factors, list(scales))
        else:
            multipliers = [f / s for f, s in zip(factors, scales, strict=True)]
        torch._foreach_mul_(denom, multipliers)
        torch._foreach_addcdiv_(params, [st["exp_avg"] for st in states], denom, value=-1)
