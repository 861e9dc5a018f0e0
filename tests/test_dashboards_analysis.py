"""The dashboards' pure analysis, against answers computed by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from dashboards import views
from studies import records
from studies.analysis.arms import (
    best_configuration,
    best_per_arm,
    best_per_cell,
    configurations,
    group_by_arm,
    searched_values,
)
from studies.analysis.curves import best_configuration_curves, learning_curves
from studies.analysis.importance import parameter_importance
from studies.analysis.intervals import divergence_rates, mean_interval, range_interval
from studies.analysis.lr_window import lr_windows
from studies.analysis.mechanism import mechanism_series
from studies.analysis.pairing import paired_comparison
from studies.analysis.status import status_counts
from studies.analysis.table import comparison_table
from studies.records import Arm, metrics_from_rows, trials_from_rows
from studies.results import StudyData
from tests.dashboards_fixtures import Rows
from worker.config import TrialConfig
from worker.contract import PROGRESS_METRIC, TrialStatus, metric_title

DENSE = Arm("adamw", "dense")
MAGMA = Arm("adamw", "magma")
SKIP = Arm("adamw", "skipupdate")
# Student t quantiles t_{0.975, df}: closed forms for df 1 (Cauchy) and 2, a table for 3
T975 = {
    1: math.tan(math.pi * (0.975 - 0.5)),
    2: (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025),
    3: 3.182446305284,
}


# --- records ---------------------------------------------------------------------------


def test_trials_from_rows_reads_columns_and_the_complete_config():
    [trial] = trials_from_rows(
        [
            {
                "id": 7,
                "number": 3,
                "configuration": 2,
                "seed_index": 1,
                "status": "complete",
                "objective": 21.5,
                "params": {"lr": 0.003},
                "config": TrialConfig(lr=0.003, base="rmsprop", tau=4.0).model_dump(),
                "study_id": 1,  # other columns are ignored
            }
        ]
    )
    assert (trial.id, trial.number, trial.configuration, trial.seed_index) == (7, 3, 2, 1)
    assert trial.result == 21.5 and trial.last_step is None
    assert trial.value("lr") == 0.003  # searched
    assert trial.value("tau") == 4.0  # set by the study
    assert trial.value("p") == 0.5  # TrialConfig's default, stored with the trial
    assert trial.arm == Arm("rmsprop", "magma") and trial.arm.label == "rmsprop+magma"
    assert Arm("rmsprop", "dense").label == "rmsprop"


def test_non_finite_or_missing_objectives_are_no_result():
    rows = Rows()
    rows.add(float("inf"), variant="dense", lr=1e-3)
    rows.add(float("nan"), variant="dense", lr=1e-2)
    rows.add(None, variant="dense", lr=1e-1)
    rows.add(30.0, variant="dense", lr=1.0, status="diverged")
    assert [t.objective for t in rows.trials()] == [None, None, None, 30.0]
    assert [t.result for t in rows.trials()] == [None, None, None, None]


def test_unknown_status_is_rejected():
    rows = Rows()
    rows.add(1.0, status="exploded", variant="dense")
    with pytest.raises(ValueError, match="trial 100: status must be one of"):
        rows.trials()


def test_a_step_reported_twice_keeps_the_later_row():
    points = metrics_from_rows(
        [
            {"trial_id": 1, "step": 20, "values": {"val_loss": 2.0}},
            {"trial_id": 1, "step": 10, "values": {"val_loss": 3.0}},
            {"trial_id": 1, "step": 20, "values": {"val_loss": 1.5}},
        ]
    )
    assert [(p.step, p.values["val_loss"]) for p in records.by_trial(points)[1]] == [
        (10, 3.0),
        (20, 1.5),
    ]


def test_charts_name_the_study_metric_and_its_progress_axis():
    assert metric_title("val_ppl") == "validation perplexity"
    assert metric_title("train_loss") == "training loss"
    assert PROGRESS_METRIC["llama-c4"] == "tokens" and PROGRESS_METRIC["quadratic"] == "step"


# --- intervals -------------------------------------------------------------------------


def test_t_interval_matches_hand_computation():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3), sem = s / 2, df 3
    interval = mean_interval([1.0, 2.0, 3.0, 4.0])
    half = T975[3] * math.sqrt(5 / 3) / 2
    assert interval.mean == 2.5 and interval.n == 4
    assert interval.low == pytest.approx(2.5 - half, rel=1e-11)
    assert interval.high == pytest.approx(2.5 + half, rel=1e-11)
    assert interval.half_width == pytest.approx(2.0542603, rel=1e-7)
    # two seeds: s = sqrt(2), sem = 1
    two = mean_interval([10.0, 12.0])
    assert (two.low, two.high) == pytest.approx((11 - T975[1], 11 + T975[1]), rel=1e-12)
    # 90%: t_{0.95, 3} = 2.353363
    narrower = mean_interval([1.0, 2.0, 3.0, 4.0], confidence=0.9)
    assert narrower.half_width == pytest.approx(2.353363435 * math.sqrt(5 / 3) / 2, rel=1e-8)


def test_one_value_has_no_interval_and_none_has_no_mean():
    one = mean_interval([21.0])
    assert (one.mean, one.low, one.high, one.n, one.half_width) == (21.0, None, None, 1, None)
    empty = mean_interval([])
    assert (empty.mean, empty.low, empty.high, empty.n) == (None, None, None, 0)
    same = mean_interval([3.0, 3.0, 3.0])
    assert (same.low, same.high) == (3.0, 3.0)
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=1.0)


def test_range_interval_of_positive_values_is_a_t_interval_of_their_logs():
    # logs 1, 2, 3: mean 2, s = 1, sem = 1 / sqrt(3), df 2; back-transformed
    e = math.e
    interval = range_interval([e, e**2, e**3])
    half = T975[2] / math.sqrt(3)
    assert interval.mean == pytest.approx((e + e**2 + e**3) / 3, rel=1e-12)
    assert interval.low == pytest.approx(math.exp(2 - half), rel=1e-12)
    assert interval.high == pytest.approx(math.exp(2 + half), rel=1e-12)
    assert interval.n == 3 and interval.confidence == 0.95
    # 1 and 100: logs 0 and ln 100, centred on ln 10 with sem ln 10, so 10^(1 +- t)
    wide = range_interval([1.0, 100.0])
    assert wide.mean == 50.5
    assert wide.low == pytest.approx(10 ** (1 - T975[1]), rel=1e-10)
    assert wide.high == pytest.approx(10 ** (1 + T975[1]), rel=1e-10)
    assert wide.low > 0 > mean_interval([1.0, 100.0]).low  # the symmetric one goes negative
    assert wide.minus == pytest.approx(50.5 - 10 ** (1 - T975[1]), rel=1e-12)
    assert wide.plus == pytest.approx(10 ** (1 + T975[1]) - 50.5, rel=1e-10)
    same = range_interval([3.0, 3.0, 3.0])
    assert (same.low, same.high, same.minus, same.plus) == pytest.approx((3.0, 3.0, 0.0, 0.0))


def test_range_interval_clamps_its_bars_when_the_mean_lies_outside():
    # nineteen 1s and a 10^6: the log interval (around the geometric mean, 10^0.3) ends
    # far below the arithmetic mean, so the bar reaches down only
    interval = range_interval([1.0] * 19 + [1e6])
    assert interval.mean == pytest.approx((19 + 1e6) / 20)
    assert interval.high < interval.mean and interval.plus == 0.0
    assert interval.minus == pytest.approx(interval.mean - interval.low)


def test_range_interval_bootstraps_values_that_are_not_all_positive():
    # [-1, 1]: resampled means are -1, 0, 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles are -1 and 1
    assert (range_interval([-1.0, 1.0]).low, range_interval([-1.0, 1.0]).high) == (-1.0, 1.0)
    # [0, 0, 3]: means 0, 1, 2, 3 with probabilities 8/27, 12/27, 6/27, 1/27; 1/27 > 2.5%
    zeros = range_interval([0.0, 0.0, 3.0])
    assert (zeros.mean, zeros.low, zeros.high) == (1.0, 0.0, 3.0)  # never below zero
    # seeded: the same values give the same interval every time
    values = [-1.0, 0.5, 2.0, 4.0]
    assert range_interval(values) == range_interval(values)
    assert -1.0 <= range_interval(values).low < range_interval(values).high <= 4.0
    # too few values for an interval, as mean_interval
    assert range_interval([2.0]) == mean_interval([2.0])
    assert range_interval([]).mean is None
    with pytest.raises(ValueError, match="confidence"):
        range_interval([1.0, 2.0], confidence=0.0)


def test_divergence_rate_counts_only_trials_that_ran_to_their_end():
    rows = Rows()
    for seed in range(3):
        rows.add(20.0 + seed, seed=seed, variant="dense", lr=1e-3)
    rows.add(None, variant="dense", lr=1e-1, status="diverged")
    rows.add(None, variant="dense", lr=1e-2, status="pruned")
    rows.add(None, variant="dense", lr=3e-2, status="failed")
    rows.add(None, variant="magma", lr=1e-1, status="diverged")
    rows.add(None, variant="magma", lr=1e-1, seed=1, status="diverged")
    rows.add(None, variant="skipupdate", lr=1e-3, status="running")
    rates = divergence_rates(rows.trials())
    assert list(rates) == [DENSE, SKIP, MAGMA]
    assert (rates[DENSE].diverged, rates[DENSE].finished, rates[DENSE].rate) == (1, 4, 0.25)
    assert rates[MAGMA].rate == 1.0
    assert rates[SKIP].rate is None and rates[SKIP].finished == 0


# --- arms ------------------------------------------------------------------------------


def test_configurations_summarise_completed_seeds_and_count_divergences():
    rows = Rows()
    rows.add(22.0, seed=1, variant="magma", lr=1e-3)
    rows.add(20.0, seed=0, variant="magma", lr=1e-3)
    rows.add(None, seed=2, variant="magma", lr=1e-3)  # complete without objective
    rows.add(25.0, seed=0, variant="magma", lr=1e-2)
    rows.add(None, seed=1, variant="magma", lr=1e-2, status="diverged")
    rows.add(None, seed=0, variant="dense", lr=1e-3, status="running")
    first, second, dense = sorted(configurations(rows.trials()), key=lambda c: c.number)
    assert [t.seed_index for t in first.trials] == [0, 1, 2]
    assert (first.summary.mean, first.summary.n, first.diverged) == (21.0, 2, 0)
    # a completed seed without an objective has no result: the configuration cannot compete
    assert first.outcome == "failed" and not first.eligible
    assert first.trial_ids == (101, 100, 102)
    assert first.params == {"variant": "magma", "lr": 1e-3}
    assert (second.summary.mean, second.diverged, second.outcome) == (25.0, 1, "diverged")
    # the charts' interval over the completed seeds 20 and 22: sqrt(440) * 1.1^(+-t/2)
    assert first.interval.mean == 21.0
    assert first.interval.low == pytest.approx(math.sqrt(440) * 1.1 ** (-T975[1] / 2))
    assert first.interval.high == pytest.approx(math.sqrt(440) * 1.1 ** (T975[1] / 2))
    assert second.finished and not second.eligible
    assert dense.arm == DENSE and dense.outcome == "pending" and not dense.finished
    # canonical order: dense before magma
    assert [c.arm for c in configurations(rows.trials())] == [DENSE, MAGMA, MAGMA]


def test_best_skips_configurations_with_a_diverged_seed():
    rows = Rows()
    rows.add(18.0, seed=0, variant="dense", lr=1e-2)  # best seed, but the other diverged
    rows.add(None, seed=1, variant="dense", lr=1e-2, status="diverged")
    rows.add(21.0, seed=0, variant="dense", lr=1e-3)
    rows.add(23.0, seed=1, variant="dense", lr=1e-3)
    rows.add(24.0, seed=0, variant="dense", lr=1e-4)
    rows.add(None, seed=0, variant="magma", lr=1e-2, status="diverged")
    best = best_per_arm(rows.trials(), "min")
    assert best[DENSE].params["lr"] == 1e-3 and best[DENSE].summary.mean == 22.0
    assert best[MAGMA] is None  # all diverged: the arm is there, without a best
    assert best_per_arm(rows.trials(), "max")[DENSE].params["lr"] == 1e-4
    with pytest.raises(ValueError, match="mode"):
        best_per_arm(rows.trials(), "minimise")
    assert best_configuration([], "min") is None


def test_best_per_cell_takes_each_cells_best_lr():
    rows = Rows()
    values = {
        (0.25, 1.0): (24.0, 23.0),
        (0.25, 2.0): (22.5, 22.0),
        (0.5, 1.0): (21.0, 21.5),
        (0.5, 2.0): (20.0, None),
    }
    for (p, tau), (low_lr, high_lr) in values.items():
        rows.add(low_lr, variant="magma", p=p, tau=tau, lr=1e-3)
        status = "complete" if high_lr is not None else "diverged"
        rows.add(high_lr, variant="magma", p=p, tau=tau, lr=1e-2, status=status)
    rows.add(None, variant="magma", p=0.75, tau=1.0, lr=1e-3, status="diverged")
    rows.add(None, variant="magma", p=0.75, tau=2.0, lr=1e-3, status="queued")
    cells = best_per_cell(rows.trials(), "p", "tau", "min")
    got = {cell: (c.summary.mean, c.params["lr"]) for cell, c in cells.items() if c is not None}
    assert got == {
        (0.25, 1.0): (23.0, 1e-2),
        (0.25, 2.0): (22.0, 1e-2),
        (0.5, 1.0): (21.0, 1e-3),
        (0.5, 2.0): (20.0, 1e-3),
    }
    assert cells[(0.75, 1.0)] is None  # ran, only diverged
    assert (0.75, 2.0) not in cells  # never finished


def test_group_by_arm_and_searched_values():
    rows = Rows()
    rows.add(1.0, variant="magma", base="rmsprop", lr=1e-3, components="mlp")
    rows.add(1.0, variant="dense", base="rmsprop", lr=1e-2, components="attention")
    rows.add(1.0, variant="dense", base="adamw", lr=1e-3, components="mlp")
    assert list(group_by_arm(rows.trials())) == [
        DENSE,
        Arm("rmsprop", "dense"),
        Arm("rmsprop", "magma"),
    ]
    assert searched_values(configurations(rows.trials())) == {
        "components": ["attention", "mlp"],
        "lr": [1e-3, 1e-2],
    }


def confirmed_rows() -> Rows:
    """A bracket study's rows: dense and magma at two LRs, then magma's choice rerun on
    fresh seeds 3 and 4 as a configuration marked ``stage: confirm``."""
    rows = Rows()
    for lr, value in ((1e-3, 2.0), (1e-2, 1.0)):
        rows.add(value, variant="dense", lr=lr)
        rows.add(value - 0.5, variant="magma", lr=lr)
    for seed in (3, 4):  # the stage marker is a param, not a TrialConfig field
        rows.add(0.75, seed=seed, variant="magma", lr=1e-2)
        rows.trial_rows[-1]["configuration"] = 4
        rows.trial_rows[-1]["params"]["stage"] = "confirm"
    return rows


def test_the_confirmation_marker_is_no_searched_value():
    configs = configurations(confirmed_rows().trials())
    assert [c.params.get("stage") for c in configs] == [None, None, None, None, "confirm"]
    assert searched_values(configs) == {"lr": [1e-3, 1e-2]}


def test_the_sensitivity_page_leaves_the_confirmation_stage_out():
    trials = confirmed_rows().trials()
    data = StudyData(
        id=1,
        name="bracket",
        status="complete",
        spec={},
        workload="quadratic",
        metric="val_loss",
        mode="min",
        runs=len(trials),
        error=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        started_at=None,
        finished_at=None,
        trials=trials,
    )
    view = views.sensitivity(data, views.SensitivityOptions())
    assert view.context["axes"] == ["variant", "lr"] and view.context["sliced"] == ["lr"]
    # the slices: each arm's two searched LRs, not the confirmation's rerun of one
    [dense, magma] = view.figures["slices"]().data
    assert (list(dense.x), list(dense.y)) == ([1e-3, 1e-2], [2.0, 1.0])
    assert (list(magma.x), list(magma.y)) == ([1e-3, 1e-2], [1.5, 0.5])


# --- LR window -------------------------------------------------------------------------


def crossing(lr: float, far_lr: float, mean: float, far_mean: float, threshold: float) -> float:
    """Where the curve from (lr, mean) to (far_lr, far_mean), linear in (log lr, log
    objective), reaches the threshold: the definition, written out for the tests."""
    fraction = math.log(threshold / mean) / math.log(far_mean / mean)
    return 10 ** (math.log10(lr) + fraction * (math.log10(far_lr) - math.log10(lr)))


def test_window_width_is_the_decades_of_lrs_within_delta_of_the_best():
    rows = Rows()
    for lr, value in [(1e-4, 30.0), (1e-3, 20.5), (3e-3, 20.0), (1e-2, 20.9), (3e-2, 40.0)]:
        rows.add(value, variant="dense", lr=lr)
    window = lr_windows(rows.trials())[DENSE]
    assert window.best.lr == 3e-3 and window.threshold == 21.0
    # 1e-3 and 1e-2 are within 21; the curve crosses 21 on the way to 30 and to 40
    low, high = crossing(1e-3, 1e-4, 20.5, 30.0, 21.0), crossing(1e-2, 3e-2, 20.9, 40.0, 21.0)
    assert (window.low, window.high) == pytest.approx((low, high), rel=1e-12)
    # ln(21/20.5)/ln(30/20.5) = 0.063275 decades below 1e-3, and
    # ln(21/20.9)/ln(40/20.9) * log10(3) = 0.003508 above 1e-2
    assert window.width == pytest.approx(1.066794, abs=1e-6)
    assert window.max_stable_lr == 3e-2 and window.min_diverged_lr is None
    assert [p.lr for p in window.points] == [1e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    # a wider delta takes in 1e-4 too (30 <= 1.5 * 20, inclusive, and the grid ends there)
    # and runs 0.5567 of the way from 1e-2 to 3e-2, where 40 > 30
    wide = lr_windows(rows.trials(), delta=0.5)[DENSE]
    assert wide.low == 1e-4
    assert wide.high == pytest.approx(crossing(1e-2, 3e-2, 20.9, 40.0, 30.0), rel=1e-12)
    assert wide.width == pytest.approx(
        2 + math.log(30 / 20.9) / math.log(40 / 20.9) * math.log10(3)
    )


def test_window_on_a_half_decade_grid_is_not_zero():
    """The issue's case: neighbours half a decade away miss a 5% threshold, which made
    every stepwise window 0 decades; the interpolated curve stays within it for a while."""
    rows = Rows()
    grid = [10**-3.5, 1e-3, 10**-2.5]
    for lr, value in zip(grid, [21.5, 20.0, 21.5], strict=True):
        rows.add(value, variant="magma", lr=lr)
    window = lr_windows(rows.trials())[MAGMA]
    # each side: ln(21/20) / ln(21.5/20) = 0.67464 of half a decade
    side = 0.5 * math.log(1.05) / math.log(21.5 / 20)
    assert window.low == pytest.approx(10 ** (-3 - side), rel=1e-12)
    assert window.high == pytest.approx(10 ** (-3 + side), rel=1e-12)
    assert window.width == pytest.approx(2 * side, rel=1e-12)
    assert window.width == pytest.approx(0.674637, abs=1e-6)
    # delta 0: only the best itself
    assert lr_windows(rows.trials(), delta=0.0)[MAGMA].width == 0.0


def test_window_crossings_in_log_lr_and_log_objective():
    # the best, 8, half a decade from 16 below and 32 above; the threshold 8 * sqrt(2) is
    # half of the log rise to 16 and a quarter of the log rise to 32
    rows = Rows()
    for lr, value in [(1e-3, 16.0), (10**-2.5, 8.0), (1e-2, 32.0)]:
        rows.add(value, variant="dense", lr=lr)
    window = lr_windows(rows.trials(), delta=math.sqrt(2) - 1)[DENSE]
    assert window.threshold == pytest.approx(8 * math.sqrt(2), rel=1e-15)
    assert window.low == pytest.approx(10**-2.75, rel=1e-12)
    assert window.high == pytest.approx(10**-2.375, rel=1e-12)
    assert window.width == pytest.approx(0.375, rel=1e-12)


def test_window_stops_at_a_gap_and_the_threshold_is_inclusive():
    rows = Rows()
    rows.add(20.5, variant="magma", lr=1e-4)  # qualifies, but beyond the gap
    rows.add(25.0, variant="magma", lr=3e-4)  # the gap
    rows.add(20.0, variant="magma", lr=1e-3)
    rows.add(19.0, seed=0, variant="magma", lr=3e-3)  # mean exactly 21 = 1.05 * 20
    rows.add(23.0, seed=1, variant="magma", lr=3e-3)
    rows.add(None, variant="magma", lr=1e-2, status="diverged")
    rows.add(20.1, variant="magma", lr=3e-2)  # qualifies, beyond the diverged LR
    window = lr_windows(rows.trials())[MAGMA]
    # down: the curve crosses 21 on the segment to the gap, ln(21/20)/ln(25/20) = 0.2187
    # of the way to 3e-4; up: 3e-3 is in (inclusive), and the diverged 1e-2 ends it there
    assert window.low == pytest.approx(crossing(1e-3, 3e-4, 20.0, 25.0, 21.0), rel=1e-12)
    assert window.high == 3e-3
    fraction = math.log(21 / 20) / math.log(25 / 20)
    assert window.width == pytest.approx(math.log10(3) + fraction * math.log10(1 / 0.3))
    assert [p.lr for p in window.points if p.diverged] == [1e-2]
    assert window.max_stable_lr == 3e-2 and window.min_diverged_lr == 1e-2


def test_window_for_maximised_objectives_and_partial_divergence():
    rows = Rows()
    for lr, value in [(1e-3, 0.90), (3e-3, 1.00), (1e-2, 0.96), (3e-2, 0.99)]:
        rows.add(value, variant="dense", lr=lr)
    rows.add(1.5, seed=0, variant="dense", lr=1e-1)  # one seed great, the other diverged
    rows.add(None, seed=1, variant="dense", lr=1e-1, status="diverged")
    window = lr_windows(rows.trials(), mode="max")[DENSE]
    assert window.best.lr == 3e-3 and window.threshold == pytest.approx(0.95)
    # down: from 1.00 to 0.90 the curve falls to 0.95 at ln(0.95)/ln(0.9) = 0.4868 of the way
    assert window.low == pytest.approx(crossing(3e-3, 1e-3, 1.0, 0.9, 0.95), rel=1e-12)
    assert window.high == 3e-2  # the partly diverged 1e-1 ends it at the last tested LR
    assert window.points[-1].diverged
    assert window.max_stable_lr == 3e-2 and window.min_diverged_lr == 1e-1


def test_window_of_non_positive_objectives_interpolates_the_objective_itself():
    rows = Rows()
    rows.add(-10.0, variant="dense", lr=1e-2)
    rows.add(-8.0, variant="dense", lr=1e-1)
    window = lr_windows(rows.trials(), delta=0.1)[DENSE]
    # threshold -10 + 0.1 * 10 = -9, half way to -8: half a decade above 1e-2
    assert window.threshold == -9.0
    assert (window.low, window.high) == pytest.approx((1e-2, 10**-1.5), rel=1e-12)


def test_stability_frontier_counts_every_configuration_and_seed():
    rows = Rows()
    rows.add(20.0, variant="magma", lr=1e-3, p=0.25)
    rows.add(21.0, variant="magma", lr=1e-3, p=0.5)
    rows.add(20.5, variant="magma", lr=1e-2, p=0.25)
    rows.add(19.0, seed=0, variant="magma", lr=1e-2, p=0.5)
    rows.add(None, seed=1, variant="magma", lr=1e-2, p=0.5, status="diverged")
    rows.add(21.0, variant="magma", lr=3e-2, p=0.25)
    rows.add(None, variant="magma", lr=1e-1, p=0.25, status="diverged")
    rows.add(None, variant="magma", lr=3e-1, p=0.25, status="pruned")  # says nothing
    rows.add(None, variant="magma", lr=1.0, p=0.25, status="running")  # nor does this
    window = lr_windows(rows.trials())[MAGMA]
    # 1e-2 has a stable configuration, so it is no diverged point of the curve, but a seed
    # diverged there: the frontier lies between 3e-2 (no divergence) and 1e-2
    assert [p.diverged for p in window.points] == [False, False, False, True]
    assert window.max_stable_lr == 3e-2 and window.min_diverged_lr == 1e-2


def test_window_of_one_lr_all_diverged_and_best_over_other_params():
    rows = Rows()
    rows.add(20.0, variant="dense", lr=1e-3)
    rows.add(None, variant="magma", lr=1e-3, status="diverged")
    rows.add(None, variant="magma", lr=1e-2, status="diverged")
    rows.add(None, variant="skipupdate", lr=1e-3, status="running")
    rows.add(22.0, variant="skipupdate", lr=1e-2, tau=1.0)
    rows.add(21.0, variant="skipupdate", lr=1e-2, tau=2.0)
    windows = lr_windows(rows.trials())
    single = windows[DENSE]
    assert (single.width, single.low, single.high, single.max_stable_lr) == (0.0, 1e-3, 1e-3, 1e-3)
    assert single.min_diverged_lr is None
    diverged = windows[MAGMA]
    assert diverged.best is None and diverged.width is None and diverged.max_stable_lr is None
    assert diverged.min_diverged_lr == 1e-3
    assert [p.diverged for p in diverged.points] == [True, True]
    skip = windows[SKIP]
    assert [p.lr for p in skip.points] == [1e-2]  # the running LR has no outcome yet
    assert skip.best.mean == 21.0 and skip.best.configuration.params["tau"] == 2.0
    with pytest.raises(ValueError, match="delta"):
        lr_windows(rows.trials(), delta=-0.1)
    with pytest.raises(ValueError, match="mode"):
        lr_windows([], mode="maximise")


# --- pairing ---------------------------------------------------------------------------


def test_paired_difference_and_its_t_interval():
    rows = Rows()
    for seed, (dense, magma) in enumerate([(20.0, 19.0), (22.0, 20.0), (21.0, 18.0)]):
        rows.add(dense, seed=seed, variant="dense", lr=1e-3)
        rows.add(magma, seed=seed, variant="magma", lr=1e-3)
    comparison = paired_comparison(rows.trials(), DENSE, MAGMA, "min")
    assert [p.difference for p in comparison.pairs] == [-1.0, -2.0, -3.0]
    # differences -1, -2, -3: mean -2, s = 1, sem = 1 / sqrt(3), df 2
    half = T975[2] / math.sqrt(3)
    assert comparison.difference.mean == -2.0 and comparison.difference.n == 3
    assert comparison.difference.low == pytest.approx(-2.0 - half, rel=1e-12)
    assert comparison.difference.high == pytest.approx(-2.0 + half, rel=1e-12)
    assert comparison.unpaired == ()


def two_lrs_three_seeds() -> Rows:
    """dense {1e-3: (20, 22, 21), 1e-2: (25, 26, 27)}, magma {1e-3: (21, 23, 22), 1e-2:
    (19, 20, 18)}: when minimising, dense's best is 1e-3 (mean 21), magma's 1e-2 (19)."""
    rows = Rows()
    values = {
        ("dense", 1e-3): (20.0, 22.0, 21.0),
        ("dense", 1e-2): (25.0, 26.0, 27.0),
        ("magma", 1e-3): (21.0, 23.0, 22.0),
        ("magma", 1e-2): (19.0, 20.0, 18.0),
    }
    for (variant, lr), seeds in values.items():
        for seed, value in enumerate(seeds):
            rows.add(value, seed=seed, variant=variant, lr=lr)
    return rows


def test_pairing_is_once_per_seed_at_each_arms_best():
    """Two LRs x 3 seeds give 3 pairs, not 6: each arm's best configuration against the
    other's, by seed, even where the bests are at different LRs."""
    trials = two_lrs_three_seeds().trials()
    comparison = paired_comparison(trials, DENSE, MAGMA, "min")
    assert len(comparison.pairs) == comparison.difference.n == 3
    assert [p.a.seed_index for p in comparison.pairs] == [0, 1, 2]
    assert {p.a.params["lr"] for p in comparison.pairs} == {1e-3}
    assert {p.b.params["lr"] for p in comparison.pairs} == {1e-2}
    assert comparison.a_best is not None and comparison.a_best.params["lr"] == 1e-3
    assert comparison.b_best is not None and comparison.b_best.params["lr"] == 1e-2
    # magma 1e-2 - dense 1e-3 per seed: 19 - 20, 20 - 22, 18 - 21
    assert [p.difference for p in comparison.pairs] == [-1.0, -2.0, -3.0]
    assert comparison.difference.mean == -2.0
    assert comparison.difference.high == pytest.approx(-2.0 + T975[2] / math.sqrt(3))
    # maximising, the bests swap: dense 1e-2 (26) against magma 1e-3 (22)
    maximised = paired_comparison(trials, DENSE, MAGMA, "max")
    assert [p.difference for p in maximised.pairs] == [-4.0, -3.0, -5.0]
    with pytest.raises(ValueError, match="mode"):
        paired_comparison(trials, DENSE, MAGMA, "lowest")


