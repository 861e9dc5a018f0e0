"""Tested differences (``studies.analysis.verdict``) against answers computed by hand,
and the same numbers through every surface: ``GET /verdict``, ``magma-bench status``, the
comparison table page and the ``/best`` export, on a real server on each backend."""

from __future__ import annotations

import html
import math

import httpx
import pytest

from studies.analysis.verdict import (
    Method,
    Verdict,
    WarningCode,
    seeds_needed,
    verdict,
    verdicts,
)
from studies.records import Arm, ArmSearch, BracketSearch, bracket_from_event
from studies.spec import StudySpec
from studies.storage.repository import event_log, lease, trial_lifecycle
from tests.dashboards_fixtures import Rows
from tests.db_fixtures import Database, quadratic_spec
from tests.service_fixtures import Server, cli

DENSE, MAGMA, SKIP = Arm("adamw", "dense"), Arm("adamw", "magma"), Arm("adamw", "skipupdate")
LRS = (1e-3, 1e-2, 1e-1)
#: t_{0.975, 2} in closed form (Student t with 2 degrees of freedom)
T975_2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
#: the dense arm's best seeds, and the masked arm's log ratios to them: mean -0.05, SD K.
#: K = 2 ln(1.01) makes a 1% change half an SD (dz = 0.5): 34 pairs for 80% power at
#: alpha 0.05, two-sided (Cohen 1988; G*Power's paired t-test gives 34 too)
DENSE_SEEDS = (2.0, 4.0, 5.0)
K = 2 * math.log(1.01)
LOGS = (-0.05 - K, -0.05, -0.05 + K)
HALF = T975_2 * K / math.sqrt(3)
CHANGE, LOW, HIGH = math.expm1(-0.05), math.expm1(-0.05 - HALF), math.expm1(-0.05 + HALF)
# CHANGE = -0.04877, LOW = -0.09466, HIGH = -0.00056: the interval excludes 0
SUMMARY = "adamw+magma vs adamw: -4.9% [-9.5%, -0.1%] better (3 seeds; 1% needs 34 seeds)"


def masked_seeds(logs: tuple[float, ...] = LOGS) -> list[float]:
    return [d * math.exp(log) for d, log in zip(DENSE_SEEDS, logs, strict=True)]


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


# --- the paired interval and the verdict rule -----------------------------------------


def test_paired_log_interval_percent_change_and_seeds_needed_by_hand() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds())
    comparison = one(rows)
    estimate = comparison.estimate
    assert (comparison.baseline, comparison.arm) == (DENSE, MAGMA)
    assert comparison.baseline_best.value("lr") == comparison.best.value("lr") == 1e-2
    assert estimate.method == Method.log_t and estimate.n == 3
    assert estimate.change == pytest.approx(CHANGE, rel=1e-12)
    assert estimate.low == pytest.approx(LOW, rel=1e-9)
    assert estimate.high == pytest.approx(HIGH, rel=1e-6)
    assert estimate.sd == pytest.approx(K, rel=1e-9)
    assert estimate.verdict == Verdict.better and estimate.seeds_needed == 34
    assert comparison.summary == SUMMARY
    assert comparison.warnings == () and comparison.reason is None


def test_the_same_numbers_are_worse_when_maximising() -> None:
    # maximising, the highest configuration is the best: give each arm one LR only
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS, best_lr=1e-2, lrs=(1e-2,))
    add_arm(rows, "magma", masked_seeds(), best_lr=1e-2, lrs=(1e-2,))
    estimate = one(rows, "max").estimate
    assert estimate.change == pytest.approx(CHANGE, rel=1e-12)
    assert estimate.verdict == Verdict.worse


