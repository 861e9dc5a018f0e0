"""Cautious AdamW, "C-AdamW" (Liang et al. 2024, "Cautious Optimizers")."""

from __future__ import annotations

from typing import Any

from torch.optim.optimizer import ParamsT

from magma.optim._rule_optimizer import RuleOptimizer, validate_adam_like
from magma.replicas import check_replicas, check_stacked
from magma.rules.cautious_adamw import CautiousAdamWRule


class CAdamW(RuleOptimizer):
    """AdamW that drops update coordinates whose sign disagrees with the gradient.

    ``replicas``: S when every parameter stacks S independent replicas along dim 0 (as
    ``torch.func.stack_module_state`` does); the caution's rescaling then averages over
    each replica's slice, so the step equals S separate C-AdamWs'.
    """

    rule = CautiousAdamWRule()

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        maximize: bool = False,
        replicas: int | None = None,
    ) -> None:
        validate_adam_like(lr, betas, eps, weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "amsgrad": False,
            "decoupled_weight_decay": True,
            "replicas": check_replicas(replicas),
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["replicas"] = check_replicas(group["replicas"])
        if group["replicas"] is not None:
            check_stacked(group["params"], group["replicas"], "parameter")
