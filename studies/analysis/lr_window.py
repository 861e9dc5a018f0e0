"""How wide each arm's window of good learning rates is (the paper's Figure A3), and where
it stops being stable.

Per arm, each tested LR gets the best of its configurations (other searched parameters
are optimised out, as in Table 1); an LR none of whose configurations is stable is a
diverged point. The threshold is ``delta`` from the best mean, relative to its size:
best + delta * |best| when minimising ((1 + delta) * best for a positive objective),
best - delta * |best| when maximising.

Grids are coarse (half a decade apart, say), so a rule over tested points alone says
every window is 0 decades wide whenever the neighbours of the best miss the threshold by
a little. The window is therefore measured on the curve interpolated between adjacent
tested LRs: linearly in (log10 lr, log objective) for a positive objective (in the
objective itself otherwise). It is the *contiguous* range of LRs around the best over
which that curve stays within the threshold (inclusive): on each side it ends where the
curve crosses the threshold, found exactly on the segment that crosses it, or at the
last tested LR before a diverged one or the end of the grid (nothing is assumed of an
LR that was not run). A good LR across a bad one is not reached: the question is how
far one can move from the best LR without the run degrading. Its width is
log10(high / low) decades, 0 when both neighbours fall short at the best itself.

The stability frontier is separate from the objective: the largest LR at which a seed
completed and none diverged, of any configuration, and the smallest at which any diverged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from studies.analysis.arms import (
    Configuration,
    best_configuration,
    configurations,
    group_by_arm,
)
from studies.analysis.objective import Mode, check_mode, rank
from studies.records import Arm, TrialRecord
from worker.contract import TrialStatus


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
    #: the window's lowest and highest LR (interpolated: not necessarily tested ones)
    low: float | None
    high: float | None
    #: the stability frontier: the largest tested LR with a completed seed and no diverged
    #: one, and the smallest LR with a diverged seed (either None when there is none)
    max_stable_lr: float | None
    min_diverged_lr: float | None

    @property
    def width(self) -> float | None:
        """The window's span in decades of LR."""
        if self.low is None or self.high is None:
            return None
        return math.log10(self.high / self.low)


def lr_windows(
    trials: Iterable[TrialRecord], mode: Mode = "min", delta: float = 0.05
) -> dict[Arm, LRWindow]:
    """Each arm's LR window and stability frontier; see the module docstring for the rule."""
    check_mode(mode)
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    return {
        arm: _window(arm, _points(arm_trials, mode), _frontier(arm_trials), mode, delta)
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


def _frontier(trials: list[TrialRecord]) -> tuple[float | None, float | None]:
    """(largest LR with a completed seed and no diverged one, smallest LR with a diverged
    seed), over every configuration; pruned, failed and unfinished seeds say nothing."""
    completed: set[float] = set()
    diverged: set[float] = set()
    for trial in trials:
        lr = float(trial.value("lr"))
        if trial.diverged:
            diverged.add(lr)
        elif trial.status == TrialStatus.complete:
            completed.add(lr)
    stable = completed - diverged
    return (max(stable) if stable else None, min(diverged) if diverged else None)


def _window(
    arm: Arm,
    points: tuple[LRPoint, ...],
    frontier: tuple[float | None, float | None],
    mode: Mode,
    delta: float,
) -> LRWindow:
    stable = [i for i, point in enumerate(points) if not point.diverged]
    if not stable:
        return LRWindow(arm, points, mode, delta, None, None, None, None, *frontier)
    best = min(stable, key=lambda i: rank(points[i].mean, mode))
    best_mean = points[best].mean
    margin = delta * abs(best_mean)
    threshold = best_mean + margin if mode == "min" else best_mean - margin
    scale = math.log if all(points[i].mean > 0 for i in stable) else _identity
    return LRWindow(
        arm=arm,
        points=points,
        mode=mode,
        delta=delta,
        best=points[best],
        threshold=threshold,
        low=_edge(points, best, -1, threshold, mode, scale),
        high=_edge(points, best, 1, threshold, mode, scale),
        max_stable_lr=frontier[0],
        min_diverged_lr=frontier[1],
    )


def _edge(
    points: tuple[LRPoint, ...],
    best: int,
    step: int,
    threshold: float,
    mode: Mode,
    scale: Callable[[float], float],
) -> float:
    """Where the window ends walking from ``best`` by ``step`` (-1 down, +1 up): at the
    threshold's crossing on the first segment whose far end falls short, else at the last
    tested LR before a diverged one or the grid's end."""
    i = best
    while 0 <= i + step < len(points):
        near, far = points[i], points[i + step]
        if far.diverged:
            break
        if rank(far.mean, mode) > rank(threshold, mode):
            # near is within the threshold and far beyond it, so scale(far) != scale(near)
            # and the fraction lies in [0, 1)
            fraction = (scale(threshold) - scale(near.mean)) / (scale(far.mean) - scale(near.mean))
            return near.lr * (far.lr / near.lr) ** fraction
        i += step
    return points[i].lr


def _identity(value: float) -> float:
    return value