def test_pairing_reports_the_seeds_only_one_best_ran():
    rows = Rows()
    d0 = rows.add(20.0, seed=0, variant="dense", lr=1e-3)
    d1 = rows.add(21.0, seed=1, variant="dense", lr=1e-3)
    d2 = rows.add(22.0, seed=2, variant="dense", lr=1e-3)  # magma's best never ran seed 2
    # a configuration with a diverged seed is scored worst: never dense's best
    rows.add(None, seed=0, variant="dense", lr=1e-2, status="diverged")
    rows.add(5.0, seed=1, variant="dense", lr=1e-2)
    m0 = rows.add(19.5, seed=0, variant="magma", lr=1e-3)
    m1 = rows.add(20.0, seed=1, variant="magma", lr=1e-3)
    # a configuration with a failed seed has no score: never magma's best
    rows.add(1.0, seed=0, variant="magma", lr=1e-1)
    rows.add(None, seed=1, variant="magma", lr=1e-1, status="failed")
    rows.add(10.0, seed=0, base="rmsprop", variant="dense", lr=1e-3)  # another arm: ignored
    comparison = paired_comparison(rows.trials(), DENSE, MAGMA, "min")
    assert [(p.a.id, p.b.id) for p in comparison.pairs] == [(d0, m0), (d1, m1)]
    assert comparison.difference.mean == pytest.approx(-0.75)
    assert comparison.unpaired == (d2,)


