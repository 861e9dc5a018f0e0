"""The bracket protocol's planner (``studies.bracket``), on hand-computed cases: no Ray,
no database. Grid: lr_start 1e-3, half-decade steps, so index k is 1e-3 x 10^(k/2):
k=-2 1e-4, -1 3.16228e-4, 0 1e-3, 1 3.16228e-3, 2 1e-2, 3 3.16228e-2."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from studies.best import Score
from studies.bracket import Plan, index_of, initial_indices, lr_at, plan
from studies.spec import Protocol

PROTOCOL = Protocol(kind="bracket", lr_start=1e-3, lr_step_decades=0.5, initial_points=3)
DIVERGED = Score("diverged", math.inf)

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
