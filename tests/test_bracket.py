"""The bracket protocol's planner (``studies.bracket``), on hand-computed cases: no Ray,
no database. Grid: lr_start 1e-3, half-decade steps, so index k is 1e-3 x 10^(k/2):
k=-2 1e-4, -1 3.16228e-4, 0 1e-3, 1 3.16228e-3, 2 1e-2, 3 3.16228e-2."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from studies.best import Score
from studies.bracket import (
    BRACKET_CLOSING_OUTCOMES,
    Plan,
    closes_bracket,
    index_of,
    initial_indices,
    is_bracketed,
    lr_at,
    plan,
)
from studies.spec import Protocol

PROTOCOL = Protocol(kind="bracket", lr_start=1e-3, lr_step_decades=0.5, initial_points=3)
DIVERGED = Score("diverged", math.inf)
FAILED = Score("failed", None)
PRUNED = Score("pruned", None)

#: an arm's outcome at grid index k
Curve = Callable[[int], Score]


def complete(value: float) -> Score:
    return Score("complete", value)


def run(
    curves: list[Curve], protocol: Protocol = PROTOCOL, seeds: int = 2, budget: int = 10_000
) -> tuple[Plan, list[list[int]]]:
    """Run the planner to the end against ``curves``: the last plan, and each round's new
    points per arm (grid indices)."""
    points: list[dict[int, Score]] = [{} for _ in curves]
    rounds: list[list[int]] = []
    while True:
        used = seeds * sum(len(p) for p in points)
        result = plan(protocol, points, "min", seeds=seeds, runs_used=used, budget=budget)
        if result.done:
            return result, rounds
        new = [[index_of(protocol, lr) for lr in lrs] for lrs in result.next_lrs]
        rounds.append([k for ks in new for k in ks])
        for arm, ks in enumerate(new):
            for k in ks:
                points[arm][k] = curves[arm](k)


def test_grid_is_half_decades_around_the_start():
    assert initial_indices(PROTOCOL) == [-1, 0, 1]
    assert [lr_at(PROTOCOL, k) for k in range(-2, 4)] == [
        1e-4, 3.16228e-4, 1e-3, 3.16228e-3, 1e-2, 3.16228e-2,
    ]  # fmt: skip
    assert index_of(PROTOCOL, 3.16228e-2) == 3
    assert initial_indices(PROTOCOL.model_copy(update={"initial_points": 4})) == [-1, 0, 1, 2]


def test_extends_twice_on_the_side_of_the_best_with_equal_runs_per_arm():
    # arm 0: (k - 2)^2, best at k=2 (1e-2): round 1 {-1: 9, 0: 4, 1: 1} has its best at
    # the top edge, so k=2 (0) is added, still the top, so k=3 (1): bracketed at k=2.
    # arm 1: {-1: 2, 0: 1, 1: 3} is bracketed at once; it widens on its better edge (k=-1,
    # 2 < 3) so both arms get one run per round: k=-2 (1.5 < 3, still the better edge), k=-3.
    arm0: Curve = lambda k: complete((k - 2) ** 2)  # noqa: E731
    arm1: Curve = lambda k: complete({-1: 2.0, 0: 1.0, 1: 3.0}.get(k, 1.5))  # noqa: E731
    last, rounds = run([arm0, arm1])
    assert rounds == [[-1, 0, 1, -1, 0, 1], [2, -2], [3, -3]]
    assert [arm.status for arm in last.arms] == ["bracketed", "bracketed"]
    assert last.arms[0].best_lr == 1e-2 and last.arms[0].best_value == 0
    assert last.arms[0].lrs == (3.16228e-4, 1e-3, 3.16228e-3, 1e-2, 3.16228e-2)
    assert last.arms[1].best_lr == 1e-3 and last.arms[1].best_value == 1


def test_an_arm_that_diverges_at_the_top_is_bracketed_there():
    # {-1: 3, 0: 2, 1: 1}: best at the top edge; k=2 diverges (worse), so k=1 is bracketed
    curve: Curve = lambda k: DIVERGED if k >= 2 else complete(2.0 - k)  # noqa: E731
    last, rounds = run([curve])
    assert rounds == [[-1, 0, 1], [2]]
    assert last.arms[0].status == "bracketed"
    assert last.arms[0].best_lr == 3.16228e-3 and last.arms[0].best_value == 1


def test_an_arm_with_no_complete_point_extends_down():
    # everything from k=0 up diverges: k=-1 is the only complete point, at the bottom edge
    curve: Curve = lambda k: DIVERGED if k >= 0 else complete(1.0 + (k + 1) ** 2)  # noqa: E731
    last, rounds = run([curve])
    assert rounds == [[-1, 0, 1], [-2]]
    assert last.arms[0].best_lr == 3.16228e-4 and last.arms[0].status == "bracketed"
    all_diverge = plan(PROTOCOL, [{k: DIVERGED for k in (-1, 0, 1)}], "min", seeds=1,
                       runs_used=3, budget=100)  # fmt: skip
    assert all_diverge.next_lrs == [[1e-4]] and all_diverge.arms[0].best_lr is None


def test_the_server_cap_stops_extension_and_is_recorded():
    # 2 arms x 3 LRs x 2 seeds = 12 runs; a round costs 2 x 2 = 4 more, so a budget of 15
    # allows none: arm 0 (best at the top edge) stops unbracketed, arm 1 is bracketed
    arm0: Curve = lambda k: complete(-k)  # noqa: E731
    arm1: Curve = lambda k: complete(abs(k))  # noqa: E731
    last, rounds = run([arm0, arm1], budget=15)
    assert rounds == [[-1, 0, 1, -1, 0, 1]]
    assert [arm.status for arm in last.arms] == ["caps", "bracketed"]
    assert last.arms[0].best_lr == 3.16228e-3
    # a budget of 16 allows exactly one extension round (16 runs), then the cap
    _, rounds = run([arm0, arm1], budget=16)
    assert rounds == [[-1, 0, 1, -1, 0, 1], [2, -2]]


def test_max_extensions_stops_an_unbracketed_arm():
    protocol = PROTOCOL.model_copy(update={"max_extensions": 1})
    last, rounds = run([lambda k: complete(-k)], protocol=protocol)
    assert rounds == [[-1, 0, 1], [2]]
    assert last.arms[0].status == "max_extensions" and last.arms[0].best_lr == 1e-2


def test_only_a_complete_or_diverged_lr_closes_a_bracket():
    assert BRACKET_CLOSING_OUTCOMES == ("complete", "diverged")
    outcomes = ("complete", "diverged", "pruned", "failed", "pending")
    assert {o: closes_bracket(o) for o in outcomes} == {
        "complete": True, "diverged": True, "pruned": False, "failed": False, "pending": False,
    }  # fmt: skip
    # by LR, as the verdicts ask: a closing LR on each side, wherever it lies
    tested = [(3e-4, "complete"), (1e-3, "complete"), (3e-3, "failed")]
    assert not is_bracketed(1e-3, tested)
    assert not is_bracketed(1e-3, [*tested[:2], (3e-3, "pruned")])
    assert is_bracketed(1e-3, [*tested, (1e-2, "diverged")])
    assert not is_bracketed(3e-4, [*tested, (1e-2, "diverged")])  # nothing below it
    assert not is_bracketed(1e-3, [(1e-3, "complete")])


@pytest.mark.parametrize("unscored", [FAILED, PRUNED], ids=["failed", "pruned"])
def test_a_failed_or_pruned_neighbour_does_not_close_the_bracket(unscored: Score):
    # {-1: 3, 0: 2, 1: failed/pruned}: k=0 has no closing LR above it, so the search
    # extends up past k=1 to k=2 (2.5, worse): bracketed at k=0 by k=-1 and k=2
    top: Curve = lambda k: unscored if k == 1 else complete({-1: 3.0, 0: 2.0}.get(k, 2.5))  # noqa: E731
    last, rounds = run([top])
    assert rounds == [[-1, 0, 1], [2]]
    assert last.arms[0].status == "bracketed" and last.arms[0].best_lr == 1e-3
    assert last.arms[0].lrs == (3.16228e-4, 1e-3, 3.16228e-3, 1e-2)
    # {-1: failed/pruned, 0: 2, 1: 3}: nothing closes below k=0, so it extends down to k=-2
    bottom: Curve = lambda k: unscored if k == -1 else complete({0: 2.0, 1: 3.0}.get(k, 4.0))  # noqa: E731
    last, rounds = run([bottom])
    assert rounds == [[-1, 0, 1], [-2]]
    assert last.arms[0].status == "bracketed" and last.arms[0].best_lr == 1e-3
    # with no extension allowed the unclosed side leaves it unbracketed, stopped there
    protocol = PROTOCOL.model_copy(update={"max_extensions": 0})
    last, rounds = run([top], protocol=protocol)
    assert rounds == [[-1, 0, 1]]
    assert last.arms[0].status == "max_extensions" and last.arms[0].best_lr == 1e-3


def test_neither_side_closed_extends_down_then_up_past_unscored_neighbours():
    # {-1: failed, 0: 2, 1: failed}: down first (k=-2: 3), then up past k=1 (k=2: 4)
    values = {0: 2.0, -2: 3.0}
    curve: Curve = lambda k: FAILED if k in (-1, 1) else complete(values.get(k, 4.0))  # noqa: E731
    last, rounds = run([curve])
    assert rounds == [[-1, 0, 1], [-2], [2]]
    assert last.arms[0].status == "bracketed" and last.arms[0].best_lr == 1e-3


def test_an_unclosed_arm_keeps_every_arm_extending():
    # arm 0 {-1: 1, 0: 0, 1: 1} is bracketed at once (it widens down: equal edges);
    # arm 1 {-1: 2, 0: 1, 1: failed} is not, and extends up past k=1 to k=2 (2: worse)
    arm0: Curve = lambda k: complete(abs(k))  # noqa: E731
    arm1: Curve = lambda k: FAILED if k == 1 else complete({0: 1.0}.get(k, 2.0))  # noqa: E731
    last, rounds = run([arm0, arm1])
    assert rounds == [[-1, 0, 1, -1, 0, 1], [-2, 2]]
    assert [arm.status for arm in last.arms] == ["bracketed", "bracketed"]
    assert [arm.best_lr for arm in last.arms] == [1e-3, 1e-3]


def test_a_round_waits_for_every_result():
    pending = plan(PROTOCOL, [{-1: complete(1), 0: Score("pending", None)}], "min",
                   seeds=1, runs_used=2, budget=100)  # fmt: skip
    assert pending.waiting and not pending.done and pending.next_lrs == []


def test_maximising_prefers_the_higher_value():
    # mode max: {-1: 1, 0: 3, 1: 2} is bracketed at k=0
    points = {-1: complete(1), 0: complete(3), 1: complete(2)}
    result = plan(PROTOCOL, [points], "max", seeds=1, runs_used=3, budget=100)
    assert result.done and result.arms[0].best_lr == 1e-3


@pytest.mark.parametrize("start", [1e-3, 0.02])
def test_index_of_inverts_lr_at(start: float):
    protocol = PROTOCOL.model_copy(update={"lr_start": start, "lr_step_decades": 0.25})
    assert [index_of(protocol, lr_at(protocol, k)) for k in range(-8, 9)] == list(range(-8, 9))
