"""Muon for stacked replicas: torch.optim.Muon's math for parameters of shape (S, m, n).

torch.optim.Muon refuses anything but 2-D parameters, so S replicas of a model stacked
along dim 0 (``torch.func.stack_module_state``) need this: each (m, n) slice is
orthogonalised on its own (``magma.rules.muon.batched_newton_schulz``: torch's
coefficients, steps and eps, batched matmuls) and its lr adjusted from (m, n). A 2-D
parameter is stepped as torch.optim.Muon steps it.
"""

from __future__ import annotations

from typing import Any

from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, DEFAULT_NS_STEPS, EPS
from torch.optim.optimizer import ParamsT

from magma.optim._rule_optimizer import RuleOptimizer
from magma.rules.muon import MuonRule

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class BatchedMuon(RuleOptimizer):
    """torch.optim.Muon over (S, m, n) stacks of matrices (or plain (m, n) ones), with its
    defaults and its state (``momentum_buffer``)."""

    rule = MuonRule()

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
        eps: float = EPS,
        ns_steps: int = DEFAULT_NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if adjust_lr_fn not in ADJUST_LR_FNS:
            raise ValueError(f"adjust_lr_fn must be one of {ADJUST_LR_FNS}, got {adjust_lr_fn!r}")
        if len(ns_coefficients) != 3:
            raise ValueError(f"ns_coefficients must be 3 numbers, got {ns_coefficients!r}")
        if not 0 < ns_steps < 100:
            raise ValueError(f"ns_steps must be in [1, 100), got {ns_steps}")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        for q in self.param_groups[-1]["params"]:
            if q.dim() not in (2, 3) or q.is_complex():
                raise ValueError(
                    f"BatchedMuon needs real (m, n) or (S, m, n) parameters, got shape "
                    f"{tuple(q.shape)} ({q.dtype})"
                )
