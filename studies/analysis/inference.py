"""Paired verdicts for two arms run on the same seeds: a calibrated test of a difference, a
test of equivalence against a stated margin, Holm's adjustment across a family of
comparisons, and the seeds a stated effect needs. Pure numbers in, dataclasses out; no
I/O. The README's "Verdicts for anyone's numbers" repeats these definitions.

- **Pairs.** ``baseline[i]`` and ``treatment[i]`` ran on the same seed (same data order,
  same initialisation), so their difference cancels that seed's luck.
- **Diverged runs.** A run that diverged is passed as a non-finite value (``inf``,
  ``-inf`` or ``nan``). The one rule: *a diverged run scores the worst finite value of its
  comparison*, over both arms and every seed (the largest when minimising, the smallest
  when maximising). A pair in which one arm diverged therefore counts against that arm
  (never for it); a pair in which both diverged is a tie (difference 0); and the rule
  treats the arms alike (swapping the arms of a pair only flips the sign of its
  difference), so it keeps the no-difference null symmetric and the test calibrated.
  ``diverged`` counts the pairs the rule scored. A comparison whose every run diverged has
  nothing to score and cannot decide.
- **Log path** (``log-t``), when every scored value is > 0: d_i = ln(treatment_i) -
  ln(baseline_i); ``change`` = exp(mean d) - 1, the ratio of the geometric means minus 1.
- **Scaled path** (``scaled-t``), when some value is <= 0: d_i = (treatment_i -
  baseline_i) / |mean(baseline)|, the baseline's mean taken over its scored values;
  ``change`` = mean d, the difference of the means as a fraction of the baseline's. A
  baseline mean of exactly 0 gives a change no size in percent: that comparison cannot
  decide (``reason`` says so).
- **Test.** Student's paired t on the d_i (``scipy.stats.ttest_1samp``, H0: mean d = 0,
  two-sided ``p_value``). The interval is its (1 - alpha) t interval, mean d +-
  t_{1-alpha/2, n-1} s / sqrt(n), back-transformed like the change (exp(.) - 1 on the log
  path), so it excludes 0 exactly when p < alpha.
- **Equivalence** (only with a ``margin``, a fraction): TOST, two one-sided paired t tests
  that the mean d lies above -margin and below +margin on the test's scale (ln(1 - margin)
  and ln(1 + margin) on the log path); ``p_equivalence`` is the larger one-sided p.
- **Verdict** (``verdict_of``): ``better`` or ``worse`` when p < alpha, by the sign of the
  change and the mode (lower is better when minimising); otherwise ``equivalent`` when a
  margin is given and p_equivalence < alpha; otherwise ``no_detectable_difference``.
- **Holm** (``holm``): across a family (a claim's comparisons, a file's), Holm's step-down
  adjustment (that of ``statsmodels.stats.multitest.multipletests(method="holm")``) of the
  difference p-values, and separately of the equivalence p-values; the verdicts are then
  decided at the adjusted ones (``p_adjusted``, ``p_equivalence_adjusted``), at the
  tests' own alpha unless told another. Comparisons that could not be tested (p None) are
  not in the family. Intervals stay unadjusted.
- **Seeds needed** for ``effect`` (a fraction; by default the margin, else 1%) on the test's
  scale (ln(1 + effect) on the log path): the smallest n >= 2 at which a two-sided paired
  t test at alpha has POWER against a true mean difference of that size, for differences
  of SD sigma (``statsmodels.stats.power.TTestPower``). ``estimate`` puts sigma = s, the
  observed SD; ``upper`` puts sigma = the (1 - alpha) upper confidence bound on it,
  s sqrt((n - 1) / chi2_{alpha, n-1}); from 2 or 3 pairs s is a poor estimate of sigma, so
  quote the range. None with fewer than 2 pairs.

**Why Student's t at every n.** Under the null (the two arms' runs of a seed are
exchangeable), each d_i is symmetric about 0 on either scale, and the diverged rule keeps
it so. For symmetric differences the t test is exact when they are normal and
conservative when their tails are heavier (Efron 1969); a difference of two runs from one
distribution is always peaked at 0, which is the conservative side. ``tests/test_inference``
checks the false-call rate by simulation (normal, lognormal, Student-t(3) raw and shifted,
negative values, diverged runs) at 3 to 30 pairs. An exact sign-flip permutation test was
the alternative: equally valid, but its smallest two-sided p is 2^(1-n), so it can never
call a difference below 6 pairs, however large; the 3 to 5 seeds a study usually affords
would all read "no detectable difference". The percentile bootstrap this replaces is not
calibrated at small n (at 3 pairs its interval of the mean is [min, max]).

**Edge cases** (never an exception for the data, only for bad arguments):

- n = 0, or every run diverged: method ``none``, change, interval, p and sd None.
- n = 1: the change (one pair's), no interval, p, sd or seeds needed.
- A baseline mean of 0 on the scaled path, or values so near the float limit (1e308) that
  their differences overflow: as n = 0, with its reason, the path's method.
- Constant differences (every pair differs by the same d; an SD below ROUNDING of the
  largest |d| is rounding and counts as 0): the t statistic is 0/0 or infinite and says
  nothing, so the exact sign-flip test stands in. With d != 0 only the observed signs and
  their mirror image reach the observed sum: p = 2^(1-n), which is below 0.05 from 6
  pairs; with d = 0, p = 1. Likewise each one-sided equivalence p is 2^(-n) when d lies
  strictly inside the margin, else 1. The interval is [d, d] once 2^(1-n) < alpha, and
  None before (every shift is then as likely), ``sd`` 0, and seeds needed the fewest pairs
  at which 2^(1-n) < alpha (6 at 0.05), for both ends. So a metric with coarse steps (an
  accuracy over 100 examples, say) that repeats one difference on 2 seeds is not called.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestPower

from studies.analysis.objective import check_mode
from worker.contract import Mode, Names

__all__ = [
    "ALPHA",
    "DEFAULT_EFFECT",
    "POWER",
    "Method",
    "PairedTest",
    "SeedsNeeded",
    "Verdict",
    "holm",
    "paired_test",
    "paired_tests",
    "seeds_needed",
    "verdict_of",
]

ALPHA = 0.05
POWER = 0.80
#: the effect seeds needed is sized for when neither ``effect`` nor ``margin`` is given
DEFAULT_EFFECT = 0.01
#: differences whose SD is at most this fraction of the largest |d| count as constant
ROUNDING = 1e-9


class Verdict(Names):
    better = "better"
    worse = "worse"
    equivalent = "equivalent"
    no_detectable_difference = "no_detectable_difference"


class Method(Names):
    log_t = "log-t"  # paired Student-t on ln(treatment / baseline)
    scaled_t = "scaled-t"  # paired Student-t on (treatment - baseline) / |mean baseline|
    none = "none"  # nothing to test: no pairs, or every run diverged


@dataclass(frozen=True)
class SeedsNeeded:
    """Pairs needed for POWER at two-sided alpha against ``effect`` (a fraction)."""

    effect: float
    #: from the observed SD of the differences
    estimate: int | None
    #: from the (1 - alpha) upper confidence bound on their SD: the cautious end
    upper: int | None


@dataclass(frozen=True)
class PairedTest:
    """A treatment against its baseline, paired by seed (see the module docstring)."""

    method: Method
    #: pairs (seeds), diverged ones included
    n: int
    #: treatment vs baseline as a fraction, e.g. -0.018 for 1.8% lower; None: no size
    change: float | None
    #: its (1 - alpha) interval on the same scale; None without one (n < 2)
    low: float | None
    high: float | None
    #: two-sided, H0: no difference; None where no test ran
    p_value: float | None
    margin: float | None
    #: TOST p against +-margin; None without a margin or a test
    p_equivalence: float | None
    #: SD of the differences d_i (log, or fraction of the baseline mean); None for n < 2
    sd: float | None
    #: pairs in which a diverged run was scored by the divergence rule
    diverged: int
    seeds_needed: SeedsNeeded | None
    verdict: Verdict
    mode: Mode
    alpha: float = ALPHA
    #: Holm-adjusted p-values, set by ``holm`` (None otherwise, or where p is None)
    p_adjusted: float | None = None
    p_equivalence_adjusted: float | None = None
    #: why a test could not decide at all (no pairs, every run diverged, baseline mean 0)
    reason: str | None = None


def verdict_of(
    p_value: float | None,
    p_equivalence: float | None,
    change: float | None,
    mode: Mode,
    alpha: float = ALPHA,
) -> Verdict:
    """Better or worse when ``p_value`` < alpha (by the change's sign and the mode), else
    equivalent when ``p_equivalence`` < alpha, else no detectable difference."""
    if p_value is not None and p_value < alpha and change is not None and change != 0:
        lower = change < 0
        return Verdict.better if lower == (check_mode(mode) == "min") else Verdict.worse
    if p_equivalence is not None and p_equivalence < alpha:
        return Verdict.equivalent
    return Verdict.no_detectable_difference


def paired_test(
    baseline: Sequence[float],
    treatment: Sequence[float],
    mode: Mode,
    *,
    margin: float | None = None,
    effect: float | None = None,
    alpha: float = ALPHA,
) -> PairedTest:
    """``treatment`` against ``baseline``, pair i being their values on seed i; a diverged
    run is a non-finite value. See the module docstring."""
    return paired_tests([(baseline, treatment)], mode, margin=margin, effect=effect, alpha=alpha)[0]


def paired_tests(
    comparisons: Sequence[tuple[Sequence[float], Sequence[float]]],
    mode: Mode,
    *,
    margin: float | None = None,
    effect: float | None = None,
    alpha: float = ALPHA,
) -> list[PairedTest]:
    """``paired_test`` of each (baseline, treatment), in order, computed in numpy over the
    comparisons with the same number of pairs at once (thousands in well under a second)."""
    check_mode(mode)
    _check_arguments(margin, effect, alpha)
    effect = effect if effect is not None else margin if margin is not None else DEFAULT_EFFECT
    groups: dict[int, list[int]] = {}
    arrays: list[tuple[np.ndarray, np.ndarray]] = []
    for index, (baseline, treatment) in enumerate(comparisons):
        b = np.asarray(baseline, dtype=float).reshape(-1)
        t = np.asarray(treatment, dtype=float).reshape(-1)
        if b.shape != t.shape:
            raise ValueError(
                f"comparison {index}: {b.size} baseline values but {t.size} treatment values"
            )
        arrays.append((b, t))
        groups.setdefault(b.size, []).append(index)
    results: list[PairedTest | None] = [None] * len(arrays)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for n, indices in groups.items():
            b = np.stack([arrays[i][0] for i in indices]).reshape(len(indices), n)
            t = np.stack([arrays[i][1] for i in indices]).reshape(len(indices), n)
            tests = _group(b, t, mode, margin, effect, alpha)
            for index, test in zip(indices, tests, strict=True):
                results[index] = test
    return results  # type: ignore[return-value]


def holm(tests: Sequence[PairedTest], alpha: float | None = None) -> list[PairedTest]:
    """The same tests with their verdicts decided at Holm-adjusted p-values: the
    difference tests adjusted across the family, and separately the equivalence tests.
    Tests without a p-value are not in the family and keep their verdict. ``alpha``: by
    default the tests' own level (the smallest, should they differ), so that a family
    tested at a sequential look's spent alpha (``sequential``) is adjusted at it."""
    if alpha is None:
        alpha = min((t.alpha for t in tests), default=ALPHA)
    _check_arguments(None, None, alpha)
    adjusted = [_holm([t.p_value for t in tests]), _holm([t.p_equivalence for t in tests])]
    result = []
    for test, p, p_eq in zip(tests, *adjusted, strict=True):
        verdict = (
            verdict_of(p, p_eq, test.change, test.mode, alpha)
            if test.p_value is not None
            else test.verdict
        )
        result.append(replace(test, p_adjusted=p, p_equivalence_adjusted=p_eq, verdict=verdict))
    return result


def seeds_needed(sd: float, n: int, effect: float, alpha: float = ALPHA) -> SeedsNeeded:
    """Pairs needed to detect a mean difference ``effect`` (on the differences' own scale)
    with POWER at two-sided ``alpha``, from differences of observed SD ``sd`` over ``n``
    pairs: from ``sd`` itself, and from its (1 - alpha) upper confidence bound."""
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return SeedsNeeded(effect, None, None)
    sds = np.array([sd, sd * _upper_sd_factor(n, alpha)])
    estimate, upper = _seeds_needed(sds, abs(effect), alpha)
    return SeedsNeeded(effect, int(estimate), int(upper))


# --- internals ----------------------------------------------------------------------------


def _check_arguments(margin: float | None, effect: float | None, alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if margin is not None and not 0 < margin < 1:
        raise ValueError(f"margin must be a fraction in (0, 1), got {margin}")
    if effect is not None and not (0 < effect < math.inf):
        raise ValueError(f"effect must be a fraction > 0, got {effect}")


def _group(
    b: np.ndarray, t: np.ndarray, mode: Mode, margin: float | None, effect: float, alpha: float
) -> list[PairedTest]:
    """The tests of k comparisons of n pairs each: ``b`` and ``t`` are (k, n)."""
    k, n = b.shape
    finite_b, finite_t = np.isfinite(b), np.isfinite(t)
    # the divergence rule: a diverged run scores the worst finite value of its comparison
    values = np.concatenate([b, t], axis=1)
    finite = np.concatenate([finite_b, finite_t], axis=1)
    if mode == "min":
        worst = np.where(finite, values, -np.inf).max(axis=1, initial=-np.inf)
    else:
        worst = np.where(finite, values, np.inf).min(axis=1, initial=np.inf)
    scored_b = np.where(finite_b, b, worst[:, None])
    scored_t = np.where(finite_t, t, worst[:, None])
    diverged = (~finite_b | ~finite_t).sum(axis=1)
    anything = finite.any(axis=1) & (n > 0)

    positive = (scored_b > 0).all(axis=1) & (scored_t > 0).all(axis=1)
    scale = np.abs(scored_b.mean(axis=1)) if n else np.zeros(k)
    d = np.where(
        positive[:, None],
        np.log(np.where(positive[:, None], scored_t, 1.0))
        - np.log(np.where(positive[:, None], scored_b, 1.0)),
        (scored_t - scored_b) / np.where(scale > 0, scale, 1.0)[:, None],
    )
    sized = positive | ((scale > 0) & np.isfinite(scale))
    mean = d.mean(axis=1) if n else np.zeros(k)
    # values near the float limit can overflow the differences or their mean
    overflow = ~np.isfinite(mean) | ~np.isfinite(d).all(axis=1)
    usable = anything & sized & ~overflow

    p = low = high = p_eq = sd = None
    needed: list[SeedsNeeded | None] = [None] * k
    if n >= 2:
        # rounding leaves a constant difference a spread of ~1e-16 of its size: none
        sd = d.std(axis=1, ddof=1)
        constant = sd <= ROUNDING * np.abs(d).max(axis=1)
        sd = np.where(constant, 0.0, sd)
        flip = _sign_flip_p(n)  # the exact sign-flip p of n equal differences
        result = stats.ttest_1samp(d, 0.0, axis=1)
        p = np.where(constant, np.where(mean != 0, flip, 1.0), result.pvalue)
        interval = result.confidence_interval(1 - alpha)
        exact = mean if flip < alpha else np.full(k, np.nan)
        low = np.where(constant, exact, interval.low)
        high = np.where(constant, exact, interval.high)
        if margin is not None:
            lower = np.where(positive, math.log1p(-margin), -margin)
            upper = np.where(positive, math.log1p(margin), margin)
            above = stats.ttest_1samp(d - lower[:, None], 0.0, axis=1, alternative="greater")
            below = stats.ttest_1samp(d - upper[:, None], 0.0, axis=1, alternative="less")
            inside = (lower < mean) & (mean < upper)
            tost = np.maximum(above.pvalue, below.pvalue)
            p_eq = np.where(constant, np.where(inside, flip / 2, 1.0), tost)
        scaled_effect = np.where(positive, math.log1p(effect), effect)
        sds = np.concatenate([sd, sd * _upper_sd_factor(n, alpha)])
        counts = _seeds_needed(sds, np.concatenate([scaled_effect, scaled_effect]), alpha)
        needed = [
            SeedsNeeded(effect, int(counts[i]), int(counts[k + i])) if usable[i] else None
            for i in range(k)
        ]

    def number(array: np.ndarray | None, i: int, log: bool = False) -> float | None:
        if array is None or math.isnan(array[i]):
            return None
        value = float(array[i])
        return float(np.expm1(value)) if log else value

    tests = []
    for i in range(k):
        log = bool(positive[i])
        common = {"n": n, "diverged": int(diverged[i]), "mode": mode, "alpha": alpha}
        if not usable[i]:
            if n == 0:
                reason = "no pairs"
            elif not anything[i]:
                reason = "every run diverged"
            elif not sized[i] and scale[i] == 0:
                reason = "the baseline mean is 0, so a change has no size in percent"
            else:
                reason = "the values overflow floating point when differenced"
            method = (Method.log_t if log else Method.scaled_t) if anything[i] else Method.none
            tests.append(_undecided(method, margin, reason, **common))
            continue
        change = float(np.expm1(mean[i])) if log else float(mean[i])
        p_i = number(p, i)
        p_eq_i = number(p_eq, i)
        tests.append(
            PairedTest(
                method=Method.log_t if log else Method.scaled_t,
                change=change,
                low=number(low, i, log),
                high=number(high, i, log),
                p_value=p_i,
                margin=margin,
                p_equivalence=p_eq_i,
                sd=number(sd, i),
                seeds_needed=needed[i],
                verdict=verdict_of(p_i, p_eq_i, change, mode, alpha),
                **common,
            )
        )
    return tests


def _undecided(
    method: Method,
    margin: float | None,
    reason: str,
    *,
    n: int,
    diverged: int,
    mode: Mode,
    alpha: float,
) -> PairedTest:
    return PairedTest(
        method=method,
        n=n,
        change=None,
        low=None,
        high=None,
        p_value=None,
        margin=margin,
        p_equivalence=None,
        sd=None,
        diverged=diverged,
        seeds_needed=None,
        verdict=Verdict.no_detectable_difference,
        mode=mode,
        alpha=alpha,
        reason=reason,
    )


def _holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values of those given; None stays None (not in the family).

    The step-down adjustment of ``multipletests(method="holm")``, the i-th smallest of m
    p-values times (m - i + 1), made non-decreasing and capped at 1, written out in numpy
    because statsmodels' Holm branch runs a full ``gc.collect()`` on every call (tens of
    milliseconds in a busy process, per claim). tests/test_inference checks the two agree.
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    if present:
        p = np.array([p_values[i] for i in present], dtype=float)
        order = np.argsort(p, kind="stable")
        steps = np.maximum.accumulate(p[order] * np.arange(p.size, 0, -1))
        corrected = np.empty_like(p)
        corrected[order] = np.minimum(steps, 1.0)
        for i, value in zip(present, corrected, strict=True):
            adjusted[i] = float(value)
    return adjusted


def _sign_flip_p(n: int) -> float:
    """The exact two-sided sign-flip p of n equal, non-zero differences: of the 2^n sign
    patterns, only theirs and its mirror image reach their sum, 2 / 2^n."""
    return 2.0 ** (1 - n)


def _sign_flip_seeds(alpha: float) -> int:
    """The fewest pairs at which n equal differences reach p < alpha by sign flips."""
    n = 2
    while _sign_flip_p(n) >= alpha:
        n += 1
    return n


def _upper_sd_factor(n: int, alpha: float) -> float:
    """sigma <= s * this with confidence 1 - alpha: sqrt((n - 1) / chi2_{alpha, n-1})."""
    return math.sqrt((n - 1) / stats.chi2.ppf(alpha, n - 1))


#: beyond this many pairs Guenther's approximation is the answer (to a pair or so; the noncentral
#: t is slow and loses precision out there)
_NORMAL_ABOVE = 1e5


def _seeds_needed(sd: np.ndarray, effect: np.ndarray | float, alpha: float) -> np.ndarray:
    """The smallest n >= 2 with ``TTestPower().power(effect / sd, n, alpha) >= POWER`` for
    each SD (where sd = 0, the fewest pairs at which the sign-flip p falls below alpha),
    found in numpy over all at once: a window of n around
    Guenther's approximation, (z_{1-alpha/2} + z_POWER)^2 / d^2 + z_{1-alpha/2}^2 / 2,
    moved until it holds the first n with enough power. ``TTestPower.solve_power`` solves
    one at a time (milliseconds each); tests/test_inference checks the two agree."""
    sd = np.asarray(sd, dtype=float)
    standardized = np.abs(np.broadcast_to(effect, sd.shape)) / np.where(sd > 0, sd, 1.0)
    z_alpha, z_power = stats.norm.isf(alpha / 2), stats.norm.ppf(POWER)
    approx = ((z_alpha + z_power) / standardized) ** 2 + z_alpha**2 / 2
    result = np.where(sd > 0, 0, _sign_flip_seeds(alpha)).astype(np.int64)
    large = (sd > 0) & ~(approx < _NORMAL_ABOVE)
    result[large] = np.ceil(np.minimum(approx[large], 2.0**62))
    pending = np.flatnonzero(result == 0)
    start = np.maximum(2, np.floor(approx[pending]) - 3)
    window = np.arange(12)
    power = TTestPower()
    for _ in range(100):  # far more moves than the approximation's error ever needs
        if not pending.size:
            break
        candidates = start[:, None] + window
        shift = standardized[pending, None] * np.sqrt(candidates)
        exact = power.power(standardized[pending, None], candidates, alpha)
        # statsmodels' noncentral t gives nan far out in its tail, where the power is ~1:
        # there the normal approximation around the t critical value stands in
        critical = stats.t.isf(alpha / 2, candidates - 1)
        approximate = stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift)
        reached = np.where(np.isnan(exact), approximate, exact) >= POWER
        found = reached.any(axis=1)
        first = reached.argmax(axis=1)
        done = found & ((first > 0) | (start == 2))
        result[pending[done]] = candidates[done, first[done]]
        # not there yet: move the window up; reached at its start: move it down
        # (the windows overlap by one n, so a move never steps over the answer)
        step = window.size - 1
        start = np.where(found, np.maximum(2, start - step), start + step)
        keep = ~done
        pending, start = pending[keep], start[keep]
    result[pending] = np.ceil(approx[pending])
    return result
