"""How wide each arm's window of good learning rates is (the paper's Figure A3).

Per arm, each tested LR gets the best of its configurations (other searched parameters
are optimised out, as in Table 1); an LR none of whose configurations is stable is a
diverged point. The window is the *contiguous* run of tested LRs around the arm's best
LR whose mean objective is within ``delta`` of the best, relative to the best's size:
at most best + delta * |best| when minimising ((1 + delta) * best for a positive
objective), at least best - delta * |best| when maximising. A tested LR that falls
short (or diverged) ends the window even when an LR beyond it qualifies again: the
figure's question is how far one can move from the best LR without the run degrading,
so a good LR across a bad one is not reachable. LRs that were never tested are not
gaps: the window spans between tested points. Its width is log10(high / low) decades,
0 for a window of only the best LR.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from dashboards.analysis.arms import (
    Configuration,
    best_configuration,
    configurations,
    group_by_arm,
)
from dashboards.analysis.objective import Mode, check_mode, rank
from dashboards.records import Arm, TrialRecord


@dataclass(frozen=True)
class LRPoint:
    """One tested LR of an arm and the configuration that represents it."""

    lr: float
    #: the best eligible configuration at this LR, or, when none is, the first one
    configuration: Configuration

    @property
    def diverged(self) -> bool:
        return self.configuration.outcome == "diverged"

    @property
    def mean(self) -> float | None:
        return self.configuration.summary.mean


@dataclass(frozen=True)
class LRWindow:
    """An arm's objective against the LR, and its window of good LRs."""

    arm: Arm
    #: every tested LR with an outcome, ascending
    points: tuple[LRPoint, ...]
    mode: Mode
    delta: float
    #: the best point, None when every LR diverged or none has finished
    best: LRPoint | None
    #: the worst mean objective still inside the window
    threshold: float | None
    #: the window's lowest and highest LR
    low: float | None
    high: float | None
    #: the largest LR that did not diverge
    max_stable_lr: float | None

    @property
    def width(self) -> float | None:
        """The window's span in decades of LR."""
        if self.low is None or self.high is None:
            return None
        return math.log10(self.high / self.low)


def lr_windows(
    trials: Iterable[TrialRecord], mode: Mode = "min", delta: float = 0.05
) -> dict[Arm, LRWindow]:
    """Each arm's LR window; see the module docstring for the rule."""
    check_mode(mode)
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    return {
        arm: _window(arm, _points(arm_trials, mode), mode, delta)
        for arm, arm_trials in group_by_arm(trials).items()
    }


def _points(trials: list[TrialRecord], mode: Mode) -> tuple[LRPoint, ...]:
    by_lr: dict[float, list[Configuration]] = {}
    for config in configurations(trials):
        if config.finished:
            by_lr.setdefault(float(config.value("lr")), []).append(config)
    return tuple(
        LRPoint(lr, best_configuration(configs, mode) or configs[0])
        for lr, configs in sorted(by_lr.items())
    )


def _window(arm: Arm, points: tuple[LRPoint, ...], mode: Mode, delta: float) -> LRWindow:
    stable = [i for i, point in enumerate(points) if not point.diverged]
    if not stable:
        return LRWindow(arm, points, mode, delta, None, None, None, None, None)
    best = min(stable, key=lambda i: rank(points[i].mean, mode))
    best_mean = points[best].mean
    margin = delta * abs(best_mean)
    threshold = best_mean + margin if mode == "min" else best_mean - margin

    def inside(i: int) -> bool:
        point = points[i]
        return not point.diverged and rank(point.mean, mode) <= rank(threshold, mode)

    low = high = best
    while low > 0 and inside(low - 1):
        low -= 1
    while high < len(points) - 1 and inside(high + 1):
        high += 1
    return LRWindow(
        arm=arm,
        points=points,
        mode=mode,
        delta=delta,
        best=points[best],
        threshold=threshold,
        low=points[low].lr,
        high=points[high].lr,
        max_stable_lr=points[stable[-1]].lr,
    )
