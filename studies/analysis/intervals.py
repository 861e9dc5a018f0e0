"""How far seed repeats agree: a mean with its Student-t interval, and how often arms diverge.

A few seeds are all a study can afford, so the interval is Student's t, not a normal
approximation; a single seed gives a mean and no interval rather than a zero-width one.
Every surface that shows a mean over seeds with its interval, charts and tables alike,
shows ``range_interval``, which stays in the metric's range (a loss's never reaches below
zero), tables as ``mean [low, high]``. ``mean_interval``'s symmetric mean +- t is the
helper under it (and the interval of a paired difference, which may take any sign).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from studies.records import Arm, TrialRecord
from worker.contract import TrialStatus


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

    @property
    def minus(self) -> float | None:
        """How far the interval reaches below the mean, for an asymmetric error bar (0 if
        the mean lies below it: a log interval bounds the geometric mean, which can sit
        under the arithmetic one)."""
        if self.mean is None or self.low is None:
            return None
        return max(self.mean - self.low, 0.0)

    @property
    def plus(self) -> float | None:
        """How far the interval reaches above the mean (0 if the mean lies above it)."""
        if self.mean is None or self.high is None:
            return None
        return max(self.high - self.mean, 0.0)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n), s the sample standard deviation."""
    _check_confidence(confidence)
    n = len(values)
    if n == 0:
        return Interval(None, None, None, 0, confidence)
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, None, None, 1, confidence)
    half = _t_half_width(values, confidence)
    return Interval(mean, mean - half, mean + half, n, confidence)


def range_interval(
    values: Sequence[float], confidence: float = 0.95, *, resamples: int = 9999, seed: int = 0
) -> Interval:
    """The interval a chart draws around the mean, kept within the metric's range.

    Where every value is positive (a loss, a perplexity): Student's t interval of the
    values' natural logarithms, back-transformed, exp(m +- t * s / sqrt(n)) with m and s
    the logs' mean and standard deviation. It is asymmetric, as a loss's spread over
    seeds is, and never reaches zero. Otherwise: a percentile bootstrap of the mean
    (``resamples`` draws, seeded so that a page draws the same bars every time), which
    stays within the values' own range. ``mean`` is the arithmetic mean, the value the
    best rule scores and the tables show.
    """
    _check_confidence(confidence)
    n = len(values)
    if n < 2:
        return mean_interval(values, confidence)
    mean = statistics.fmean(values)
    if all(value > 0 for value in values):
        logs = [math.log(value) for value in values]
        centre, half = statistics.fmean(logs), _t_half_width(logs, confidence)
        return Interval(mean, math.exp(centre - half), math.exp(centre + half), n, confidence)
    result = stats.bootstrap(
        (np.asarray(values, dtype=float),),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return Interval(mean, float(low), float(high), n, confidence)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _t_half_width(values: Sequence[float], confidence: float) -> float:
    """t_{(1+confidence)/2, n-1} * s / sqrt(n), for two values or more."""
    n = len(values)
    return _t_quantile(confidence, n - 1) * statistics.stdev(values) / math.sqrt(n)


@lru_cache(maxsize=64)
def _t_quantile(confidence: float, df: int) -> float:
    """Cached: scipy's t quantile costs tens of microseconds, and a page asks it for every
    configuration with the same few (confidence, df)."""
    return float(stats.t.ppf((1 + confidence) / 2, df))


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
        if trial.status in (TrialStatus.complete, TrialStatus.diverged):
            count[0] += trial.diverged
            count[1] += 1
    return {arm: DivergenceRate(*counts[arm]) for arm in sorted(counts, key=lambda arm: arm.order)}
