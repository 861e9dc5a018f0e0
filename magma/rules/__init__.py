"""Per-base-optimizer rules: which exact math the masking wrapper reproduces."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from magma.optim.batched_muon import BatchedMuon
from magma.optim.cautious_adamw import CAdamW
from magma.optim.laprop import LaProp
from magma.rules.adam import AdamRule
from magma.rules.base import UpdateRule
from magma.rules.muon import MuonRule
from magma.rules.rmsprop import RMSpropRule
from magma.rules.sgd import SGDRule

__all__ = ["UpdateRule", "rule_for"]


def rule_for(optimizer: Optimizer, group: dict) -> UpdateRule | None:
    """The rule for a base optimizer's param group, or None for the generic path.

    Exact types only: a subclass may change the math, so it takes the generic path.
    """
    kind = type(optimizer)
    rule: UpdateRule | None
    if kind in (torch.optim.Adam, torch.optim.AdamW):
        rule = AdamRule()
    elif kind is torch.optim.RMSprop:
        rule = RMSpropRule()
    elif kind is torch.optim.SGD:
        rule = SGDRule(has_momentum=group["momentum"] != 0)
    elif kind in (torch.optim.Muon, BatchedMuon):
        rule = MuonRule()
    elif kind is LaProp:
        rule = LaProp.rule
    elif kind is CAdamW:
        rule = CAdamW.rule
    else:
        return None
    return rule if rule.supports(group) else None
