"""The paper's Table 1: each base optimizer dense and masked, at its best configuration.

Rows are base optimizers, columns the variants present (dense, skipupdate, magma); a cell
is the arm's best stable configuration (its best LR, in the paper's protocol), described by
its own mean over seeds and the interval the charts draw (``intervals.range_interval``:
within the metric's range, so a loss's never reaches below zero). A masked cell's one
difference from dense is its paired comparison (``verdict.verdicts``: both arms at their
best, paired by seed, each stage's test and the decision of the deciding one), the same
numbers as ``GET /studies/{id}/verdict``; an unpaired difference of the two means would be
a second, different number for the same question.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from studies.analysis.arms import (
    Configuration,
    best_configuration,
    configurations,
    group_by_arm,
)
from studies.analysis.intervals import Interval
from studies.analysis.objective import Mode
from studies.analysis.sequential import SequentialDesign
from studies.analysis.verdict import Comparison, verdicts
from studies.records import VARIANTS, Arm, BracketSearch, TrialRecord


@dataclass(frozen=True)
class TableCell:
    arm: Arm
    #: the arm's best stable configuration; None when it has none
    best: Configuration | None
    #: a masked arm's paired verdict against its base's dense arm; None for a dense cell
    #: or a base without one
    comparison: Comparison | None
    #: why there is no value: "diverged", "running" or none completed on every seed
    reason: str | None

    @property
    def value(self) -> float | None:
        return self.best.summary.mean if self.best is not None else None

    @property
    def interval(self) -> Interval | None:
        """The mean with the interval the charts draw (``Configuration.interval``)."""
        return self.best.interval if self.best is not None else None

    @property
    def trial_ids(self) -> tuple[int, ...]:
        """The best configuration's trials, to link the cell to."""
        return self.best.trial_ids if self.best is not None else ()

    @property
    def difference(self) -> str | None:
        """The paired comparison against dense: its decision, then each stage's change,
        interval and verdict, the deciding stage marked (``Comparison.summary``); None
        without a comparison."""
        return self.comparison.summary if self.comparison is not None else None

    @property
    def decision(self) -> str | None:
        """``better``, ``worse``, ``equivalent``, ``no_detectable_difference`` or
        ``inconclusive``; None without a comparison."""
        return self.comparison.decision_code if self.comparison is not None else None


@dataclass(frozen=True)
class ComparisonTable:
    #: columns: the variants present, in the order of ``VARIANTS``
    variants: tuple[str, ...]
    #: rows: base -> variant -> cell; an arm the study did not run has no cell
    rows: dict[str, dict[str, TableCell]]


def comparison_table(
    trials: Iterable[TrialRecord],
    mode: Mode = "min",
    bracket: BracketSearch | None = None,
    *,
    confirming: bool | None = None,
    metric: str | None = None,
    design: SequentialDesign | None = None,
) -> ComparisonTable:
    """Best objective per (base, variant) and each masked arm's paired comparison against
    its dense base (``bracket``: a bracket study's LR search, for the verdicts' warnings;
    ``confirming``, ``metric`` and ``design``: as ``verdicts`` takes them)."""
    trials = list(trials)
    found = verdicts(
        trials, mode, bracket=bracket, confirming=confirming, metric=metric, design=design
    )
    tested = {c.arm: c for c in found}
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
        rows.setdefault(arm.base, {})[arm.variant] = TableCell(arm, best, tested.get(arm), reason)
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
