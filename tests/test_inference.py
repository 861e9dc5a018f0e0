"""``studies.analysis.inference``: calibration by simulation (the acceptance of issue 20),
agreement with scipy and statsmodels on samples, the divergence rule, Holm, seeds needed,
and the edge cases.

Every simulation is seeded, so a run is reproducible; the Monte-Carlo bound on a
false-call rate is 0.05 + 3 sqrt(0.05 * 0.95 / replicates). ``pytest -s`` prints the rates.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from studies.analysis.inference import (
    ALPHA,
    Method,
    PairedTest,
    SeedsNeeded,
    Verdict,
    holm,
    paired_test,
    paired_tests,
    seeds_needed,
    verdict_of,
)

REPLICATES = 4000
DIFFERENCE = (Verdict.better, Verdict.worse)


def bound(replicates: int, rate: float = ALPHA) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / replicates)


def verdicts(baseline: np.ndarray, treatment: np.ndarray, mode: str = "min", **kw) -> Counter:
    return Counter(
        t.verdict for t in paired_tests(list(zip(baseline, treatment, strict=True)), mode, **kw)
    )


def false_call_rate(counts: Counter) -> float:
    return sum(counts[v] for v in DIFFERENCE) / sum(counts.values())


# --- calibration on null data ---------------------------------------------------------------

Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
NULLS: dict[str, Draw] = {
    "normal": lambda rng, shape: rng.normal(3.0, 0.1, shape),
    "lognormal": lambda rng, shape: rng.lognormal(1.0, 0.5, shape),
    # shifted positive: almost always the log path (a value <= 0 is ~1 in 1,000)
    "student-t3+10": lambda rng, shape: 10 + rng.standard_t(3, shape),
    "student-t3": lambda rng, shape: rng.standard_t(3, shape),  # values <= 0: scaled path
    "normal-around-minus-1": lambda rng, shape: rng.normal(-1.0, 0.3, shape),
    # the divergence rule under the null: each run diverges with probability 0.3
    "normal-30%-diverged": lambda rng, shape: np.where(
        rng.random(shape) < 0.3, np.inf, rng.normal(3.0, 0.1, shape)
    ),
}
SIZES = (3, 5, 10, 30)


@pytest.mark.parametrize("name", NULLS)
def test_null_data_is_rarely_called_better_or_worse(name: str) -> None:
    """Baseline and treatment iid: better or worse at most 5% of the time, within
    Monte-Carlo error, at every size."""
    rng = np.random.default_rng(sorted(NULLS).index(name))
    rates = {}
    for n in SIZES:
        baseline = NULLS[name](rng, (REPLICATES, n))
        treatment = NULLS[name](rng, (REPLICATES, n))
        # the mode only names a false call better or worse, except through the diverged
        # rule (which end is the worst), so max is checked where runs diverge
        for mode in ("min", "max") if "diverged" in name else ("min",):
            rates[n, mode] = false_call_rate(verdicts(baseline, treatment, mode))
    print(f"\nnull {name}: " + "  ".join(f"n={n} {m} {r:.3f}" for (n, m), r in rates.items()))
    assert all(rate <= bound(REPLICATES) for rate in rates.values()), rates


def test_log_and_scaled_paths_are_taken() -> None:
    rng = np.random.default_rng(0)
    positive = paired_tests(list(zip(*NULLS["lognormal"](rng, (2, 50, 5)), strict=True)), "min")
    mixed = paired_tests(list(zip(*NULLS["student-t3"](rng, (2, 50, 5)), strict=True)), "min")
    assert {t.method for t in positive} == {Method.log_t}
    assert {t.method for t in mixed} == {Method.scaled_t}


# --- power and equivalence ------------------------------------------------------------------


def test_a_true_5_percent_gain_is_found() -> None:
    """Mode min, treatment = baseline * 0.95 * exp(noise), noise SD 0.02, 10 seeds."""
    rng = np.random.default_rng(11)
    baseline = rng.lognormal(1.0, 0.1, (REPLICATES, 10))
    treatment = baseline * 0.95 * np.exp(rng.normal(0, 0.02, baseline.shape))
    counts = verdicts(baseline, treatment, "min")
    rate = counts[Verdict.better] / REPLICATES
    print(f"\n5% gain, 2% noise, n=10: better {rate:.3f}, worse {counts[Verdict.worse]}")
    assert rate >= 0.8
    assert counts[Verdict.worse] == 0


def test_a_true_zero_is_called_equivalent_within_the_margin() -> None:
    """A true 0 with 0.5% paired noise, 30 seeds, a 2% margin."""
    rng = np.random.default_rng(12)
    baseline = rng.lognormal(1.0, 0.1, (REPLICATES, 30))
    treatment = baseline * np.exp(rng.normal(0, 0.005, baseline.shape))
    counts = verdicts(baseline, treatment, "min", margin=0.02)
    rate = counts[Verdict.equivalent] / REPLICATES
    print(f"\ntrue 0, 0.5% noise, n=30, margin 2%: equivalent {rate:.3f}")
    assert rate >= 0.8
    assert false_call_rate(counts) <= bound(REPLICATES)


def test_equivalence_at_the_margin_is_rarely_claimed() -> None:
    """TOST's own error: with a true change of exactly the margin, p_equivalence < alpha
    at most alpha of the time (the scaled path, where the margin is +-margin of the mean;
    the verdict itself would mostly be ``worse``, the difference test coming first)."""
    rng = np.random.default_rng(13)
    baseline = rng.normal(-2.0, 0.05, (REPLICATES, 10))
    treatment = baseline + 0.02 * 2.0 + rng.normal(0, 0.01, baseline.shape)
    tests = paired_tests(list(zip(baseline, treatment, strict=True)), "min", margin=0.02)
    rate = np.mean([t.p_equivalence < ALPHA for t in tests])
    print(f"\ntrue change = margin: TOST p < alpha {rate:.3f}")
    assert rate <= bound(REPLICATES)


# --- Holm -----------------------------------------------------------------------------------


def test_holm_keeps_the_family_wise_rate() -> None:
    """Four null comparisons per family: any false call in ~18.5% of families unadjusted
    (1 - 0.95^4), at most 5% under Holm."""
    families, size = 3000, 4
    rng = np.random.default_rng(21)
    baseline = rng.normal(3.0, 0.1, (families * size, 10))
    treatment = rng.normal(3.0, 0.1, baseline.shape)
    tests = paired_tests(list(zip(baseline, treatment, strict=True)), "min")
    unadjusted = adjusted = 0
    for start in range(0, len(tests), size):
        family = tests[start : start + size]
        unadjusted += any(t.verdict in DIFFERENCE for t in family)
        adjusted += any(t.verdict in DIFFERENCE for t in holm(family))
    print(
        f"\nfamily-wise false calls: unadjusted {unadjusted / families:.3f}, "
        f"Holm {adjusted / families:.3f}"
    )
    assert adjusted / families <= bound(families)
    assert unadjusted / families >= 0.12


def test_holm_matches_statsmodels_on_both_families() -> None:
    rng = np.random.default_rng(22)
    pairs = [
        (b, b * (1 + shift) * np.exp(rng.normal(0, 0.01, 8)))
        for shift, b in zip(
            (0.0, -0.01, 0.02, 0.004, -0.03), rng.lognormal(0, 0.1, (5, 8)), strict=True
        )
    ]
    tests = paired_tests(pairs, "min", margin=0.02)
    adjusted = holm(tests)
    expected = multipletests([t.p_value for t in tests], method="holm")[1]
    expected_eq = multipletests([t.p_equivalence for t in tests], method="holm")[1]
    assert [t.p_adjusted for t in adjusted] == pytest.approx(list(expected))
    assert [t.p_equivalence_adjusted for t in adjusted] == pytest.approx(list(expected_eq))
    for test in adjusted:
        assert test.verdict == verdict_of(
            test.p_adjusted, test.p_equivalence_adjusted, test.change, "min"
        )
        # adjusting only ever makes a verdict more cautious
        assert test.p_adjusted >= next(t for t in tests if t.change == test.change).p_value


def test_holm_adjustment_matches_statsmodels_on_random_families() -> None:
    rng = np.random.default_rng(23)
    # few families: each multipletests(method="holm") call runs a full gc.collect()
    for size in (1, 2, 3, 5, 12):
        for _ in range(2):
            p = rng.uniform(0, 0.2, size) ** rng.uniform(0.5, 2)
            p[rng.random(size) < 0.2] = p[0]  # ties
            tests = [_with_p(paired_test([1, 2, 3], [1, 2, 3.1], "min"), value) for value in p]
            adjusted = [t.p_adjusted for t in holm(tests)]
            assert adjusted == pytest.approx(list(multipletests(p, method="holm")[1]))


def _with_p(test: PairedTest, p: float) -> PairedTest:
    return replace(test, p_value=float(p))


def test_holm_leaves_untested_comparisons_out_of_the_family() -> None:
    strong = paired_test([1.0, 1.1, 1.2, 1.05], [0.9, 0.99, 1.08, 0.945], "min")
    untested = paired_test([1.0], [0.5], "min")
    result = holm([strong, untested])
    assert result[0].p_adjusted == pytest.approx(strong.p_value)  # a family of one
    assert result[1].p_adjusted is None and result[1].verdict == untested.verdict
    assert holm([]) == []


# --- the divergence rule --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("diverged", [math.inf, -math.inf, math.nan])
def test_a_treatment_that_always_diverged_is_worse(mode: str, diverged: float) -> None:
    baseline = [3.0, 3.1, 2.9, 3.05, 2.95, 3.02]
    test = paired_test(baseline, [diverged] * 6, mode)
    assert test.verdict == Verdict.worse
    assert test.diverged == 6
    # and the other way round, better for the arm that trained
    assert paired_test([diverged] * 6, baseline, mode).verdict == Verdict.better


def test_always_diverging_is_never_better_and_mostly_worse_at_6_seeds() -> None:
    rng = np.random.default_rng(31)
    for mode in ("min", "max"):
        baseline = rng.normal(3.0, 0.1, (1000, 6))
        counts = verdicts(baseline, np.full(baseline.shape, np.inf), mode)
        print(f"\ntreatment diverged on all 6 seeds, {mode}: {dict(counts)}")
        assert counts[Verdict.better] == 0
        assert counts[Verdict.worse] >= 750


def test_a_diverged_run_scores_the_worst_finite_value() -> None:
    """The worst finite value of the comparison, both arms: the largest when minimising
    (here the treatment's 1.3), the smallest when maximising (the baseline's 1.0); a pair
    in which both diverged is a tie."""
    baseline, treatment = [1.0, 1.2, math.inf, 1.1], [1.1, 1.3, math.nan, math.inf]
    scored = {
        "min": ([1.0, 1.2, 1.3, 1.1], [1.1, 1.3, 1.3, 1.3]),
        "max": ([1.0, 1.2, 1.0, 1.1], [1.1, 1.3, 1.0, 1.0]),
    }
    for mode, (b, t) in scored.items():
        test = paired_test(baseline, treatment, mode)
        expected = stats.ttest_rel(np.log(t), np.log(b))
        assert test.p_value == pytest.approx(expected.pvalue)
        assert test.change == pytest.approx(math.expm1(np.mean(np.log(t) - np.log(b))))
        assert test.diverged == 2
    tie = paired_test([1.0, math.inf], [1.0, math.inf], "min")
    assert tie.change == 0 and tie.p_value == 1 and tie.diverged == 1


def test_every_run_diverged_cannot_decide() -> None:
    test = paired_test([math.inf] * 4, [math.nan] * 4, "min", margin=0.02)
    assert test.method == Method.none and test.reason == "every run diverged"
    assert test.verdict == Verdict.no_detectable_difference
    assert (test.change, test.low, test.high, test.p_value, test.p_equivalence) == (None,) * 5
    assert (test.n, test.diverged, test.seeds_needed) == (4, 4, None)


# --- agreement with the libraries -------------------------------------------------------------


def test_p_values_and_intervals_match_scipy_and_statsmodels() -> None:
    rng = np.random.default_rng(41)
    margin = 0.03
    for n in (2, 3, 7, 20):
        positive = rng.lognormal(1.0, 0.2, (20, 2, n))
        mixed = rng.normal(-0.5, 1.0, (20, 2, n))
        for b, t in [*positive, *mixed]:
            test = paired_test(b, t, "min", margin=margin)
            if test.method == Method.log_t:
                d = np.log(t) - np.log(b)
                low, high = math.log1p(-margin), math.log1p(margin)
                back = np.expm1
            else:
                d = (t - b) / abs(b.mean())
                low, high, back = -margin, margin, lambda x: x
            paired = (np.log(t), np.log(b)) if test.method == Method.log_t else (t, b)
            assert test.p_value == pytest.approx(stats.ttest_rel(*paired).pvalue)
            interval = stats.ttest_1samp(d, 0).confidence_interval(1 - ALPHA)
            assert (test.low, test.high) == pytest.approx((back(interval.low), back(interval.high)))
            assert test.p_equivalence == pytest.approx(ttost_paired(d, np.zeros(n), low, high)[0])
            assert test.sd == pytest.approx(np.std(d, ddof=1))


def test_the_interval_excludes_zero_exactly_when_the_test_rejects() -> None:
    rng = np.random.default_rng(42)
    baseline = rng.lognormal(0, 0.1, (2000, 4))
    treatment = baseline * np.exp(rng.normal(0.03, 0.03, baseline.shape))
    for test in paired_tests(list(zip(baseline, treatment, strict=True)), "min"):
        assert (test.p_value < ALPHA) == (not test.low <= 0 <= test.high)


def test_constant_differences_take_the_exact_sign_flip_p() -> None:
    """Every pair differs by the same ratio: scipy's exact permutation test (swapping the
    arms within pairs) gives 2^(1-n); 6 pairs are the fewest that decide at 0.05."""
    for n in (2, 3, 5, 6, 8):
        baseline = np.arange(1.0, n + 1)
        treatment = baseline * 0.9
        test = paired_test(baseline, treatment, "min", margin=0.2)
        flip = stats.permutation_test(
            (baseline, treatment),
            lambda x, y, axis=-1: np.mean(np.log(y) - np.log(x), axis=axis),
            permutation_type="samples",
            vectorized=True,
        )
        assert test.p_value == pytest.approx(flip.pvalue)
        assert test.sd == 0 and test.change == pytest.approx(-0.1)
        assert test.seeds_needed == SeedsNeeded(0.2, 6, 6)
        # each one-sided equivalence p is 2^-n: -10% lies inside the 20% margin
        assert test.p_equivalence == pytest.approx(2.0**-n)
        if n >= 6:
            assert test.verdict == Verdict.better
            assert (test.low, test.high) == pytest.approx((-0.1, -0.1))
        else:
            assert test.verdict == (
                Verdict.equivalent if n == 5 else Verdict.no_detectable_difference
            )
            assert test.low is None and test.high is None


def test_identical_arms_are_equivalent_from_5_pairs() -> None:
    for n, verdict in ((4, Verdict.no_detectable_difference), (5, Verdict.equivalent)):
        values = list(np.linspace(1, 2, n))
        test = paired_test(values, values, "min", margin=0.01)
        assert (test.change, test.p_value, test.p_equivalence) == (0, 1, 2.0**-n)
        assert test.verdict == verdict
    assert paired_test([1.0, 2.0], [1.0, 2.0], "min").verdict == Verdict.no_detectable_difference


# --- seeds needed ---------------------------------------------------------------------------


def test_seeds_needed_matches_statsmodels() -> None:
    """With sigma large against the effect (standardised effect < 1), the estimate is
    TTestPower's solution rounded up; the upper end is the same at the chi-square bound."""
    solver = TTestPower()
    for sd in (0.012, 0.02, 0.05, 0.1, 0.3):
        for n in (2, 3, 10):
            needed = seeds_needed(sd, n, 0.01)
            solved = solver.solve_power(effect_size=0.01 / sd, alpha=ALPHA, power=0.8)
            assert abs(needed.estimate - math.ceil(solved)) <= 1, (sd, needed, solved)
            assert needed.upper >= needed.estimate
            upper_sd = sd * math.sqrt((n - 1) / stats.chi2.ppf(ALPHA, n - 1))
            if needed.upper < 10_000:  # beyond, solve_power takes seconds
                solved = solver.solve_power(effect_size=0.01 / upper_sd, alpha=ALPHA, power=0.8)
                assert abs(needed.upper - math.ceil(solved)) <= 1, (sd, n, needed, solved)