def test_pairing_across_bases_one_pair_and_none():
    rows = Rows()
    rows.add(20.0, base="adamw", variant="dense", lr=1e-3)
    rows.add(18.0, base="c-adamw", variant="dense", lr=1e-3)
    one = paired_comparison(rows.trials(), DENSE, Arm("c-adamw", "dense"), "min")
    assert one.difference.mean == -2.0 and one.difference.low is None
    none = paired_comparison(rows.trials(), DENSE, MAGMA, "min")
    assert none.pairs == () and none.difference.mean is None and none.unpaired == (100,)
    assert none.a_best is not None and none.b_best is None
    with pytest.raises(ValueError, match="two different arms"):
        paired_comparison(rows.trials(), DENSE, DENSE, "min")


def test_the_robustness_page_pairs_each_seed_once():
    trials = two_lrs_three_seeds().trials()
    data = StudyData(
        id=1,
        name="two-lrs",
        status="complete",
        spec={},
        workload="quadratic",
        metric="val_loss",
        mode="min",
        runs=len(trials),
        error=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        started_at=None,
        finished_at=None,
        trials=trials,
    )
    view = views.robustness(data, views.RobustnessOptions())
    comparison = view.context["comparison"]
    assert (comparison["pairs"], comparison["mean"], comparison["unpaired"]) == (3, -2.0, 0)
    assert (comparison["a_best"], comparison["b_best"]) == ("lr=0.001", "lr=0.01")
    [dots] = view.figures["paired"]().data
    assert list(dots.x) == ["seed 0", "seed 1", "seed 2"]


