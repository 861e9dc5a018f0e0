"""Build a trial's optimizer from its config: a base, optionally masked.

Muon only handles 2-D hidden weights, so with ``base="muon"`` the attention and MLP
matrices go to Muon and everything else (embeddings, norms, head) to AdamW, the
pairing the paper's Muon baseline uses; ``adjust_lr_fn="match_rms_adamw"`` lets both
share one learning rate.

With ``replicas=S`` (``worker.seed_batch``) every tensor is S seeds' tensors stacked
along dim 0, and each seed must be stepped as its own single run would be: the
elementwise bases step a stack as they would each slice, Muon's hidden weights go to
``magma.BatchedMuon`` (one orthogonalisation per 2-D slice), C-AdamW normalises
its mask per replica, and Magma/SkipUpdate draw each replica's masks from its own seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

import magma
from worker.config import TrialConfig
from worker.contract import Base, telemetry_key


def _base(
    config: TrialConfig, params: list[Tensor], kind: str, replicas: int | None = None
) -> Optimizer:
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
        return magma.CAdamW(params, lr=lr, betas=betas, weight_decay=wd, replicas=replicas)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=wd)
    if kind == "muon" and replicas is not None:
        return magma.BatchedMuon(
            params, lr=lr, weight_decay=wd, momentum=0.95, adjust_lr_fn="match_rms_adamw"
        )
    if kind == "muon":
        return torch.optim.Muon(
            params, lr=lr, weight_decay=wd, momentum=0.95, adjust_lr_fn="match_rms_adamw"
        )
    raise ValueError(f"base must be one of {Base.values()}, got {kind!r}")


def build_optimizers(
    config: TrialConfig,
    model: nn.Module | Sequence[Tensor],
    masked: dict[str, list[Tensor]],
    *,
    replicas: int | None = None,
    mask_seeds: Sequence[int] | None = None,
) -> list[Optimizer]:
    """One optimizer per base (two for Muon, unless every weight is a hidden matrix), each
    masked per ``config.variant``.

    ``model``: a module, or its trainable tensors. ``replicas``: the tensors are that
    many seeds' stacked along dim 0, replica r masked from ``mask_seeds[r]`` (the
    seeds' own ``config.mask_seed``)."""
    if (replicas is None) != (mask_seeds is None) or (
        mask_seeds is not None and len(mask_seeds) != replicas
    ):
        raise ValueError(
            f"replicas and mask_seeds go together, one mask seed per replica; got "
            f"replicas={replicas!r}, mask_seeds={mask_seeds!r}"
        )
    tensors = model.parameters() if isinstance(model, nn.Module) else model
    params = [p for p in tensors if p.requires_grad]
    if config.base == "muon":
        matrix = 2 if replicas is None else 3  # a stack of 2-D weights
        hidden = {p for group in masked.values() for p in group if p.dim() == matrix}
        if not hidden:
            raise ValueError("base 'muon' needs 2-D weights among the masked components")
        rest = [p for p in params if p not in hidden]  # none in the linear transformer
        bases = [_base(config, [p for p in params if p in hidden], "muon", replicas)]
        bases += [_base(config, rest, "adamw", replicas)] if rest else []
    else:
        bases = [_base(config, params, config.base, replicas)]
    if config.variant == "dense":
        return bases
    return [
        _masked(
            config,
            base,
            masked,
            config.mask_seed + i if mask_seeds is None else [seed + i for seed in mask_seeds],
            replicas,
        )
        for i, base in enumerate(bases)
    ]


def _masked(
    config: TrialConfig,
    base: Optimizer,
    masked: dict[str, list[Tensor]],
    seed: int | list[int],
    replicas: int | None,
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
            replicas=replicas,
            decay_on_skip=config.decay_on_skip,
        )
    return magma.Magma(
        base,
        p=config.p,
        tau=config.tau,
        params=mine,
        granularity=config.granularity,
        seed=seed,
        fused=config.fused_step,
        replicas=replicas,
        score_init=config.score_init,
        momentum=config.momentum,
        decay_on_skip=config.decay_on_skip,
    )


def _flat(report: dict[str, dict[str, float | None]], into: dict[str, float]) -> None:
    for label, values in report.items():
        for key, value in values.items():
            if value is not None:
                into[telemetry_key(key, label)] = value


def telemetry(optimizers: list[Optimizer]) -> dict[str, float]:
    """Flat ``{"alignment/attention": ..., "survival/mlp": ...}`` over all wrappers."""
    flat: dict[str, float] = {}
    for opt in optimizers:
        if isinstance(opt, magma.MaskedOptimizer):
            _flat(opt.telemetry(), flat)
    return flat


def replica_telemetry(
    optimizers: list[Optimizer], replicas: int, *, reset: bool = True
) -> list[dict[str, float]]:
    """``telemetry`` per replica of optimizers built with ``replicas``; ``reset=False``
    leaves the survival counts running (a read for one replica between reports)."""
    rows: list[dict[str, float]] = [{} for _ in range(replicas)]
    for opt in optimizers:
        if isinstance(opt, magma.MaskedOptimizer):
            for row, report in zip(rows, opt.replica_telemetry(reset=reset), strict=True):
                _flat(report, row)
    return rows