def test_seeds_needed_in_the_normal_range() -> None:
    """Past 100,000 pairs the count is Guenther's approximation, the normal answer plus
    z^2 / 2, within 0.01% of the noncentral t's (itself imprecise out there)."""
    z = stats.norm.isf(ALPHA / 2) + stats.norm.ppf(0.8)
    for sd in (1.0, 10.0):
        needed = seeds_needed(sd, 30, 0.01)
        normal = (z * sd / 0.01) ** 2
        assert needed.estimate == math.ceil(normal + stats.norm.isf(ALPHA / 2) ** 2 / 2)
        assert needed.upper > needed.estimate


def test_seeds_needed_on_tests() -> None:
    rng = np.random.default_rng(51)
    baseline = rng.lognormal(0, 0.1, (500, 5))
    treatment = baseline * np.exp(rng.normal(0, 0.02, baseline.shape))
    for test in paired_tests(list(zip(baseline, treatment, strict=True)), "min", effect=0.01):
        needed = test.seeds_needed
        assert needed.effect == 0.01
        assert 2 <= needed.estimate <= needed.upper
        # the same counts as the scalar function on the log scale
        assert _counts(needed) == _counts(seeds_needed(test.sd, 5, math.log1p(0.01)))
    # the margin is the default effect, else 1%
    assert paired_test([1, 2, 3], [1, 2.1, 3], "min", margin=0.05).seeds_needed.effect == 0.05
    assert paired_test([1, 2, 3], [1, 2.1, 3], "min").seeds_needed.effect == 0.01