def test_an_interval_across_zero_is_no_detectable_difference() -> None:
    # log ratios -0.01, -0.02, -0.03: mean -0.02, SD 0.01, half-width 4.3027 * 0.01 / sqrt 3
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds((-0.01, -0.02, -0.03)))
    estimate = one(rows).estimate
    half = T975_2 * 0.01 / math.sqrt(3)
    assert estimate.low == pytest.approx(math.expm1(-0.02 - half), rel=1e-9)
    assert estimate.high == pytest.approx(math.expm1(-0.02 + half), rel=1e-9)
    assert estimate.low < 0 < estimate.high
    assert estimate.verdict == Verdict.no_detectable_difference
    assert estimate.verdict_text == "no detectable difference at 3 seeds"


@pytest.mark.parametrize(
    ("low", "high", "mode", "expected"),
    [
        (-0.03, -0.01, "min", Verdict.better),
        (-0.03, -0.01, "max", Verdict.worse),
        (0.01, 0.03, "min", Verdict.worse),
        (0.01, 0.03, "max", Verdict.better),
        (-0.01, 0.01, "min", Verdict.no_detectable_difference),
        (0.0, 0.02, "min", Verdict.no_detectable_difference),  # touching 0 is not excluding it
        (None, None, "min", Verdict.no_detectable_difference),
    ],
)
def test_verdict_rule(low, high, mode, expected) -> None:
    assert verdict(low, high, mode) == expected


def test_verdict_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        verdict(-0.2, -0.1, "lowest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        verdicts([], "lowest")  # type: ignore[arg-type]


@pytest.mark.parametrize(("dz", "n"), [(0.2, 199), (0.5, 34), (0.8, 15)])
def test_seeds_needed_matches_the_paired_t_power_tables(dz: float, n: int) -> None:
    # Cohen's (1988) / G*Power's sample sizes for a paired t-test, alpha 0.05 two-sided,
    # power 0.8, at standardised effect dz = effect / SD
    assert seeds_needed(1.0, dz) == n
    assert seeds_needed(0.02, 0.02 * dz) == n


def test_seeds_needed_without_spread_is_the_smallest_with_an_interval() -> None:
    assert seeds_needed(0.0, 0.01) == 2


def test_one_pair_has_no_interval_and_no_seeds_needed() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS[:1])
    add_arm(rows, "magma", masked_seeds()[:1])
    comparison = one(rows)
    estimate = comparison.estimate
    assert estimate.n == 1 and estimate.change == pytest.approx(math.expm1(LOGS[0]))
    assert (estimate.low, estimate.high, estimate.sd, estimate.seeds_needed) == (None,) * 4
    assert estimate.verdict == Verdict.no_detectable_difference
    assert comparison.summary == (
        "adamw+magma vs adamw: -6.8% [no interval] no detectable difference at 1 seed "
        "(1 seed; 1% needs: no variance estimate)"
    )
    [warning] = comparison.warnings
    assert warning.code == WarningCode.few_seeds and "no variance" in warning.message


# --- the bootstrap path ---------------------------------------------------------------


def test_a_value_at_or_below_zero_takes_the_seeded_bootstrap() -> None:
    # dense -1, 1, 3 (mean 1): differences -0.2, -0.1, -0.3 of the dense mean. With 3 pairs
    # each resample of one seed thrice has probability 1/27 > 2.5%, and those are the
    # extremes of the resampled means: the percentile interval is exactly [-0.3, -0.1].
    rows = Rows()
    add_arm(rows, "dense", (-1.0, 1.0, 3.0))
    add_arm(rows, "magma", (-1.2, 0.9, 2.7))
    first, second = one(rows), one(rows)
    estimate = first.estimate
    assert estimate.method == Method.bootstrap and estimate.n == 3
    assert estimate.change == pytest.approx(-0.2)
    assert estimate.low == pytest.approx(-0.3) and estimate.high == pytest.approx(-0.1)
    assert estimate.verdict == Verdict.better
    assert estimate.sd == pytest.approx(0.1)
    # sd 0.1 against a 0.01 change: dz 0.1, (1.95996 + 0.84162)^2 / 0.01 = 784.9 by the
    # normal approximation, 787 with the t distribution (G*Power: 787)
    assert estimate.seeds_needed == 787
    assert second.estimate == estimate  # the same trials, the same interval
    assert "(3 seeds, bootstrap; 1% needs 787 seeds)" in first.summary


