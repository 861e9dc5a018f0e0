"""torch.optim.SGD (``momentum``, ``dampening``, ``nesterov``, coupled ``weight_decay``).

With momentum, ``momentum_buffer`` is a (scaled) running sum of raw gradients; the
cosine is scale-invariant, so it serves as mu. Without momentum there is no first
moment and the wrapper keeps its own. Delta = lr * (g + momentum * buf) with
Nesterov, lr * buf with plain momentum, lr * g without.
"""

from __future__ import annotations

import torch
from torch import Tensor

from magma.rules.base import ParamGroup, UpdateRule, maximized_with_decay


class SGDRule(UpdateRule):
    def __init__(self, has_momentum: bool) -> None:
        self.first_moment_key = "momentum_buffer" if has_momentum else None

    def supports(self, group: ParamGroup) -> bool:
        return not group.get("differentiable", False)

    def init_state(self, group: ParamGroup, param: Tensor) -> dict[str, Tensor]:
        # torch creates the buffer from the first gradient; see update_moments.
        return {}

    def seen_gradients(self, group, params, grads):
        return maximized_with_decay(group, params, grads, group["weight_decay"])

    def update_moments(self, group, params, grads, states):
        grads = self.seen_gradients(group, params, grads)
        momentum = group["momentum"]
        if momentum == 0:
            return grads
        fresh = [i for i, s in enumerate(states) if s.get("momentum_buffer") is None]
        for i in fresh:
            states[i]["momentum_buffer"] = grads[i].detach().clone()
        seen = set(fresh)
        old = [i for i in range(len(states)) if i not in seen]
        if old:
            bufs = [states[i]["momentum_buffer"] for i in old]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, [grads[i] for i in old], alpha=1 - group["dampening"])
        return grads

    def direction(self, group, params, grads, states):
        momentum, lr = group["momentum"], group["lr"]
        if momentum == 0:
            return torch._foreach_mul(grads, lr)
        bufs = [s["momentum_buffer"] for s in states]
        if group["nesterov"]:
            deltas = torch._foreach_add(grads, bufs, alpha=momentum)
            torch._foreach_mul_(deltas, lr)
            return deltas
        return torch._foreach_mul(bufs, lr)