# --- table -----------------------------------------------------------------------------


def test_table_cells_with_the_paired_comparison_as_their_difference():
    rows = Rows()
    dense_seeds = (10.0, 20.0, 40.0)
    for seed, value in enumerate(dense_seeds):
        rows.add(value, seed=seed, variant="dense", lr=1e-3)
        rows.add(30.0, seed=seed, variant="dense", lr=1e-2)
        # log ratios to dense -0.1, -0.2, -0.3: mean -0.2, SD 0.1
        rows.add(value * math.exp(-0.1 * (seed + 1)), seed=seed, variant="magma", lr=1e-2)
        rows.add(value, seed=seed, variant="skipupdate", lr=1e-3)  # dense's very values
    rows.add(None, base="rmsprop", variant="dense", lr=1e-2, status="diverged")
    rows.add(15.0, base="rmsprop", variant="magma", lr=1e-3)
    rows.add(None, base="muon", variant="magma", lr=1e-3, status="running")
    rows.add(30.0, base="sgd", variant="magma", lr=1e-3, seed=0)
    rows.add(None, base="sgd", variant="magma", lr=1e-3, seed=1, status="pruned")
    table = comparison_table(rows.trials())
    assert table.variants == ("dense", "skipupdate", "magma")
    assert list(table.rows) == ["adamw", "rmsprop", "muon", "sgd"]
    adamw = table.rows["adamw"]
    assert adamw["dense"].value == pytest.approx(70.0 / 3) and adamw["dense"].difference is None
    assert adamw["dense"].decision is None
    assert adamw["dense"].trial_ids == (100, 104, 108)  # lr 1e-3, seeds 0 to 2
    # the cell's interval is the charts' (range_interval): the log-space t interval of
    # 10, 20, 40, exp(ln 20 +- t(0.975, 2) ln 2 / sqrt 3), never below zero, where the
    # symmetric mean +- t reached 23.3 - 4.30 x 15.3 / sqrt 3 = -14.6
    interval = adamw["dense"].interval
    assert interval == range_interval(dense_seeds)
    assert interval.mean == pytest.approx(70.0 / 3)
    half = T975[2] * math.log(2) / math.sqrt(3)
    assert interval.low == pytest.approx(20 * math.exp(-half), rel=1e-9)
    assert interval.high == pytest.approx(20 * math.exp(half), rel=1e-9)
    assert adamw["dense"].best.summary.low < 0 < interval.low
    # paired on the log scale: exp(-0.2) - 1 = -18.1%, +- t(0.975, 2) 0.1 / sqrt(3) = 0.2484:
    # [exp(-0.4484) - 1, exp(0.0484) - 1] = [-36.1%, +5.0%], which holds 0
    magma = adamw["magma"]
    assert magma.decision == "no_detectable_difference"
    assert magma.difference == magma.comparison.summary
    assert magma.difference.startswith(
        "adamw+magma vs adamw: no detectable difference; selection (decides): "
        "-18.1% [-36.1%, +5.0%] no detectable difference (3 seeds; 1% needs "
    )
    assert magma.comparison.selection.test.change == pytest.approx(math.expm1(-0.2))
    # dense's very values: a difference of exactly 0 on every seed, p = 1 (no interval:
    # equal differences need 6 pairs for the exact test's), not a difference
    skip = adamw["skipupdate"]
    assert skip.comparison.selection.test.p_value == 1.0
    assert skip.decision == "no_detectable_difference"
    assert skip.difference == (
        "adamw+skipupdate vs adamw: no detectable difference; selection (decides): "
        "+0.0% [no interval] no detectable difference (3 seeds; 1% needs 6 seeds)"
    )
    rmsprop = table.rows["rmsprop"]
    assert rmsprop["dense"].best is None and rmsprop["dense"].reason == "diverged"
    assert rmsprop["magma"].value == 15.0
    assert rmsprop["magma"].interval.low is None  # one seed: a mean and no interval
    reason = "rmsprop has no configuration that completed on every seed"
    assert rmsprop["magma"].decision == "inconclusive"
    assert rmsprop["magma"].difference == (
        f"rmsprop+magma vs rmsprop: inconclusive (the selection stage has nothing to test: "
        f"{reason}); selection (decides): no test: {reason}"
    )
    assert "skipupdate" not in rmsprop
    muon = table.rows["muon"]["magma"]
    assert muon.value is None and muon.reason == "running" and muon.trial_ids == ()
    assert muon.difference is None and muon.interval is None  # no dense muon to differ from
    # a pruned seed leaves its configuration unscored, whatever the other seed reached
    sgd = table.rows["sgd"]["magma"]
    assert sgd.value is None and sgd.reason == "no configuration completed on every seed"