def test_positive_values_take_the_log_path_and_a_zero_switches_to_the_bootstrap() -> None:
    positive, with_zero = Rows(), Rows()
    add_arm(positive, "dense", (1.0, 2.0, 3.0, 4.0))
    add_arm(positive, "magma", (0.9, 2.1, 2.7, 3.9))
    add_arm(with_zero, "dense", (0.0, 2.0, 3.0, 4.0))
    add_arm(with_zero, "magma", (0.9, 2.1, 2.7, 3.9))
    assert one(positive).estimate.method == Method.log_t
    bootstrapped = one(with_zero).estimate
    assert bootstrapped.method == Method.bootstrap
    assert bootstrapped == one(with_zero).estimate
    # differences 0.9, 0.1, -0.3, -0.1 over the dense mean 2.25
    assert bootstrapped.change == pytest.approx(0.6 / 4 / 2.25)


def test_the_bootstrap_needs_three_pairs_and_a_nonzero_dense_mean() -> None:
    rows = Rows()
    add_arm(rows, "dense", (-1.0, 3.0))  # mean 1: differences -0.2, -0.1
    add_arm(rows, "magma", (-1.2, 2.9))
    estimate = one(rows).estimate
    assert estimate.method == Method.bootstrap and estimate.change == pytest.approx(-0.15)
    assert (estimate.low, estimate.high) == (None, None)
    assert estimate.verdict == Verdict.no_detectable_difference
    rows = Rows()
    add_arm(rows, "dense", (-1.0, 1.0, 0.0))
    add_arm(rows, "magma", (-1.2, 0.9, 0.5))
    comparison = one(rows)
    assert comparison.estimate is None and "dense mean is 0" in comparison.reason
    assert comparison.summary.startswith("adamw+magma vs adamw: no verdict: the dense mean is 0")


# --- which comparisons ----------------------------------------------------------------


def test_every_masked_arm_against_its_own_dense_base_only() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds())
    add_arm(rows, "skipupdate", DENSE_SEEDS)
    add_arm(rows, "magma", DENSE_SEEDS, base="rmsprop")  # no dense rmsprop: no comparison
    comparisons = verdicts(rows.trials(), "min")
    assert [(c.baseline, c.arm) for c in comparisons] == [(DENSE, SKIP), (DENSE, MAGMA)]
    assert comparisons[0].estimate.change == 0.0


def test_an_arm_without_a_best_has_no_verdict_and_says_why() -> None:
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
    assert comparison.estimate is None and comparison.best is None
    assert comparison.reason == "adamw+magma has no configuration that completed on every seed"


def test_bests_that_share_no_seed_have_no_verdict() -> None:
    rows = Rows()
    rows.add(2.0, seed=0, variant="dense", lr=1e-2)
    rows.add(1.0, seed=1, variant="magma", lr=1e-2)
    comparison = one(rows)
    assert comparison.estimate is None
    assert comparison.reason == "the two best configurations share no seed"


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


def test_fewer_than_three_seeds() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS[:2])
    add_arm(rows, "magma", masked_seeds()[:2])
    comparison = one(rows)
    [warning] = comparison.warnings
    assert (warning.code, warning.message) == (
        WarningCode.few_seeds,
        "only 2 seeds paired, fewer than 3",
    )
    # two pairs: a t interval with 1 degree of freedom, and a seeds estimate
    assert comparison.estimate.low is not None and comparison.estimate.seeds_needed is not None


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


def confirmation_rows(logs: tuple[float, ...]) -> dict[Arm, list]:
    """Each arm's chosen configuration rerun on fresh seeds 3, 4, 5."""
    rows = Rows()
    for seed, (dense, log) in enumerate(zip(DENSE_SEEDS, logs, strict=True), start=3):
        rows.add(dense, seed=seed, variant="dense", lr=1e-2)
        rows.add(dense * math.exp(log), seed=seed, variant="magma", lr=1e-2)
    trials = rows.trials()
    return {arm: [t for t in trials if t.arm == arm] for arm in (DENSE, MAGMA)}


