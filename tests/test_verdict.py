"""Tested differences (``studies.analysis.verdict``: each stage's paired test, the stage
that decides, and what limits it) against answers computed by hand or by scipy, and the
same numbers through every surface: ``GET /verdict``, ``magma-bench status``, the
comparison table page and the ``/best`` export, on a real server on each backend."""

from __future__ import annotations

import html
import math
from dataclasses import replace

import httpx
import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from studies.analysis.inference import ALPHA, POWER, Method, Verdict
from studies.analysis.intervals import range_interval
from studies.analysis.verdict import (
    MIN_DECIDING_PAIRS,
    Stage,
    WarningCode,
    compare_configurations,
    verdicts,
)
from studies.best import CONFIRM_STAGE, STAGE_KEY
from studies.records import Arm, ArmSearch, BracketSearch, TrialRecord, bracket_from_event
from studies.spec import StudySpec
from studies.storage.repository import event_log, lease, trial_lifecycle
from tests.dashboards_fixtures import Rows
from tests.db_fixtures import Database, quadratic_spec
from tests.service_fixtures import Server, cli

DENSE, MAGMA, SKIP = Arm("adamw", "dense"), Arm("adamw", "magma"), Arm("adamw", "skipupdate")
LRS = (1e-3, 1e-2, 1e-1)
#: the dense arm's best seeds, and the masked arm's log ratios to them: mean -0.05, SD K.
#: K = 2 ln(1.01) makes a 1% change half an SD (dz = 0.5): 34 pairs for 80% power at
#: alpha 0.05, two-sided (Cohen 1988; G*Power's paired t-test gives 34 too)
DENSE_SEEDS = (2.0, 4.0, 5.0)
K = 2 * math.log(1.01)
LOGS = (-0.05 - K, -0.05, -0.05 + K)
#: t_{0.975, 2} in closed form (Student t with 2 degrees of freedom)
T975_2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
HALF = T975_2 * K / math.sqrt(3)
CHANGE, LOW, HIGH = math.expm1(-0.05), math.expm1(-0.05 - HALF), math.expm1(-0.05 + HALF)
# CHANGE = -0.04877, LOW = -0.09466, HIGH = -0.00056: the interval excludes 0