def _counts(needed: SeedsNeeded) -> tuple[int | None, int | None]:
    return needed.estimate, needed.upper


# --- edge cases and arguments ---------------------------------------------------------------


def test_no_pairs() -> None:
    test = paired_test([], [], "max", margin=0.1)
    assert (test.method, test.n, test.change, test.p_value, test.reason) == (
        Method.none,
        0,
        None,
        None,
        "no pairs",
    )
    assert test.verdict == Verdict.no_detectable_difference


@pytest.mark.parametrize(
    ("baseline", "treatment", "change"),
    [
        ([2.0], [1.0], -0.5),
        ([-2.0], [-1.0], 0.5),
        ([2.0], [math.inf], 0.0),
    ],
)
def test_one_pair_has_a_change_and_nothing_else(baseline, treatment, change) -> None:
    test = paired_test(baseline, treatment, "min", margin=0.1)
    assert test.change == pytest.approx(change) and test.n == 1
    assert (test.low, test.high, test.p_value, test.p_equivalence, test.sd) == (None,) * 5
    assert test.seeds_needed is None and test.verdict == Verdict.no_detectable_difference


def test_a_zero_baseline_mean_has_no_size() -> None:
    test = paired_test([-1.0, 1.0], [0.5, 0.7], "min")
    assert test.method == Method.scaled_t and test.change is None and test.p_value is None
    assert "baseline mean is 0" in test.reason