def test_a_confirmation_stage_that_disagrees() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds())
    assert one(rows).warnings == ()  # today: no confirmation stage
    agrees = one(rows, confirmation=confirmation_rows(LOGS))
    assert agrees.warnings == () and agrees.confirmation.verdict == Verdict.better
    disagrees = one(rows, confirmation=confirmation_rows((-K, 0.0, K)))
    [warning] = disagrees.warnings
    assert warning.code == WarningCode.confirmation_disagrees
    assert warning.message == (
        "the confirmation stage says +0.0% [-4.8%, +5.1%] no detectable difference at 3 seeds "
        "(3 seeds; 1% needs 34 seeds); the selection stage says better"
    )
    assert disagrees.estimate.verdict == Verdict.better  # the selection stage's, unchanged


def test_a_diverged_confirmation_seed_is_a_divergence_at_the_chosen_lr() -> None:
    rows = Rows()
    add_arm(rows, "dense", DENSE_SEEDS)
    add_arm(rows, "magma", masked_seeds())
    confirmation = confirmation_rows(LOGS)
    fresh = Rows()
    fresh.add(None, seed=6, variant="magma", lr=1e-2, status="diverged")
    confirmation[MAGMA] += fresh.trials()
    comparison = one(rows, confirmation=confirmation)
    assert codes(comparison) == [WarningCode.diverged_at_chosen_lr.value]
    assert comparison.warnings[0].message == (
        "adamw+magma: 1 of 7 trials at its chosen lr 0.01 diverged"
    )


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


def test_an_arm_stopped_unbracketed_is_warned_about_with_the_limit_that_stopped_it() -> None:
    bracket = stopped(
        search("bracketed", 1e-2, variant="dense"), search("max_extensions", 1e-1, variant="magma")
    )
    comparison = one(edge_rows(), bracket=bracket)
    # the stop replaces the grid-edge warning (the same fact, with its cause)
    assert [(w.code, w.message) for w in comparison.warnings] == [
        (
            WarningCode.unbracketed,
            "adamw+magma: best LR 0.1 is the largest tested; "
            "the search stopped at max_extensions=4 before bracketing it",
        )
    ]
    assert comparison.summary == SUMMARY  # the numbers are the same
    # without the search, the same trials are a plain grid study's: the grid-edge warning
    assert codes(one(edge_rows())) == [WarningCode.best_at_grid_edge.value]


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
    [warning] = one(rows, bracket=bracket).warnings
    assert (warning.code, warning.message) == (WarningCode.unbracketed, f"adamw: {text}")


def test_every_verdict_with_an_unbracketed_dense_arm_carries_it() -> None:
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