def p_two_df(t: float) -> float:
    """The two-sided p of Student's t with 2 degrees of freedom, in closed form: its CDF
    is 1/2 + t / (2 sqrt(2 + t^2))."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


P = p_two_df(-0.05 / (K / math.sqrt(3)))  # 0.04896: below alpha, so better
#: the upper end of seeds needed: the SD's 95% upper bound, K sqrt(2 / chi2_{0.05, 2}),
#: chi2_{0.05, 2} = -2 ln 0.95 in closed form (2 degrees of freedom are an exponential)
UPPER_SD = K / math.sqrt(-math.log(0.95))
UPPER = math.ceil(
    TTestPower().solve_power(effect_size=math.log1p(0.01) / UPPER_SD, alpha=ALPHA, power=POWER)
)  # 615
SELECTION = f"-4.9% [-9.5%, -0.1%] better (3 seeds; 1% needs 34 to {UPPER} seeds)"
SUMMARY = f"adamw+magma vs adamw: better; selection (decides): {SELECTION}"


def masked_seeds(logs: tuple[float, ...] = LOGS) -> list[float]:
    return [d * math.exp(log) for d, log in zip(DENSE_SEEDS[: len(logs)], logs, strict=True)]


def noisy(
    n: int, seed: int, change: float, *, noise: float = 0.02, spread: float = 0.3
) -> tuple[list[float], list[float]]:
    """``n`` seeds of a dense arm whose objective varies from seed to seed (lognormal, SD
    ``spread`` in log), and a masked arm ``change`` (a fraction) from it on each seed with
    noise of its own (SD ``noise`` in log): seeded, so every run draws the same."""
    rng = np.random.default_rng(seed)
    dense = 2.0 * np.exp(rng.normal(0.0, spread, n))
    masked = dense * np.exp(math.log1p(change) + rng.normal(0.0, noise, n))
    return [float(v) for v in dense], [float(v) for v in masked]


def add_arm(
    rows: Rows,
    variant: str,
    seeds: list[float] | tuple[float, ...],
    best_lr: float = 1e-2,
    lrs: tuple[float, ...] = LRS,
    **params: object,
) -> None:
    """One configuration per LR; the best LR gets ``seeds``, the others 1.0 more each."""
    for lr in lrs:
        for seed, value in enumerate(seeds):
            objective = value if lr == best_lr else value + 1.0
            rows.add(objective, seed=seed, variant=variant, lr=lr, **params)


def one(rows: Rows, mode: str = "min", **kwargs: object):
    [comparison] = verdicts(rows.trials(), mode, **kwargs)  # type: ignore[arg-type]
    return comparison


def codes(comparison) -> list[str]:
    return [w.code.value for w in comparison.warnings]


def scipy_log_t(dense: list[float], masked: list[float]) -> tuple[float, float, float, float]:
    """The paired t test on the logs, by scipy's paired test and its t interval: change,
    low, high (back-transformed) and p."""
    d = np.log(masked) - np.log(dense)
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
    p = stats.ttest_rel(np.log(masked), np.log(dense)).pvalue
    return math.expm1(mean), math.expm1(mean - half), math.expm1(mean + half), float(p)


# --- the paired test of a stage ---------------------------------------------------------


def test_paired_log_t_percent_change_p_and_seeds_needed_by_hand() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds())
    comparison = one(rows)
    assert (comparison.baseline, comparison.arm) == (DENSE, MAGMA)
    assert comparison.baseline_best.value("lr") == comparison.best.value("lr") == 1e-2
    assert comparison.confirmation is None  # the study runs no confirmation stage
    assert comparison.deciding is comparison.selection
    stage = comparison.selection
    assert stage.stage == Stage.selection and stage.seeds == (0, 1, 2)
    assert stage.baseline_values == DENSE_SEEDS
    test = stage.test
    assert test.method == Method.log_t and test.n == stage.n == 3
    assert test.change == pytest.approx(CHANGE, rel=1e-12)
    assert test.low == pytest.approx(LOW, rel=1e-9)
    assert test.high == pytest.approx(HIGH, rel=1e-6)
    assert test.p_value == pytest.approx(P, rel=1e-9)
    assert test.sd == pytest.approx(K, rel=1e-9)
    assert (test.diverged, test.margin, test.p_equivalence) == (0, None, None)
    assert test.seeds_needed.effect == 0.01
    assert (test.seeds_needed.estimate, test.seeds_needed.upper) == (34, UPPER)
    assert test.verdict == Verdict.better
    # 3 pairs, an interval, no unbracketed arm: the verdict stands
    assert comparison.limits == () and comparison.decision == Verdict.better
    assert comparison.decision_text == "better"
    assert stage.describe() == SELECTION
    assert comparison.summary == SUMMARY
    assert comparison.warnings == ()


def test_seed_noise_gives_scipys_paired_t_test_and_interval() -> None:
    dense, masked = noisy(6, seed=7, change=-0.03)
    rows = Rows()
    add_arm(rows, "dense", dense)
    add_arm(rows, "magma", masked)
    test = one(rows).selection.test
    change, low, high, p = scipy_log_t(dense, masked)
    assert p < ALPHA  # the fixture: a 3% gain under 2% noise on 6 seeds is found
    assert test.change == pytest.approx(change, rel=1e-9)
    assert (test.low, test.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert test.p_value == pytest.approx(p, rel=1e-9)
    assert test.verdict == Verdict.better and one(rows).decision == Verdict.better


def test_the_same_numbers_are_worse_when_maximising() -> None:
    # maximising, the highest configuration is the best: give each arm one LR only
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS, best_lr=1e-2, lrs=(1e-2,))
    add_arm(rows, "magma", masked_seeds(), best_lr=1e-2, lrs=(1e-2,))
    comparison = one(rows, "max")
    assert comparison.selection.test.change == pytest.approx(CHANGE, rel=1e-12)
    assert comparison.selection.test.verdict == Verdict.worse
    # one LR each is a grid-edge warning, not a limit
    assert comparison.decision == Verdict.worse


def test_an_interval_across_zero_is_no_detectable_difference() -> None:
    # log ratios -0.01, -0.02, -0.03: mean -0.02, SD 0.01, half-width 4.3027 * 0.01 / sqrt 3
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds((-0.01, -0.02, -0.03)))
    comparison = one(rows)
    test = comparison.selection.test
    half = T975_2 * 0.01 / math.sqrt(3)
    assert test.low == pytest.approx(math.expm1(-0.02 - half), rel=1e-9)
    assert test.high == pytest.approx(math.expm1(-0.02 + half), rel=1e-9)
    assert test.low < 0 < test.high
    assert test.p_value == pytest.approx(p_two_df(-0.02 / (0.01 / math.sqrt(3))), rel=1e-9)
    assert test.verdict == Verdict.no_detectable_difference
    # a decision: the test ran on enough pairs and found nothing
    assert comparison.limits == ()
    assert comparison.decision == Verdict.no_detectable_difference
    assert comparison.summary.startswith(
        "adamw+magma vs adamw: no detectable difference; selection (decides): "
        "-2.0% [-4.4%, +0.5%] no detectable difference (3 seeds; "
    )


def test_noise_larger_than_the_change_is_no_detectable_difference() -> None:
    dense, masked = noisy(5, seed=11, change=-0.01, noise=0.1)
    rows = Rows()
    add_arm(rows, "dense", dense)
    add_arm(rows, "magma", masked)
    comparison = one(rows)
    *_, p = scipy_log_t(dense, masked)
    assert p > ALPHA
    assert comparison.selection.test.p_value == pytest.approx(p, rel=1e-9)
    assert comparison.decision == Verdict.no_detectable_difference
    # the seeds a 1% change needs: noise 0.1 against ln 1.01 is far more than 5
    needed = comparison.selection.test.seeds_needed
    assert 5 < needed.estimate <= needed.upper


def test_one_pair_has_a_change_and_no_interval_and_is_inconclusive() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS[:1])
    add_arm(rows, "magma", masked_seeds()[:1])
    comparison = one(rows)
    test = comparison.selection.test
    assert test.n == 1 and test.change == pytest.approx(math.expm1(LOGS[0]))
    assert (test.low, test.high, test.p_value, test.sd, test.seeds_needed) == (None,) * 5
    assert test.verdict == Verdict.no_detectable_difference
    assert comparison.decision is None and comparison.decision_text == "inconclusive"
    assert comparison.limits == (
        "the selection stage has no interval (1 seed)",
        "1 seed paired in the selection stage, fewer than 3",
    )
    assert comparison.summary == (
        "adamw+magma vs adamw: inconclusive (the selection stage has no interval (1 seed); "
        "1 seed paired in the selection stage, fewer than 3); selection (decides): "
        "-6.8% [no interval] no detectable difference (1 seed; no variance estimate)"
    )
    [warning] = comparison.warnings
    assert (warning.code, warning.message) == (
        WarningCode.few_seeds,
        "only 1 seed paired in the deciding (selection) stage, fewer than 3: inconclusive",
    )


def test_fewer_than_three_deciding_pairs_are_inconclusive_whatever_the_test_says() -> None:
    # two pairs whose log ratios nearly agree (-0.100, -0.101): t = -201, p = 0.003
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS[:2])
    add_arm(rows, "magma", masked_seeds((-0.100, -0.101)))
    comparison = one(rows)
    test = comparison.selection.test
    assert test.n == 2 < MIN_DECIDING_PAIRS
    # two pairs: a t interval with 1 degree of freedom, a p and seeds needed
    assert test.low is not None and test.seeds_needed is not None
    assert test.p_value < ALPHA and test.verdict == Verdict.better
    assert comparison.decision is None
    assert comparison.limits == ("2 seeds paired in the selection stage, fewer than 3",)
    assert comparison.summary.startswith(
        "adamw+magma vs adamw: inconclusive (2 seeds paired in the selection stage, fewer "
        "than 3); selection (decides): -9.6% ["
    )
    [warning] = comparison.warnings
    assert (warning.code, warning.message) == (
        WarningCode.few_seeds,
        "only 2 seeds paired in the deciding (selection) stage, fewer than 3: inconclusive",
    )


# --- the scaled path (a value <= 0) -----------------------------------------------------------


def test_a_value_at_or_below_zero_takes_the_scaled_t_path() -> None:
    # dense -1, 1, 3 (mean 1): differences -0.2, -0.1, -0.3 of the dense mean: mean -0.2,
    # SD 0.1. Three pairs this consistent are not a detectable difference by the t test
    # (t = -3.46, p = 0.074); the percentile bootstrap this replaced called them better.
    rows = Rows()
    add_arm(rows, "dense", (-1.0, 1.0, 3.0))
    add_arm(rows, "magma", (-1.2, 0.9, 2.7))
    first, second = one(rows), one(rows)
    test = first.selection.test
    assert test.method == Method.scaled_t and test.n == 3
    assert test.change == pytest.approx(-0.2)
    half = T975_2 * 0.1 / math.sqrt(3)
    assert test.low == pytest.approx(-0.2 - half) and test.high == pytest.approx(-0.2 + half)
    assert test.sd == pytest.approx(0.1)
    assert test.p_value == pytest.approx(p_two_df(-0.2 / (0.1 / math.sqrt(3))), rel=1e-9)
    assert test.verdict == Verdict.no_detectable_difference
    assert first.decision == Verdict.no_detectable_difference
    # sd 0.1 against a 0.01 change: dz 0.1, 787 pairs (G*Power: 787)
    assert test.seeds_needed.estimate == 787
    assert second.selection == first.selection  # the same trials, the same test


def test_positive_values_take_the_log_path_and_a_zero_switches_to_the_scaled_path() -> None:
    positive, with_zero = Rows(), Rows()
    add_arm(positive, "dense", (1.0, 2.0, 3.0, 4.0))
    add_arm(positive, "magma", (0.9, 2.1, 2.7, 3.9))
    add_arm(with_zero, "dense", (0.0, 2.0, 3.0, 4.0))
    add_arm(with_zero, "magma", (0.9, 2.1, 2.7, 3.9))
    assert one(positive).selection.test.method == Method.log_t
    scaled = one(with_zero).selection.test
    assert scaled.method == Method.scaled_t
    # differences 0.9, 0.1, -0.3, -0.1 over the dense mean 2.25
    assert scaled.change == pytest.approx(0.6 / 4 / 2.25)
    d = np.array([0.9, 0.1, -0.3, -0.1]) / 2.25
    assert scaled.p_value == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)


def test_a_zero_dense_mean_gives_no_size_and_is_inconclusive() -> None:
    rows = Rows()
    add_arm(rows, "dense", (-1.0, 1.0, 0.0))
    add_arm(rows, "magma", (-1.2, 0.9, 0.5))
    comparison = one(rows)
    test = comparison.selection.test
    assert test.method == Method.scaled_t and test.change is None and test.p_value is None
    assert comparison.selection.reason == (
        "the baseline mean is 0, so a change has no size in percent"
    )
    assert comparison.decision is None
    assert comparison.limits[0] == "the selection stage has no interval (3 seeds)"
    assert comparison.summary == (
        "adamw+magma vs adamw: inconclusive (the selection stage has no interval (3 seeds)); "
        "selection (decides): no size: the baseline mean is 0, so a change has no size in "
        "percent"
    )


# --- which comparisons, and which runs --------------------------------------------------------


def test_every_masked_arm_against_its_own_dense_base_only() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds())
    add_arm(rows, "skipupdate", DENSE_SEEDS)
    add_arm(rows, "magma", DENSE_SEEDS, base="rmsprop")  # no dense rmsprop: no comparison
    comparisons = verdicts(rows.trials(), "min")
    assert [(c.baseline, c.arm) for c in comparisons] == [(DENSE, SKIP), (DENSE, MAGMA)]
    same = comparisons[0].selection.test
    assert same.change == 0.0 and same.p_value == 1.0
    assert comparisons[0].decision == Verdict.no_detectable_difference


def test_an_arm_without_a_best_that_did_not_diverge_throughout_is_not_tested() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    for seed in range(3):
        status = "diverged" if seed == 1 else "complete"
        rows.add(
            1.0 if status == "complete" else None,
            seed=seed,
            variant="magma",
            lr=1e-2,
            status=status,
        )
    comparison = one(rows)
    reason = "adamw+magma has no configuration that completed on every seed"
    assert comparison.best is None and comparison.selection.test is None
    assert comparison.selection.reason == reason
    assert comparison.decision is None
    assert comparison.limits == (f"the selection stage has nothing to test: {reason}",)
    assert comparison.summary == (
        f"adamw+magma vs adamw: inconclusive (the selection stage has nothing to test: "
        f"{reason}); selection (decides): no test: {reason}"
    )


@pytest.mark.parametrize("mode", ["min", "max"])
def test_an_arm_that_diverged_wherever_dense_trained_is_compared_and_worse(mode: str) -> None:
    """Masked diverged on every seed at every LR: it has no best, but it diverged at the
    dense best's LR, which is evidence against it. Each pair scores the diverged run as
    the worst finite value of the comparison (the worst dense seed), so every pair but
    that seed's counts against it: worse, given 8 seeds of noisy dense values."""
    dense, _ = noisy(8, seed=5, change=0.0, spread=0.1)
    rows = Rows()
    add_arm(rows, "dense", dense, best_lr=1e-2)
    for lr in LRS:
        for seed in range(8):
            rows.add(None, seed=seed, variant="magma", lr=lr, status="diverged")
    if mode == "max":  # maximising, the best LR must be the highest: one LR only
        rows = Rows()
        add_arm(rows, "dense", dense, lrs=(1e-2,))
        for seed in range(8):
            rows.add(None, seed=seed, variant="magma", lr=1e-2, status="diverged")
    comparison = one(rows, mode)
    assert comparison.best is None and comparison.baseline_best.value("lr") == 1e-2
    stage = comparison.selection
    assert stage.seeds == tuple(range(8)) and stage.values == (math.inf,) * 8
    test = stage.test
    assert test.n == 8 and test.diverged == 8
    worst = max(dense) if mode == "min" else min(dense)
    d = np.log(worst) - np.log(dense)
    assert test.change == pytest.approx(math.expm1(d.mean()), rel=1e-9)
    assert test.p_value == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    assert test.verdict == Verdict.worse and comparison.decision == Verdict.worse
    assert "8 with a diverged run" in comparison.summary


