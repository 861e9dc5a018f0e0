"""The interface every base-optimizer rule implements.

A rule re-expresses one base optimizer's step in two phases so that the masking
wrapper can update the moments of *every* masked block (dense moments, as
Algorithm 1 requires) while doing parameter work only for the blocks that survive.
The state a rule creates has exactly the keys and layout the base optimizer would
create itself, so `base.state_dict()` stays loadable by the plain base.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

ParamGroup = dict[str, Any]
Scales = list[float] | Tensor


def step_value(step: Tensor) -> float | Tensor:
    """A step counter as a Python number when that costs no device sync."""
    return step.item() if step.device.type == "cpu" else step


#: per-tensor host numbers, or per-tensor device tensors (from on-device step counters)
Corrections = list[float] | list[Tensor]


def bias_corrections(
    steps: list[Tensor], beta1: float, beta2: float
) -> tuple[Corrections, Corrections]:
    """1 - beta1^t and sqrt(1 - beta2^t) per step counter: host numbers from host counters
    (no sync), else ``on_device_bias_corrections``."""
    if all(t.device.type == "cpu" for t in steps):
        counts = [float(t.item()) for t in steps]
        return [1 - beta1**t for t in counts], [math.sqrt(1 - beta2**t) for t in counts]
    return on_device_bias_corrections(steps, beta1, beta2)


def on_device_bias_corrections(
    steps: list[Tensor], beta1: float, beta2: float
) -> tuple[list[Tensor], list[Tensor]]:
    """From on-device counters (capturable and fused bases): a few foreach launches for a
    whole bucket, as torch's capturable Adam computes them, not scalar kernels per tensor."""
    # 1 - beta^t as -expm1(t ln beta): accurate in the counters' float32 where
    # 1 - pow(beta, t) loses most digits to cancellation for beta near 1 and small t
    bc1 = torch._foreach_mul(steps, math.log(beta1))
    torch._foreach_expm1_(bc1)
    torch._foreach_neg_(bc1)
    bc2_sqrt = torch._foreach_mul(steps, math.log(beta2))
    torch._foreach_expm1_(bc2_sqrt)
    torch._foreach_neg_(bc2_sqrt)
    torch._foreach_sqrt_(bc2_sqrt)
    return bc1, bc2_sqrt


def step_sizes(lr: float, bc1: Corrections) -> Corrections:
    """lr / (1 - beta1^t) per tensor, in one foreach pass for device tensors."""
    if bc1 and isinstance(bc1[0], Tensor):
        sizes = torch._foreach_reciprocal(bc1)
        torch._foreach_mul_(sizes, lr)
        return sizes
    return [lr / b for b in bc1]


def scale_list(scales: Scales, n: int) -> list[float] | list[Tensor]:
    """Per-tensor multipliers: Python floats, or 0-dim views of a device vector."""
    if isinstance(scales, Tensor):
        return list(scales.unbind(0)) if scales.dim() == 1 else [scales] * n
    return list(scales)


class UpdateRule:
    """Base optimizer math split into a dense moment phase and a sparse apply phase.

    Subclasses set ``first_moment_key`` to the state entry holding an EMA of raw
    gradients (reused for the alignment score at no memory cost), or ``None`` when
    the base keeps no such moment and the wrapper must keep its own.
    """

    first_moment_key: str | None = None

    def supports(self, group: ParamGroup) -> bool:
        """Whether this rule reproduces the base exactly for the group's flags."""
        return True

    def replicas_obstacle(self, params: list[Tensor]) -> str | None:
        """Why this base cannot step ``params`` as stacked replicas (dim 0), or None:
        elementwise bases always can."""
        return None

    def init_state(self, group: ParamGroup, param: Tensor) -> dict[str, Tensor]:
        """State in the base optimizer's own format, created lazily."""
        raise NotImplementedError

    def seen_gradients(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor]
    ) -> list[Tensor]:
        """The gradients as the base's moments see them (negated under ``maximize``, plus
        a coupled L2 decay): what ``update_moments`` feeds its moments."""
        return grads

    def decoupled_decay(self, group: ParamGroup) -> float | Tensor | None:
        """lr * wd of the base's decoupled weight decay, theta <- theta (1 - lr * wd): what
        ``decay_on_skip`` applies to a masked-out block. 0 without weight decay; None where
        the base couples its decay into the gradient (there is none to apply apart)."""
        return None if group.get("weight_decay", 0) != 0 else 0.0

    def update_moments(
        self,
        group: ParamGroup,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Tensor]],
    ) -> list[Tensor]:
        """Advance step counters and moments; return the gradients the moments saw."""
        raise NotImplementedError

    def direction(
        self,
        group: ParamGroup,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Tensor]],
    ) -> list[Tensor]:
        """Delta: the base's full update (lr and decoupled weight decay included)."""
        raise NotImplementedError

    def apply(
        self,
        group: ParamGroup,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Tensor]],
        scales: Scales,
    ) -> None:
        """theta <- theta - scale * Delta for the surviving blocks."""
        deltas = self.direction(group, params, grads, states)
        torch._foreach_mul_(deltas, scale_list(scales, len(params)))
        torch._foreach_sub_(params, deltas)


def maximized_with_decay(
    group: ParamGroup, params: list[Tensor], grads: list[Tensor], coupled_decay: float
) -> list[Tensor]:
    """g negated under ``maximize``, plus ``coupled_decay`` * theta (L2 decay folded into
    the gradient): new tensors only where either applies."""
    if group["maximize"]:
        grads = torch._foreach_neg(grads)
    if coupled_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=coupled_decay)
    return grads


def decay_skipped_(dropped: list[Tensor], skip_decay: float | Tensor) -> None:
    """theta <- theta (1 - lr * wd) for whole masked-out blocks (``decay_on_skip``, its
    ``skip_decay`` = lr * wd); nothing at 0 or without blocks."""
    if dropped and not (isinstance(skip_decay, float | int) and skip_decay == 0):
        torch._foreach_mul_(dropped, 1 - skip_decay)


def decoupled_decay_(
    params: list[Tensor], lr: float | Tensor, weight_decay: float, scales: Scales
) -> None:
    """theta <- theta * (1 - scale * lr * wd): the weight-decay share of a scaled Delta."""
    if weight_decay == 0:
        return
    if isinstance(scales, Tensor):
        factors = (1 - scales * (lr * weight_decay)).unbind(0)
        torch._foreach_mul_(params, list(factors))
    else:
        torch._foreach_mul_(params, [1 - s * lr * weight_decay for s in scales])


def buckets(tensors: list[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), the unit a foreach kernel takes."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return list(groups.values())