def test_the_table_is_decided_on_the_confirmation_stage_of_a_study_that_runs_one():
    rows = Rows()
    for seed, value in enumerate((10.0, 20.0, 40.0)):
        rows.add(value, seed=seed, variant="dense", lr=1e-3)
        rows.add(value * math.exp(-0.1 * (seed + 1)), seed=seed, variant="magma", lr=1e-3)
    plain = comparison_table(rows.trials()).rows["adamw"]["magma"]
    assert plain.comparison.confirmation is None
    confirming = comparison_table(rows.trials(), confirming=True).rows["adamw"]["magma"]
    assert confirming.comparison.deciding is confirming.comparison.confirmation
    assert confirming.decision == "inconclusive"
    assert "confirmation (decides): no test: " in confirming.difference


def study_data(trials, spec: dict | None = None) -> StudyData:
    return StudyData(
        id=1,
        name="table",
        status="complete",
        spec=spec or {},
        workload="quadratic",
        metric="val_loss",
        mode="min",
        runs=len(trials),
        error=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        started_at=None,
        finished_at=None,
        trials=trials,
    )


def test_the_table_and_overview_pages_show_the_charts_interval_and_the_decision():
    rows = Rows()
    for seed, value in enumerate((10.0, 20.0, 40.0)):
        rows.add(value, seed=seed, variant="dense", lr=1e-3)
        rows.add(value * math.exp(-0.1 * (seed + 1)), seed=seed, variant="magma", lr=1e-3)
    trials = rows.trials()
    expected = range_interval([10.0, 20.0, 40.0])
    table = views.table(study_data(trials), views.NoOptions())
    [row] = table.context["rows"]
    dense, magma = row["cells"]
    assert (dense["value"], dense["low"], dense["high"]) == (
        expected.mean,
        expected.low,
        expected.high,
    )
    assert dense["verdict"] is None
    assert magma["verdict"]["decision"] == "no_detectable_difference"
    assert magma["verdict"]["deciding_stage"] == "selection"
    assert magma["verdict"]["summary"].startswith("adamw+magma vs adamw: no detectable difference")
    overview = views.overview(study_data(trials), views.NoOptions())
    best = {row["arm"]: row for row in overview.context["best"]}
    assert (best["adamw"]["low"], best["adamw"]["high"]) == (expected.low, expected.high)
    # a bracket study with confirm_seeds is decided on its confirmation stage, run or not
    spec = {"protocol": {"kind": "bracket", "confirm_seeds": 3}}
    confirming = views.table(study_data(trials, spec), views.NoOptions())
    verdict = confirming.context["rows"][0]["cells"][1]["verdict"]
    assert (verdict["decision"], verdict["deciding_stage"]) == ("inconclusive", "confirmation")
    # another protocol's confirm_seeds schedules nothing: no confirmation stage
    spec = {"protocol": {"kind": "none", "confirm_seeds": 3}}
    plain = views.table(study_data(trials, spec), views.NoOptions())
    assert plain.context["rows"][0]["cells"][1]["verdict"]["deciding_stage"] == "selection"