def test_dense_diverging_wherever_the_masked_arm_trained_counts_against_dense() -> None:
    _, masked = noisy(8, seed=6, change=0.0, spread=0.1)
    rows = Rows()
    for lr in LRS:
        for seed in range(8):
            rows.add(None, seed=seed, variant="dense", lr=lr, status="diverged")
    add_arm(rows, "magma", masked)
    comparison = one(rows)
    assert comparison.baseline_best is None
    assert comparison.selection.baseline_values == (math.inf,) * 8
    assert comparison.decision == Verdict.better


def test_bests_that_share_no_seed_are_not_tested() -> None:
    rows = Rows()
    rows.add(2.0, seed=0, variant="dense", lr=1e-2)
    rows.add(1.0, seed=1, variant="magma", lr=1e-2)
    comparison = one(rows)
    assert comparison.selection.test is None
    assert comparison.selection.reason == "the two arms share no finished seed"
    assert comparison.decision is None


def test_any_two_configurations_by_the_same_rule() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds())
    comparison = one(rows)
    same = compare_configurations(comparison.baseline_best.trials, comparison.best.trials, "min")
    assert same == comparison.selection
    confirming = compare_configurations(
        comparison.baseline_best.trials, comparison.best.trials, "min", stage=Stage.confirmation
    )
    assert confirming.stage == Stage.confirmation and confirming.test == same.test
    # a stated margin adds the equivalence test; the seeds needed are sized for the effect
    margin = compare_configurations(
        comparison.baseline_best.trials, comparison.best.trials, "min", margin=0.2, effect=0.05
    ).test
    assert margin.margin == 0.2 and margin.p_equivalence is not None
    assert margin.seeds_needed.effect == 0.05
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        compare_configurations([], [], "lowest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        verdicts(selection_rows().trials(), "lowest")  # type: ignore[arg-type]


# --- warnings ---------------------------------------------------------------------------


def test_best_at_the_edge_of_the_grid() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS, best_lr=1e-3)  # the smallest LR
    add_arm(rows, "magma", masked_seeds(), best_lr=1e-1)  # the largest
    comparison = one(rows)
    assert [(w.code, w.message) for w in comparison.warnings] == [
        (
            WarningCode.best_at_grid_edge,
            "adamw: its best lr 0.001 is the smallest tested (0.001 to 0.1); "
            "its optimum may lie beyond the grid",
        ),
        (
            WarningCode.best_at_grid_edge,
            "adamw+magma: its best lr 0.1 is the largest tested (0.001 to 0.1); "
            "its optimum may lie beyond the grid",
        ),
    ]
    # a grid study's edge is a warning, not a limit: the decision stands
    assert comparison.decision == Verdict.better and comparison.summary == SUMMARY


