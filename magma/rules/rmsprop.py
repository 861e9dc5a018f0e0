"""torch.optim.RMSprop (``centered``, ``momentum``, coupled ``weight_decay``, ``maximize``).

RMSprop keeps no EMA of raw gradients (its momentum buffer accumulates
preconditioned steps, and ``grad_avg`` exists only when centered, with beta=alpha),
so the wrapper keeps its own first moment (beta1 0.9) for the alignment score.
Delta = lr * buf with momentum, else lr * g / avg.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from magma.rules.base import ParamGroup, UpdateRule, maximized_with_decay


class RMSpropRule(UpdateRule):
    first_moment_key = None

    def supports(self, group: ParamGroup) -> bool:
        return not group.get("differentiable", False)

    def init_state(self, group: ParamGroup, param: Tensor) -> dict[str, Tensor]:
        state = {
            "step": torch.zeros((), dtype=_get_scalar_dtype(), device=param.device)
            if group.get("capturable", False)
            else torch.zeros((), dtype=_get_scalar_dtype()),
            "square_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _avg(self, group: ParamGroup, states: list[dict[str, Tensor]]) -> list[Tensor]:
        square_avgs = [s["square_avg"] for s in states]
        if group["centered"]:
            grad_avgs = [s["grad_avg"] for s in states]
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, group["eps"])
        return avg

    def seen_gradients(self, group, params, grads):
        return maximized_with_decay(group, params, grads, group["weight_decay"])

    def update_moments(self, group, params, grads, states):
        alpha = group["alpha"]
        grads = self.seen_gradients(group, params, grads)
        torch._foreach_add_([s["step"] for s in states], 1)
        square_avgs = [s["square_avg"] for s in states]
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if group["centered"]:
            torch._foreach_lerp_([s["grad_avg"] for s in states], grads, 1 - alpha)
        if group["momentum"] > 0:
            bufs = [s["momentum_buffer"] for s in states]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_addcdiv_(bufs, grads, self._avg(group, states))
        return grads

    def direction(self, group, params, grads, states):
        if group["momentum"] > 0:
            return torch._foreach_mul([s["momentum_buffer"] for s in states], group["lr"])
        deltas = torch._foreach_div(grads, self._avg(group, states))
        torch._foreach_mul_(deltas, group["lr"])
        return deltas