def test_table_of_no_trials_is_empty():
    table = comparison_table([])
    assert table.variants == () and table.rows == {}


# --- mechanism -------------------------------------------------------------------------


def test_mechanism_means_over_an_arms_trials_per_step():
    rows = Rows()
    a = rows.add(20.0, seed=0, variant="magma", lr=1e-3)
    b = rows.add(21.0, seed=1, variant="magma", lr=1e-3)
    dense = rows.add(22.0, variant="dense", lr=1e-3)
    rows.metric(a, 10, **{"alignment/attention": 0.6, "survival/attention": 0.5, "tokens": 5})
    rows.metric(b, 10, **{"alignment/attention": 0.8, "survival/attention": 0.4})
    rows.metric(a, 20, **{"alignment/attention": 0.7, "alignment/mlp": None})
    rows.metric(dense, 10, val_ppl=30.0)
    rows.metric(999, 10, **{"alignment/attention": 0.0})  # not one of the trials
    series = mechanism_series(rows.trials(), rows.metrics())
    assert [(s.arm, s.quantity, s.component) for s in series] == [
        (MAGMA, "alignment", "attention"),
        (MAGMA, "survival", "attention"),
    ]
    alignment, survival = series
    assert alignment.steps == (10, 20) and alignment.trials == (2, 1)
    assert alignment.mean == pytest.approx((0.7, 0.7))
    assert survival.steps == (10,) and survival.mean == pytest.approx((0.45,))
    assert mechanism_series([], rows.metrics()) == []