def test_a_single_lr_is_never_bracketed() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS, lrs=(1e-2,))
    add_arm(rows, "magma", masked_seeds())
    [warning] = one(rows).warnings
    assert warning.code == WarningCode.best_at_grid_edge
    assert warning.message == "adamw: only lr 0.01 was tested, so its best lr is not bracketed"


def test_a_diverged_lr_above_brackets_the_best_and_a_failed_one_does_not() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS, best_lr=1e-1, lrs=(1e-2, 1e-1))
    rows.add(None, seed=0, variant="dense", lr=1.0, status="diverged")
    add_arm(rows, "magma", masked_seeds(), best_lr=1e-1, lrs=(1e-2, 1e-1))
    rows.add(None, seed=0, variant="magma", lr=1.0, status="failed")
    [warning] = one(rows).warnings
    assert warning.code == WarningCode.best_at_grid_edge
    assert warning.message.startswith("adamw+magma: its best lr 0.1 is the largest tested")


def test_a_diverged_seed_at_the_chosen_lr_in_another_configuration() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds(), p=0.5)
    # p=0.25 at the chosen LR: one seed diverged (the configuration is not eligible)
    rows.add(3.0, seed=0, variant="magma", lr=1e-2, p=0.25)
    rows.add(None, seed=1, variant="magma", lr=1e-2, p=0.25, status="diverged")
    # a diverged seed at another LR is no warning
    rows.add(None, seed=0, variant="dense", lr=1.0, status="diverged")
    rows.add(9.0, seed=0, variant="dense", lr=10.0)
    comparison = one(rows)
    assert comparison.best.params["p"] == 0.5
    [warning] = comparison.warnings
    assert (warning.code, warning.message) == (
        WarningCode.diverged_at_chosen_lr,
        "adamw+magma: 1 of 5 trials at its chosen lr 0.01 diverged",
    )
    # the chosen configuration's own seeds are all complete: the test is unaffected
    assert comparison.selection.test.diverged == 0 and comparison.decision == Verdict.better


# --- the confirmation stage decides -----------------------------------------------------------


def confirmation_rows(
    dense: list[float] | tuple[float, ...],
    masked: list[float | None] | tuple[float | None, ...],
    first_seed: int = 3,
) -> dict[Arm, list[TrialRecord]]:
    """Each arm's chosen configuration (lr 0.01) rerun on fresh seeds from ``first_seed``;
    a masked value None is a diverged run."""
    rows = Rows()
    for seed, (d, m) in enumerate(zip(dense, masked, strict=True), start=first_seed):
        rows.add(d, seed=seed, variant="dense", lr=1e-2)
        rows.add(m, seed=seed, variant="magma", lr=1e-2, status="complete" if m else "diverged")
    trials = rows.trials()
    return {arm: [t for t in trials if t.arm == arm] for arm in (DENSE, MAGMA)}


def selection_rows() -> Rows:
    """The by-hand fixture: the selection stage says better on 3 pairs."""
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds())
    return rows


def test_the_confirmation_stage_decides_when_it_ran_and_agrees() -> None:
    dense, masked = noisy(5, seed=7, change=-0.05)
    comparison = one(selection_rows(), confirmation=confirmation_rows(dense, masked))
    assert comparison.deciding is comparison.confirmation
    stage = comparison.confirmation
    assert stage.stage == Stage.confirmation and stage.seeds == (3, 4, 5, 6, 7)
    change, low, high, p = scipy_log_t(dense, masked)
    assert stage.test.change == pytest.approx(change, rel=1e-9)
    assert stage.test.p_value == pytest.approx(p, rel=1e-9) and p < ALPHA
    assert comparison.decision == Verdict.better and comparison.warnings == ()
    assert comparison.summary == (
        f"adamw+magma vs adamw: better; selection: {SELECTION}; "
        f"confirmation (decides): {stage.describe()}"
    )
    assert stage.describe().startswith(f"{change:+.1%} [{low:+.1%}, {high:+.1%}] better (5 seeds; ")


