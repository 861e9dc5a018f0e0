"""The paper's Table 1: each base optimizer dense and masked, at its best configuration.

Rows are base optimizers, columns the variants present (dense, skipupdate, magma); a cell
is the arm's best stable configuration (its best LR, in the paper's protocol) and its
change relative to the dense cell of the same row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dashboards.analysis.arms import (
    Configuration,
    best_configuration,
    configurations,
    group_by_arm,
)
from dashboards.analysis.objective import Mode
from dashboards.records import VARIANTS, Arm, TrialRecord


@dataclass(frozen=True)
class TableCell:
    arm: Arm
    #: the arm's best stable configuration; None when it has none
    best: Configuration | None
    #: (value - dense) / |dense|, None for the dense column or without both values
    relative: float | None
    #: why there is no value: "diverged", "running" or none completed on every seed
    reason: str | None

    @property
    def value(self) -> float | None:
        return self.best.summary.mean if self.best is not None else None

    @property
    def trial_ids(self) -> tuple[int, ...]:
        """The best configuration's trials, to link the cell to."""
        return self.best.trial_ids if self.best is not None else ()


@dataclass(frozen=True)
class ComparisonTable:
    #: columns: the variants present, in the order of ``VARIANTS``
    variants: tuple[str, ...]
    #: rows: base -> variant -> cell; an arm the study did not run has no cell
    rows: dict[str, dict[str, TableCell]]


def comparison_table(trials: Iterable[TrialRecord], mode: Mode = "min") -> ComparisonTable:
    """Best objective per (base, variant) and its change against the dense baseline."""
    bests: dict[Arm, tuple[Configuration | None, str | None]] = {}
    for arm, arm_trials in group_by_arm(trials).items():
        configs = configurations(arm_trials)
        best = best_configuration(configs, mode)
        bests[arm] = (best, None if best is not None else _reason(configs))
    present = {arm.variant for arm in bests}
    variants = tuple(v for v in VARIANTS if v in present)
    variants += tuple(sorted(present - set(VARIANTS)))
    rows: dict[str, dict[str, TableCell]] = {}
    for arm, (best, reason) in bests.items():
        dense = bests.get(Arm(arm.base, "dense"), (None, None))[0]
        relative = None
        if arm.variant != "dense" and best is not None and dense is not None:
            baseline = dense.summary.mean
            if baseline != 0:
                relative = (best.summary.mean - baseline) / abs(baseline)
        rows.setdefault(arm.base, {})[arm.variant] = TableCell(arm, best, relative, reason)
    return ComparisonTable(variants, rows)


def _reason(configs: list[Configuration]) -> str:
    """Why an arm has no best: a configuration diverged, some still run, or none
    completed on every seed."""
    outcomes = {config.outcome for config in configs}
    if "diverged" in outcomes:
        return "diverged"
    if "pending" in outcomes:
        return "running"
    return "no configuration completed on every seed"