# --- importance ------------------------------------------------------------------------


def test_importance_ranks_the_parameter_that_decides_the_objective():
    rows = Rows()
    for p in (0.25, 0.5, 0.75):
        for tau in (0.5, 1.0, 2.0, 4.0):
            # p decides the objective; tau barely moves it
            rows.add(20 + 100 * (p - 0.5) ** 2 + 0.01 * tau, variant="magma", p=p, tau=tau)
    rows.add(None, variant="magma", p=0.9, tau=0.1, status="diverged")
    result = parameter_importance(rows.trials())[MAGMA]
    assert result.reason is None and result.configurations == 12
    assert list(result.importances) == ["p", "tau"]
    assert sum(result.importances.values()) == pytest.approx(1.0)
    assert result.importances["p"] > 0.9


def test_importance_with_log_lr_and_categorical_components():
    rows = Rows()
    for lr in (1e-4, 1e-3, 1e-2):
        for components in ("attention", "mlp", "attention+mlp", "all"):
            value = 20 + abs(math.log10(lr) + 3) * 5 + 0.01 * len(components)
            rows.add(value, variant="magma", lr=lr, components=components)
    result = parameter_importance(rows.trials())[MAGMA]
    assert list(result.importances) == ["lr", "components"]


def test_importance_is_empty_with_a_reason_when_it_cannot_be_computed():
    rows = Rows()
    for lr in (1e-3, 1e-2, 1e-1):
        rows.add(20.0 + lr, variant="magma", lr=lr)
    for seed in range(4):
        rows.add(None, seed=seed, variant="dense", lr=1e-3, status="diverged")
    result = parameter_importance(rows.trials())
    assert result[MAGMA].importances == {} and result[MAGMA].configurations == 3
    assert result[MAGMA].reason == "needs 10 stable configurations, has 3"
    assert result[DENSE].reason == "needs 10 stable configurations, has 0"
    single = parameter_importance(rows.trials(), min_configurations=1)
    assert single[MAGMA].importances == {"lr": 1.0}
    same = Rows()
    for seed in range(2):
        same.add(20.0, seed=seed, variant="dense", lr=1e-3)
    only = parameter_importance(same.trials(), min_configurations=1)[DENSE]
    assert only.importances == {} and only.reason == "no searched parameter varies"