def test_a_confirmation_stage_that_disagrees_decides_over_the_selection_stage() -> None:
    # fresh seeds with log ratios -K, 0, K: no change at all
    dense = DENSE_SEEDS
    masked = [d * math.exp(log) for d, log in zip(dense, (-K, 0.0, K), strict=True)]
    comparison = one(selection_rows(), confirmation=confirmation_rows(dense, masked))
    assert comparison.selection.test.verdict == Verdict.better  # unchanged
    confirmed = comparison.confirmation.test
    assert confirmed.change == pytest.approx(0.0, abs=1e-15) and confirmed.p_value == 1.0
    assert comparison.decision == Verdict.no_detectable_difference
    [warning] = comparison.warnings
    assert (warning.code, warning.message) == (
        WarningCode.confirmation_disagrees,
        "the confirmation stage says no detectable difference; the selection stage says better",
    )
    assert comparison.summary == (
        f"adamw+magma vs adamw: no detectable difference; selection: {SELECTION}; "
        f"confirmation (decides): +0.0% [-4.8%, +5.1%] no detectable difference (3 seeds; "
        f"1% needs 34 to {UPPER} seeds)"
    )


def test_a_confirmation_with_nothing_to_test_is_inconclusive_with_no_fallback() -> None:
    """A study that runs a confirmation stage is decided on it: before it has run (or when
    one arm's reruns all failed), the selection stage's better does not stand in."""
    reason = "the two arms share no finished seed"
    failed = f"the confirmation stage has nothing to test: {reason}"
    not_yet = one(selection_rows(), confirming=True)
    rows = confirmation_rows(DENSE_SEEDS, masked_seeds())
    rows[DENSE] = [replace(t, status="failed", objective=None) for t in rows[DENSE]]
    one_arm = one(selection_rows(), confirmation=rows)
    for comparison in (not_yet, one_arm):
        assert comparison.selection.test.verdict == Verdict.better
        assert comparison.deciding is comparison.confirmation
        assert comparison.confirmation.test is None
        assert comparison.confirmation.reason == reason
        assert comparison.decision is None and comparison.decision_text == "inconclusive"
        assert comparison.limits == (failed,)
        assert [(w.code, w.message) for w in comparison.warnings] == [
            (WarningCode.confirmation_failed, failed)
        ]
        assert comparison.summary == (
            f"adamw+magma vs adamw: inconclusive ({failed}); selection: {SELECTION}; "
            f"confirmation (decides): no test: {reason}"
        )
    # a study that runs none is decided on its selection stage
    assert one(selection_rows(), confirming=False).decision == Verdict.better


def test_confirmation_trials_among_the_trials_are_found_by_their_stage_marker() -> None:
    dense, masked = noisy(4, seed=8, change=-0.05)
    marked = [
        replace(t, params={**t.params, STAGE_KEY: CONFIRM_STAGE})
        for arm_trials in confirmation_rows(dense, masked).values()
        for t in arm_trials
    ]
    rows = selection_rows()
    # renumber: the two Rows number their configurations from 0 each
    offset = 1 + max(t.configuration for t in rows.trials())
    marked = [replace(t, configuration=t.configuration + offset) for t in marked]
    comparison = verdicts([*rows.trials(), *marked], "min")[0]
    assert comparison.confirmation is not None and comparison.deciding is comparison.confirmation
    assert comparison.confirmation.seeds == (3, 4, 5, 6)
    # the reruns never compete for best
    assert comparison.best.value("lr") == 1e-2 and STAGE_KEY not in comparison.best.params
    assert comparison.decision == comparison.confirmation.test.verdict


def test_a_diverged_confirmation_run_counts_against_its_arm() -> None:
    """A magma rerun that diverged is in the pairs (scored as the comparison's worst
    finite value), not dropped: the change with it is worse than the change without it."""
    dense, masked = noisy(5, seed=9, change=-0.05)
    diverged = [*masked[:2], None, *masked[3:]]  # seed 5 diverged
    comparison = one(selection_rows(), confirmation=confirmation_rows(dense, diverged))
    stage = comparison.confirmation
    assert stage.seeds == (3, 4, 5, 6, 7) and stage.values[2] == math.inf
    assert stage.test.n == 5 and stage.test.diverged == 1
    worst = max([*dense, *masked[:2], *masked[3:]])
    d = np.log([*masked[:2], worst, *masked[3:]]) - np.log(dense)
    assert stage.test.change == pytest.approx(math.expm1(d.mean()), rel=1e-9)
    kept = [i for i in range(5) if i != 2]
    dropped = np.log([masked[i] for i in kept]) - np.log([dense[i] for i in kept])
    assert stage.test.change > math.expm1(dropped.mean())
    assert "1 with a diverged run" in stage.describe()
    assert [(w.code, w.message) for w in comparison.warnings][0] == (
        WarningCode.diverged_at_chosen_lr,
        "adamw+magma: 1 of 8 trials at its chosen lr 0.01 diverged",
    )


def test_fewer_than_three_confirmation_pairs_are_inconclusive() -> None:
    dense, masked = noisy(2, seed=10, change=-0.05)
    comparison = one(selection_rows(), confirmation=confirmation_rows(dense, masked))
    assert comparison.deciding is comparison.confirmation and comparison.confirmation.n == 2
    assert comparison.decision is None
    assert comparison.limits == ("2 seeds paired in the confirmation stage, fewer than 3",)
    assert WarningCode.few_seeds.value in codes(comparison)


# --- the bracket protocol's stops ---------------------------------------------------------


def search(status: str, best_lr: float | None, lrs=LRS, **params: object) -> ArmSearch:
    return ArmSearch(dict(params), status, tuple(lrs), best_lr, None)  # type: ignore[arg-type]


def stopped(*arms: ArmSearch, max_extensions: int = 4) -> BracketSearch:
    return BracketSearch(
        done=True, rounds=1 + max_extensions, max_extensions=max_extensions, arms=arms
    )


