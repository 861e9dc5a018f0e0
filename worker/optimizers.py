"""Build a trial's optimizer from its config: a base, optionally masked.

Muon only handles 2-D hidden weights, so with ``base="muon"`` the attention and MLP
matrices go to Muon and everything else (embeddings, norms, head) to AdamW, the
pairing the paper's Muon baseline uses; ``adjust_lr_fn="match_rms_adamw"`` lets both
share one learning rate.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import Optimizer

import magma
from worker.config import TrialConfig
from worker.contract import Base, telemetry_key


def _base(config: TrialConfig, params: list[nn.Parameter], kind: str) -> Optimizer:
    lr, betas, wd = config.lr, config.betas, config.weight_decay
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
    if kind == "rmsprop":
        # The paper's RMSProp is Adam without momentum: alpha plays beta2's part.
        return torch.optim.RMSprop(params, lr=lr, alpha=betas[1], eps=1e-8, weight_decay=wd)
    if kind == "laprop":
        return magma.LaProp(params, lr=lr, betas=betas, weight_decay=wd)
    if kind == "c-adamw":
        return magma.CAdamW(params, lr=lr, betas=betas, weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=wd)
    if kind == "muon":
        return torch.optim.Muon(
            params, lr=lr, weight_decay=wd, momentum=0.95, adjust_lr_fn="match_rms_adamw"
        )
    raise ValueError(f"base must be one of {Base.values()}, got {kind!r}")


def build_optimizers(
    config: TrialConfig, model: nn.Module, masked: dict[str, list[nn.Parameter]]
) -> list[Optimizer]:
    """One optimizer per base (two for Muon), each masked per ``config.variant``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.base == "muon":
        hidden = {p for group in masked.values() for p in group if p.dim() == 2}
        if not hidden:
            raise ValueError("base 'muon' needs 2-D weights among the masked components")
        bases = [
            _base(config, [p for p in params if p in hidden], "muon"),
            _base(config, [p for p in params if p not in hidden], "adamw"),
        ]
    else:
        bases = [_base(config, params, config.base)]
    if config.variant == "dense":
        return bases
    return [_masked(config, base, masked, config.mask_seed + i) for i, base in enumerate(bases)]


def _masked(
    config: TrialConfig, base: Optimizer, masked: dict[str, list[nn.Parameter]], seed: int
) -> Optimizer:
    owned = {p for group in base.param_groups for p in group["params"]}
    mine = {label: [p for p in ps if p in owned] for label, ps in masked.items()}
    mine = {label: ps for label, ps in mine.items() if ps}
    if not mine:
        return base
    if config.variant == "skipupdate":
        return magma.SkipUpdate(
            base,
            p=config.p,
            params=mine,
            granularity=config.granularity,
            seed=seed,
            fused=config.fused_step,
        )
    return magma.Magma(
        base,
        p=config.p,
        tau=config.tau,
        params=mine,
        granularity=config.granularity,
        seed=seed,
        fused=config.fused_step,
    )


def telemetry(optimizers: list[Optimizer]) -> dict[str, float]:
    """Flat ``{"alignment/attention": ..., "survival/mlp": ...}`` over all wrappers."""
    flat: dict[str, float] = {}
    for opt in optimizers:
        if isinstance(opt, magma.MaskedOptimizer):
            for label, values in opt.telemetry().items():
                for key, value in values.items():
                    if value is not None:
                        flat[telemetry_key(key, label)] = value
    return flat