def test_values_that_overflow_have_no_size() -> None:
    test = paired_test([1e308, -0.5e308, 1.0], [-1e308, 1e308, 2.0], "min")
    assert test.change is None and test.p_value is None and "overflow" in test.reason
    assert test.verdict == Verdict.no_detectable_difference


def test_mode_decides_the_direction() -> None:
    baseline = [1.0, 1.1, 1.2, 1.3, 1.0]
    treatment = [b * 0.9 for b in baseline[:-1]] + [0.91]
    assert paired_test(baseline, treatment, "min").verdict == Verdict.better
    assert paired_test(baseline, treatment, "max").verdict == Verdict.worse


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="mode"):
        paired_test([1, 2], [1, 2], "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="baseline values"):
        paired_test([1, 2], [1], "min")
    for margin in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="margin"):
            paired_test([1, 2], [1, 2], "min", margin=margin)
    with pytest.raises(ValueError, match="effect"):
        paired_test([1, 2], [1, 2], "min", effect=0)
    with pytest.raises(ValueError, match="alpha"):
        paired_test([1, 2], [1, 2], "min", alpha=1)


def test_verdict_of() -> None:
    assert verdict_of(0.01, None, -0.02, "min") == Verdict.better
    assert verdict_of(0.01, None, -0.02, "max") == Verdict.worse
    assert verdict_of(0.01, 0.01, 0.02, "min") == Verdict.worse  # a difference first
    assert verdict_of(0.5, 0.01, 0.001, "min") == Verdict.equivalent
    assert verdict_of(0.5, 0.2, 0.001, "min") == Verdict.no_detectable_difference
    assert verdict_of(None, None, None, "min") == Verdict.no_detectable_difference
    assert verdict_of(0.04, None, -0.02, "min", alpha=0.01) == Verdict.no_detectable_difference


def test_results_are_frozen_dataclasses() -> None:
    test = paired_test([1.0, 2.0, 3.0], [1.1, 2.1, 3.2], "min")
    assert isinstance(test, PairedTest)
    with pytest.raises(AttributeError):
        test.verdict = Verdict.better  # type: ignore[misc]


# --- speed ----------------------------------------------------------------------------------


def test_5000_comparisons_of_10_seeds_take_under_5_seconds() -> None:
    rng = np.random.default_rng(61)
    baseline = rng.lognormal(1.0, 0.1, (5000, 10))
    treatment = baseline * np.exp(rng.normal(0, 0.02, baseline.shape))
    treatment[rng.random(treatment.shape) < 0.02] = np.inf
    pairs = [(list(b), list(t)) for b, t in zip(baseline, treatment, strict=True)]
    start = time.perf_counter()
    tests = holm(paired_tests(pairs, "min", margin=0.02))
    elapsed = time.perf_counter() - start
    print(f"\n5,000 comparisons x 10 seeds, with margin and Holm: {elapsed:.2f} s")
    assert len(tests) == 5000
    assert elapsed < 5