def edge_rows() -> Rows:
    """Dense best at 0.01, inside its LRs; magma best at 0.1, the largest."""
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds(), best_lr=1e-1)
    return rows


def test_an_arm_stopped_unbracketed_is_a_limit_naming_what_stopped_it() -> None:
    bracket = stopped(
        search("bracketed", 1e-2, variant="dense"), search("max_extensions", 1e-1, variant="magma")
    )
    comparison = one(edge_rows(), bracket=bracket)
    message = (
        "adamw+magma: best LR 0.1 is the largest tested; "
        "the search stopped at max_extensions=4 before bracketing it"
    )
    # the stop replaces the grid-edge warning (the same fact, with its cause)
    assert [(w.code, w.message) for w in comparison.warnings] == [
        (WarningCode.unbracketed, message)
    ]
    # the numbers are the same; the decision cannot stand
    assert comparison.selection.describe() == SELECTION
    assert comparison.decision is None and comparison.limits == (message,)
    assert comparison.summary == (
        f"adamw+magma vs adamw: inconclusive ({message}); selection (decides): {SELECTION}"
    )
    # without the search, the same trials are a plain grid study's: the grid-edge warning
    grid = one(edge_rows())
    assert codes(grid) == [WarningCode.best_at_grid_edge.value]
    assert grid.decision == Verdict.better


@pytest.mark.parametrize(
    ("status", "best_lr", "lrs", "text"),
    [
        (
            "caps",
            1e-3,
            LRS,
            "best LR 0.001 is the smallest tested; the search stopped at the run cap (the "
            "study's runs or the server's max_trials, whichever is lower) before bracketing it",
        ),
        (
            "running",
            1e-2,
            (1e-2,),
            "best LR 0.01 is the only one tested; "
            "the search has not bracketed it yet: another round was planned",
        ),
        (
            "max_extensions",
            None,
            LRS,
            "no LR completed; the search stopped at max_extensions=4 before bracketing it",
        ),
    ],
)
def test_each_stop_says_why(status: str, best_lr: float | None, lrs, text: str) -> None:
    bracket = stopped(
        search(status, best_lr, lrs, variant="dense"), search("bracketed", 1e-2, variant="magma")
    )
    rows = Rows()  # the dense trials as the search says: its LRs, its best (or none)
    if best_lr is None:
        for lr in lrs:
            rows.add(None, seed=0, variant="dense", lr=lr, status="diverged")
    else:
        add_arm(rows, "dense", DENSE_SEEDS, best_lr=best_lr, lrs=lrs)
    add_arm(rows, "magma", masked_seeds())
    comparison = one(rows, bracket=bracket)
    [warning] = [w for w in comparison.warnings if w.code == WarningCode.unbracketed]
    assert warning.message == f"adamw: {text}"
    assert f"adamw: {text}" in comparison.limits and comparison.decision is None


def test_every_comparison_with_an_unbracketed_dense_arm_carries_it() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS, best_lr=1e-1)
    add_arm(rows, "magma", masked_seeds())
    add_arm(rows, "skipupdate", DENSE_SEEDS)
    bracket = stopped(
        search("caps", 1e-1, variant="dense"),
        search("bracketed", 1e-2, variant="magma"),
        search("bracketed", 1e-2, variant="skipupdate"),
    )
    comparisons = verdicts(rows.trials(), "min", bracket=bracket)
    assert [c.arm for c in comparisons] == [SKIP, MAGMA]
    for comparison in comparisons:
        [warning] = comparison.warnings
        assert warning.code == WarningCode.unbracketed
        assert warning.message.startswith("adamw: best LR 0.1 is the largest tested; ")
        assert comparison.decision is None


def test_an_arm_searched_over_another_list_names_the_unbracketed_search() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS, components="attention")
    add_arm(rows, "magma", masked_seeds(), components="attention")
    add_arm(rows, "magma", [v + 1.0 for v in DENSE_SEEDS], best_lr=1e-1, components="all")
    bracket = stopped(
        search("bracketed", 1e-2, variant="dense", components="attention"),
        search("bracketed", 1e-2, variant="magma", components="attention"),
        search("max_extensions", 1e-1, variant="magma", components="all"),
        max_extensions=2,
    )
    comparison = one(rows, bracket=bracket)
    assert comparison.best.params["components"] == "attention"  # still the best
    # the unbracketed search might have beaten it: warned about all the same
    [warning] = comparison.warnings
    assert warning.message == (
        "adamw+magma (components=all): best LR 0.1 is the largest tested; "
        "the search stopped at max_extensions=2 before bracketing it"
    )
    assert comparison.limits == (warning.message,)


def test_a_bracket_event_reads_as_a_bracket_search() -> None:
    payload = {
        "done": True,
        "rounds": 3,
        "arms": [
            {
                "arm": {"variant": "dense"},
                "status": "bracketed",
                "lrs": [0.01, 0.1, 1],
                "best_lr": 0.1,
                "best_value": 2.5,
            },
            {
                "arm": {"variant": "magma"},
                "status": "caps",
                "lrs": [0.01, 0.1],
                "best_lr": 0.1,
                "best_value": 2.0,
            },
        ],
    }
    read = bracket_from_event(payload, max_extensions=4)
    assert read == BracketSearch(
        True,
        3,
        4,
        (
            ArmSearch({"variant": "dense"}, "bracketed", (0.01, 0.1, 1.0), 0.1, 2.5),
            ArmSearch({"variant": "magma"}, "caps", (0.01, 0.1), 0.1, 2.0),
        ),
    )
    assert [arm.bracketed for arm in read.arms] == [True, False]
    payload["arms"][1]["status"] = "stuck"
    with pytest.raises(ValueError, match=r"status must be one of \['bracketed', 'max_extensions'"):
        bracket_from_event(payload, max_extensions=4)


# --- every surface shows the same numbers ------------------------------------------------

#: per (variant, lr): each seed's objective. Magma's best is at the largest LR.
HTTP_SEEDS = {
    ("dense", 0.01): [v + 1.0 for v in DENSE_SEEDS],
    ("dense", 0.1): list(DENSE_SEEDS),
    ("dense", 1.0): [v + 2.0 for v in DENSE_SEEDS],
    ("magma", 0.01): [v + 1.0 for v in DENSE_SEEDS],
    ("magma", 0.1): [v + 0.5 for v in DENSE_SEEDS],
    ("magma", 1.0): masked_seeds(),
}
EDGE = (
    "adamw+magma: its best lr 1 is the largest tested (0.01 to 1); "
    "its optimum may lie beyond the grid"
)


