"""How far seed repeats agree: a mean with its Student-t interval, and how often arms diverge.

A few seeds are all a study can afford, so the interval is Student's t, not a normal
approximation; a single seed gives a mean and no interval rather than a zero-width one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats

from dashboards.records import Arm, TrialRecord


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its two-sided confidence interval (None where there
    are too few values: no mean for n=0, no interval for n=1)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float = 0.95

    @property
    def half_width(self) -> float | None:
        if self.mean is None or self.high is None:
            return None
        return self.high - self.mean


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n), s the sample standard deviation."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(values)
    if n == 0:
        return Interval(None, None, None, 0, confidence)
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, None, None, 1, confidence)
    sem = statistics.stdev(values) / math.sqrt(n)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n, confidence)


@dataclass(frozen=True)
class DivergenceRate:
    """Of the trials of an arm that ran to their end, how many diverged."""

    diverged: int
    finished: int

    @property
    def rate(self) -> float | None:
        return self.diverged / self.finished if self.finished else None


def divergence_rates(trials: Iterable[TrialRecord]) -> dict[Arm, DivergenceRate]:
    """Per arm, diverged / (complete + diverged). Pruned, failed, cancelled and unfinished
    trials are left out: none of them ran long enough to show whether it would diverge."""
    counts: dict[Arm, list[int]] = {}
    for trial in trials:
        count = counts.setdefault(trial.arm, [0, 0])
        if trial.status in ("complete", "diverged"):
            count[0] += trial.diverged
            count[1] += 1
    return {arm: DivergenceRate(*counts[arm]) for arm in sorted(counts, key=lambda arm: arm.order)}
