"""torch.optim.Muon (2-D hidden weights) and magma.BatchedMuon (stacks of them).

``momentum_buffer`` is an EMA of raw gradients (``buf.lerp_(g, 1 - momentum)``) and
serves as mu. Delta = adjusted_lr * NS(update) + lr * wd * theta, where NS is torch's
own Newton-Schulz orthogonalisation; masked blocks skip NS entirely, which is where
Magma saves most of Muon's compute. A 3-D parameter (S, m, n) is S independent
matrices (replicas): each is orthogonalised on its own, by ``batched_newton_schulz``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

from magma.rules.base import ParamGroup, UpdateRule


def batched_newton_schulz(
    grad: Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float
) -> Tensor:
    """torch's ``_zeropower_via_newtonschulz`` for a stack of matrices (S, m, n): the same
    coefficients, steps, eps and bfloat16 iterates, each matrix normalised by its own
    Frobenius norm, with batched matmuls."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if grad.dim() != 3:
        raise ValueError(f"grad must be a stack of matrices (S, m, n), got {tuple(grad.shape)}")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = ns_coefficients
    tall = grad.size(-2) > grad.size(-1)
    ortho = grad.bfloat16()
    if tall:
        ortho = ortho.mT
    ortho = ortho / torch.linalg.matrix_norm(ortho, keepdim=True).clamp(min=eps)
    for _ in range(ns_steps):
        gram = ortho @ ortho.mT
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        ortho = torch.baddbmm(ortho, gram_update, ortho, beta=a)
    return ortho.mT if tall else ortho


class MuonRule(UpdateRule):
    first_moment_key = "momentum_buffer"

    def replicas_obstacle(self, params: list[Tensor]) -> str | None:
        shapes = [tuple(q.shape) for q in params if q.dim() != 3]
        if shapes:
            return (
                f"Muon orthogonalises each replica's matrix: it needs 3-D (S, m, n) parameters "
                f"under magma.BatchedMuon, got shape {shapes[0]}"
            )
        return None

    def init_state(self, group: ParamGroup, param: Tensor) -> dict[str, Tensor]:
        return {"momentum_buffer": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def decoupled_decay(self, group: ParamGroup) -> float | Tensor | None:
        return group["lr"] * group["weight_decay"]

    def update_moments(self, group, params, grads, states):
        bufs = [s["momentum_buffer"] for s in states]
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
        return grads

    def direction(self, group, params, grads, states):
        lr, wd = group["lr"], group["weight_decay"]
        deltas = []
        for param, grad, state in zip(params, grads, states, strict=True):
            buf = state["momentum_buffer"]
            update = grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
            orthogonalise = (
                _zeropower_via_newtonschulz if param.dim() == 2 else batched_newton_schulz
            )
            update = orthogonalise(
                update, group["ns_coefficients"], group["ns_steps"], group["eps"]
            )
            adjusted = _adjust_lr(lr, group["adjust_lr_fn"], param.shape[-2:])
            delta = update.to(param.dtype).mul_(adjusted)
            if wd != 0:
                delta.add_(param, alpha=lr * wd)
            deltas.append(delta)
        return deltas