def write_study(
    server: Server,
    spec: StudySpec | None = None,
    bracket: dict | None = None,
    seeds: dict[tuple[str, float], list[float]] = HTTP_SEEDS,
) -> int:
    """``seeds`` as a complete study of ``spec`` (a grid over them by default), with
    ``bracket`` as its latest bracket event when given."""
    spec = spec or quadratic_spec(
        name="verdict", search={"variant": ["dense", "magma"], "lr": [0.01, 0.1, 1.0]}, seeds=3
    )
    response = httpx.post(f"{server.api}/studies", json=spec.model_dump(mode="json"))
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    db = Database(server.database_url)
    try:
        with db.transaction() as session:
            if bracket is not None:
                event_log.add_event(session, study_id, "bracket", bracket)
            for number, ((variant, lr), values) in enumerate(seeds.items()):
                params = {"variant": variant, "lr": lr}
                configs = [spec.complete_trial_config(params, s) for s in range(len(values))]
                trials = trial_lifecycle.create_configuration(
                    session, study_id, number, params, configs
                )
                for trial, objective in zip(trials, values, strict=True):
                    trial_lifecycle.mark_trial_running(session, trial.id)
                    trial_lifecycle.finish_trial(session, trial.id, "complete", objective, 40)
            lease.finish_study(session, study_id, "complete")
    finally:
        db.engine.dispose()
    return study_id


def write_confirmation(
    server: Server,
    study_id: int,
    spec: StudySpec,
    seeds: dict[tuple[str, float], list[float]],
    first_seed: int = 3,
) -> None:
    """Each (variant, lr)'s chosen configuration rerun on fresh seeds from ``first_seed``,
    as the bracket planner creates a confirmation stage (params ``stage: confirm``)."""
    db = Database(server.database_url)
    try:
        with db.transaction() as session:
            number = len(trial_lifecycle.configurations(session, study_id))
            for offset, ((variant, lr), values) in enumerate(seeds.items()):
                run = {"variant": variant, "lr": lr}
                configs = [
                    spec.complete_trial_config(run, first_seed + s) for s in range(len(values))
                ]
                trials = trial_lifecycle.create_configuration(
                    session,
                    study_id,
                    number + offset,
                    {**run, STAGE_KEY: CONFIRM_STAGE},
                    configs,
                    first_seed,
                )
                for trial, objective in zip(trials, values, strict=True):
                    trial_lifecycle.mark_trial_running(session, trial.id)
                    trial_lifecycle.finish_trial(session, trial.id, "complete", objective, 40)
    finally:
        db.engine.dispose()


def surfaces(server: Server, study_id: int) -> tuple[dict, str, str, dict]:
    """``GET /verdict``'s body, ``magma-bench status``'s output, the table page's text
    and the ``/best`` export."""
    response = httpx.get(f"{server.api}/studies/{study_id}/verdict")
    assert response.status_code == 200, response.text
    status = cli(server, "status", str(study_id))
    assert status.returncode == 0, status.stderr
    page = httpx.get(f"{server.url}/studies/{study_id}/dashboard/table")
    assert page.status_code == 200
    exported = httpx.get(f"{server.api}/studies/{study_id}/best", params={"format": "json"})
    assert exported.status_code == 200
    return response.json(), status.stdout, html.unescape(page.text), exported.json()


def verdict_div(decision: str, stage: str, summary: str) -> str:
    return (
        f'<div class="verdict" data-verdict="{decision}" data-deciding-stage="{stage}">'
        f"{summary}</div>"
    )


def test_api_status_table_and_export_show_the_same_verdict(server: Server) -> None:
    study_id = write_study(server)
    body, status, page, exported = surfaces(server, study_id)

    assert (body["metric"], body["mode"], body["confidence"]) == ("val_loss", "min", 0.95)
    assert (body["power"], body["effect"], body["min_deciding_pairs"]) == (0.8, 0.01, 3)
    [comparison] = body["comparisons"]
    assert comparison["baseline"]["arm"] == "adamw" and comparison["baseline"]["lr"] == 0.1
    assert comparison["arm"]["arm"] == "adamw+magma" and comparison["arm"]["lr"] == 1.0
    selection = comparison["selection"]
    assert selection["stage"] == "selection"
    assert selection["method"] == "log-t" and selection["seeds"] == 3
    assert selection["change"] == pytest.approx(CHANGE, rel=1e-12)
    assert selection["low"] == pytest.approx(LOW, rel=1e-9)
    assert selection["high"] == pytest.approx(HIGH, rel=1e-6)
    assert selection["p_value"] == pytest.approx(P, rel=1e-9)
    assert selection["p_equivalence"] is None
    assert selection["difference_sd"] == pytest.approx(K, rel=1e-9)
    assert selection["verdict"] == "better"
    assert selection["seeds_needed"] == {"effect": 0.01, "estimate": 34, "upper": UPPER}
    assert (selection["diverged"], selection["reason"]) == (0, None)
    assert comparison["confirmation"] is None  # a grid study runs no confirmation stage
    assert (comparison["deciding_stage"], comparison["decision"]) == ("selection", "better")
    assert comparison["limits"] == []
    assert comparison["summary"] == SUMMARY
    assert comparison["warnings"] == [{"code": "best_at_grid_edge", "message": EDGE}]
    assert httpx.get(f"{server.api}/studies/999999/verdict").status_code == 404

    assert f"{SUMMARY}\n  warning: {EDGE}\n" in status, status

    assert verdict_div("better", "selection", SUMMARY) in page
    assert f"warning: {EDGE}" in page
    # each arm's best as the charts draw it: the mean [its log-space 95% interval]
    dense = range_interval(DENSE_SEEDS)
    assert (
        f'<strong class="value">{dense.mean:.4g}</strong> '
        f'<span class="interval">[{dense.low:.4g}, {dense.high:.4g}]</span>'
    ) in page
    assert "±" not in page

    assert exported["verdicts"] == body["comparisons"]