# --- overview --------------------------------------------------------------------------


def test_status_counts_include_every_status_in_order():
    rows = Rows()
    rows.add(1.0, variant="dense")
    rows.add(None, variant="magma", status="diverged")
    rows.add(None, variant="magma", lr=1.0, status="diverged")
    counts = status_counts(rows.trials())
    assert list(counts) == list(TrialStatus.values())
    assert counts == {
        "queued": 0,
        "running": 0,
        "complete": 1,
        "pruned": 0,
        "diverged": 2,
        "failed": 0,
        "cancelled": 0,
    }


def test_learning_curves_skip_missing_values():
    rows = Rows()
    a = rows.add(None, variant="magma", status="diverged")
    b = rows.add(20.0, variant="dense")
    rows.add(None, variant="dense", lr=1.0, status="queued")  # no metrics: no curve
    rows.metric(b, 20, val_ppl=25.0, tokens=2000)
    rows.metric(b, 10, val_ppl=40.0, tokens=1000)
    rows.metric(a, 10, val_ppl=45.0, tokens=1000)
    rows.metric(a, 20, val_ppl=None, tokens=2000)  # non-finite, stored as null
    curves = learning_curves(rows.trials(), rows.metrics(), "val_ppl", "tokens")
    assert [(c.trial.id, c.x, c.y) for c in curves] == [
        (a, (1000.0,), (45.0,)),
        (b, (1000.0, 2000.0), (40.0, 25.0)),
    ]
    by_step = learning_curves(rows.trials(), rows.metrics(), "val_ppl")
    assert by_step[1].x == (10.0, 20.0)


def test_best_configuration_curves_summarise_the_seeds_of_each_arms_best():
    rows = Rows()
    best = [
        rows.add(value, seed=seed, variant="dense", lr=1e-3)
        for seed, value in enumerate([30.0, 31.0, 32.0])
    ]
    worse = rows.add(40.0, variant="dense", lr=1e-2)
    diverged = rows.add(None, variant="magma", lr=1e-2, status="diverged")
    # seed by seed, at tokens 1000 and 2000; the third seed's second value was not finite
    values = [(44.0, 30.0), (40.0, 31.0), (42.0, None)]
    for trial_id, (first, second) in zip(best, values, strict=True):
        rows.metric(trial_id, 10, val_ppl=first, tokens=1000)
        rows.metric(trial_id, 20, val_ppl=second, tokens=2000)
    rows.metric(worse, 10, val_ppl=50.0, tokens=1000)
    rows.metric(diverged, 10, val_ppl=60.0, tokens=1000)
    curves = learning_curves(rows.trials(), rows.metrics(), "val_ppl", "tokens")
    [curve] = best_configuration_curves(rows.trials(), curves)
    assert curve.arm == DENSE and curve.configuration.params["lr"] == 1e-3
    assert [seed.trial.id for seed in curve.seeds] == best
    assert curve.x == (1000.0, 2000.0) and curve.n == (3, 2)
    assert curve.median == (42.0, 30.5)
    assert (curve.low, curve.high) == ((40.0, 30.0), (44.0, 31.0))
    # maximising picks lr 1e-2 as dense's best; magma has no best, so no curve
    [other] = best_configuration_curves(rows.trials(), curves, "max")
    assert other.median == (50.0,) and other.n == (1,)
    assert best_configuration_curves(rows.trials(), []) == []