def write_study(server: Server, spec: StudySpec | None = None, bracket: dict | None = None) -> int:
    """HTTP_SEEDS as a complete study of ``spec`` (a grid over them by default), with
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
            for number, ((variant, lr), seeds) in enumerate(HTTP_SEEDS.items()):
                params = {"variant": variant, "lr": lr}
                configs = [spec.complete_trial_config(params, s) for s in range(len(seeds))]
                trials = trial_lifecycle.create_configuration(
                    session, study_id, number, params, configs
                )
                for trial, objective in zip(trials, seeds, strict=True):
                    trial_lifecycle.mark_trial_running(session, trial.id)
                    trial_lifecycle.finish_trial(session, trial.id, "complete", objective, 40)
            lease.finish_study(session, study_id, "complete")
    finally:
        db.engine.dispose()
    return study_id


def test_api_status_table_and_export_show_the_same_verdict(server: Server) -> None:
    study_id = write_study(server)

    response = httpx.get(f"{server.api}/studies/{study_id}/verdict")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["metric"], body["mode"], body["confidence"]) == ("val_loss", "min", 0.95)
    [comparison] = body["comparisons"]
    assert comparison["baseline"]["arm"] == "adamw" and comparison["baseline"]["lr"] == 0.1
    assert comparison["arm"]["arm"] == "adamw+magma" and comparison["arm"]["lr"] == 1.0
    assert comparison["method"] == "log-t" and comparison["seeds"] == 3
    assert comparison["change"] == pytest.approx(CHANGE, rel=1e-12)
    assert comparison["low"] == pytest.approx(LOW, rel=1e-9)
    assert comparison["high"] == pytest.approx(HIGH, rel=1e-6)
    assert (comparison["verdict"], comparison["seeds_needed"]) == ("better", 34)
    assert comparison["summary"] == SUMMARY
    assert comparison["warnings"] == [{"code": "best_at_grid_edge", "message": EDGE}]
    assert httpx.get(f"{server.api}/studies/999999/verdict").status_code == 404

    status = cli(server, "status", str(study_id))
    assert status.returncode == 0, status.stderr
    assert f"{SUMMARY}\n  warning: {EDGE}\n" in status.stdout, status.stdout

    page = httpx.get(f"{server.url}/studies/{study_id}/dashboard/table")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert f'<div class="verdict" data-verdict="better">{SUMMARY}</div>' in text
    assert f"warning: {EDGE}" in text

    exported = httpx.get(f"{server.api}/studies/{study_id}/best", params={"format": "json"})
    assert exported.status_code == 200
    assert exported.json()["verdicts"] == body["comparisons"]


#: the bracket event of HTTP_SEEDS run as a bracket study with no extension allowed: the
#: planner's report after the first round (dense bracketed at 0.1, magma best at 1)
BRACKET_EVENT = {
    "done": True,
    "rounds": 1,
    "arms": [
        {
            "arm": {"variant": variant},
            "status": status,
            "lrs": [0.01, 0.1, 1.0],
            "best_lr": best,
            "best_value": sum(HTTP_SEEDS[(variant, best)]) / 3,
        }
        for variant, status, best in (("dense", "bracketed", 0.1), ("magma", "max_extensions", 1.0))
    ],
}
UNBRACKETED = (
    "adamw+magma: best LR 1 is the largest tested; "
    "the search stopped at max_extensions=0 before bracketing it"
)


def test_an_unbracketed_arm_is_warned_about_on_every_surface(server: Server) -> None:
    spec = quadratic_spec(
        name="verdict-bracket",
        search={"variant": ["dense", "magma"]},
        seeds=3,
        early_stopping={"kind": "none"},
        protocol={
            "kind": "bracket",
            "lr_start": 0.1,
            "lr_step_decades": 1.0,
            "initial_points": 3,
            "max_extensions": 0,
        },
    )
    study_id = write_study(server, spec, BRACKET_EVENT)
    warning = {"code": "unbracketed", "message": UNBRACKETED}

    detail = httpx.get(f"{server.api}/studies/{study_id}").json()
    assert detail["bracket"] == BRACKET_EVENT  # the study detail reads the same event

    body = httpx.get(f"{server.api}/studies/{study_id}/verdict").json()
    [comparison] = body["comparisons"]
    assert comparison["summary"] == SUMMARY  # the same numbers as the grid study's
    assert comparison["warnings"] == [warning]

    status = cli(server, "status", str(study_id))
    assert status.returncode == 0, status.stderr
    assert f"{SUMMARY}\n  warning: {UNBRACKETED}\n" in status.stdout, status.stdout

    page = httpx.get(f"{server.url}/studies/{study_id}/dashboard/table")
    assert page.status_code == 200
    assert f"warning: {UNBRACKETED}" in html.unescape(page.text)

    exported = httpx.get(f"{server.api}/studies/{study_id}/best", params={"format": "json"})
    assert exported.json()["verdicts"] == body["comparisons"]