def bracket_spec(name: str, confirm_seeds: int = 0) -> StudySpec:
    """A bracket study over 0.01, 0.1 and 1 with no extension allowed."""
    return quadratic_spec(
        name=name,
        search={"variant": ["dense", "magma"]},
        seeds=3,
        early_stopping={"kind": "none"},
        protocol={
            "kind": "bracket",
            "lr_start": 0.1,
            "lr_step_decades": 1.0,
            "initial_points": 3,
            "max_extensions": 0,
            "confirm_seeds": confirm_seeds,
        },
    )


def bracket_event(seeds: dict[tuple[str, float], list[float]], **stops: tuple[str, float]):
    """The planner's report after the first round: per variant its stop and best LR."""
    return {
        "done": True,
        "rounds": 1,
        "arms": [
            {
                "arm": {"variant": variant},
                "status": status,
                "lrs": [0.01, 0.1, 1.0],
                "best_lr": best,
                "best_value": sum(seeds[(variant, best)]) / 3,
            }
            for variant, (status, best) in stops.items()
        ],
    }


#: HTTP_SEEDS run as a bracket study: dense bracketed at 0.1, magma stopped at 1
BRACKET_EVENT = bracket_event(HTTP_SEEDS, dense=("bracketed", 0.1), magma=("max_extensions", 1.0))
UNBRACKETED = (
    "adamw+magma: best LR 1 is the largest tested; "
    "the search stopped at max_extensions=0 before bracketing it"
)


def test_an_unbracketed_arm_is_inconclusive_on_every_surface(server: Server) -> None:
    study_id = write_study(server, bracket_spec("verdict-bracket"), BRACKET_EVENT)
    warning = {"code": "unbracketed", "message": UNBRACKETED}
    summary = (
        f"adamw+magma vs adamw: inconclusive ({UNBRACKETED}); selection (decides): {SELECTION}"
    )

    detail = httpx.get(f"{server.api}/studies/{study_id}").json()
    assert detail["bracket"] == BRACKET_EVENT  # the study detail reads the same event

    body, status, page, exported = surfaces(server, study_id)
    [comparison] = body["comparisons"]
    # the same numbers as the grid study's; the decision cannot stand
    assert comparison["selection"]["verdict"] == "better"
    assert (comparison["decision"], comparison["limits"]) == ("inconclusive", [UNBRACKETED])
    assert comparison["summary"] == summary
    assert comparison["warnings"] == [warning]
    assert f"{summary}\n  warning: {UNBRACKETED}\n" in status, status
    assert verdict_div("inconclusive", "selection", summary) in page
    assert f"warning: {UNBRACKETED}" in page
    assert exported["verdicts"] == body["comparisons"]


#: a bracket study whose arms are both bracketed at 0.1: the selection stage says better
BRACKETED_SEEDS = {
    **HTTP_SEEDS,
    ("magma", 0.1): masked_seeds(),
    ("magma", 1.0): [v + 2.0 for v in DENSE_SEEDS],
}
#: the chosen configurations rerun on seeds 3, 4, 5: log ratios -K, 0, K, no change
CONFIRMATION_SEEDS = {
    ("dense", 0.1): list(DENSE_SEEDS),
    ("magma", 0.1): masked_seeds((-K, 0.0, K)),
}


def test_the_confirmation_stage_decides_on_every_surface(server: Server) -> None:
    """A study that runs a confirmation stage is decided on it: before it has run it is
    inconclusive (not decided on its selection stage), and once it has, its verdict."""
    spec = bracket_spec("verdict-confirm", confirm_seeds=3)
    event = bracket_event(BRACKETED_SEEDS, dense=("bracketed", 0.1), magma=("bracketed", 0.1))
    study_id = write_study(server, spec, event, BRACKETED_SEEDS)
    reason = "the two arms share no finished seed"
    failed = f"the confirmation stage has nothing to test: {reason}"
    pending = (
        f"adamw+magma vs adamw: inconclusive ({failed}); selection: {SELECTION}; "
        f"confirmation (decides): no test: {reason}"
    )

    body, status, page, exported = surfaces(server, study_id)
    [comparison] = body["comparisons"]
    assert comparison["selection"]["verdict"] == "better"
    assert comparison["confirmation"] == {
        "stage": "confirmation",
        "method": None,
        "seeds": 0,
        "change": None,
        "low": None,
        "high": None,
        "p_value": None,
        "p_equivalence": None,
        "difference_sd": None,
        "verdict": None,
        "seeds_needed": None,
        "diverged": 0,
        "reason": reason,
    }
    assert (comparison["deciding_stage"], comparison["decision"]) == (
        "confirmation",
        "inconclusive",
    )
    assert comparison["limits"] == [failed]
    assert comparison["warnings"] == [{"code": "confirmation_failed", "message": failed}]
    assert comparison["summary"] == pending
    assert f"{pending}\n  warning: {failed}\n" in status, status
    assert verdict_div("inconclusive", "confirmation", pending) in page
    assert exported["verdicts"] == body["comparisons"]

    write_confirmation(server, study_id, spec, CONFIRMATION_SEEDS)
    disagrees = (
        "the confirmation stage says no detectable difference; the selection stage says better"
    )
    decided = (
        f"adamw+magma vs adamw: no detectable difference; selection: {SELECTION}; "
        f"confirmation (decides): +0.0% [-4.8%, +5.1%] no detectable difference (3 seeds; "
        f"1% needs 34 to {UPPER} seeds)"
    )
    body, status, page, exported = surfaces(server, study_id)
    [comparison] = body["comparisons"]
    # the bests are still the selection stage's: reruns never compete
    assert comparison["arm"]["lr"] == 0.1 and comparison["arm"]["params"] == {
        "variant": "magma",
        "lr": 0.1,
    }
    confirmation = comparison["confirmation"]
    assert (confirmation["method"], confirmation["seeds"]) == ("log-t", 3)
    assert confirmation["p_value"] == pytest.approx(1.0)
    assert (comparison["deciding_stage"], comparison["decision"]) == (
        "confirmation",
        "no_detectable_difference",
    )
    assert comparison["limits"] == []
    assert comparison["warnings"] == [{"code": "confirmation_disagrees", "message": disagrees}]
    assert comparison["summary"] == decided
    assert f"{decided}\n  warning: {disagrees}\n" in status, status
    assert verdict_div("no_detectable_difference", "confirmation", decided) in page
    assert exported["verdicts"] == body["comparisons"]
