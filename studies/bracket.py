"""The bracket protocol's planner: which learning rates each arm runs next, and when to stop.

Pure (no I/O): the searcher hands it each arm's scored LR points and runs what it returns.

Every arm tunes its LR on the same log grid, ``lr_start x 10^(k lr_step_decades)`` for
integer ``k``. The first round runs ``initial_points`` LRs around ``lr_start``. An arm's best
is the best score of its points by ``studies.best`` (only complete points compete; ties: the
lower LR); it is *bracketed* when, on each side of its best, an LR closes the bracket
(``closes_bracket``: it completed, so it is no better, or it diverged, so it is worse). A
failed or pruned LR closes nothing: it says nothing about how that LR does, so the search
extends past it. This is the one bracket rule: the verdicts' warnings use it too.

While some arm is not bracketed, the next round gives *every* arm one more LR, so tuning
budgets stay equal across arms: an unbracketed arm extends on the side that lacks a closing
LR (an arm with no complete point, below its lowest LR; one with neither side closed,
below first); a bracketed arm widens on the side of its better edge. Every round adds a
new grid index per arm, so rounds stop when every arm is bracketed, after
``max_extensions`` rounds, or when the next round would pass the run budget (the server
cap); each arm records why it stopped. A study's best LR is chosen on at least
``studies.spec.BRACKET_MIN_SEEDS`` seeds (the spec refuses fewer).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from studies.best import Outcome, Score, worst
from studies.spec import Protocol
from worker.contract import Mode

#: the outcomes of an LR that close a bracket on its side of the best: complete (the best,
#: chosen among complete points, is no worse) or diverged (worse than any value). Failed,
#: pruned and pending LRs do not: they say nothing (yet) about how that LR does.
BRACKET_CLOSING_OUTCOMES: tuple[Outcome, ...] = ("complete", "diverged")


def closes_bracket(outcome: str) -> bool:
    """Whether an LR with this outcome (``studies.best.Outcome``) closes a bracket on its
    side of the best: the one bracket rule, for the planner and the verdicts' warnings."""
    return outcome in BRACKET_CLOSING_OUTCOMES


def is_bracketed(best: float, points: Iterable[tuple[float, str]]) -> bool:
    """Whether ``best`` (an LR, or its grid index) is bracketed by ``points`` ((LR or grid
    index, outcome) pairs, the best's own among them or not): some point below it and some
    above it close the bracket (``closes_bracket``)."""
    closing = [x for x, outcome in points if closes_bracket(outcome)]
    return any(x < best for x in closing) and any(x > best for x in closing)


#: bracketed: an LR on each side of its best closes the bracket (``is_bracketed``);
#: max_extensions / caps: stopped by that limit unbracketed; running: another round is planned
Status = Literal["bracketed", "max_extensions", "caps", "running"]


def lr_at(protocol: Protocol, k: int) -> float:
    """The grid's ``k``-th LR, to 6 significant digits so that stored params read well
    and map back to ``k`` exactly."""
    return float(f"{protocol.lr_start * 10 ** (k * protocol.lr_step_decades):.6g}")


def index_of(protocol: Protocol, lr: float) -> int:
    return round(math.log10(lr / protocol.lr_start) / protocol.lr_step_decades)


def initial_indices(protocol: Protocol) -> list[int]:
    """``initial_points`` grid indices centred on ``lr_start`` (even counts lean up)."""
    first = -((protocol.initial_points - 1) // 2)
    return list(range(first, first + protocol.initial_points))


@dataclass(frozen=True)
class ArmBracket:
    """One arm's tuning so far."""

    status: Status
    #: every LR it ran, ascending
    lrs: tuple[float, ...]
    #: its best LR and score (None: no point completed)
    best_lr: float | None
    best_value: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "lrs": list(self.lrs),
            "best_lr": self.best_lr,
            "best_value": self.best_value,
        }


@dataclass(frozen=True)
class Plan:
    #: per arm, in the order given, the LRs to run next (none when ``done`` or waiting)
    next_lrs: list[list[float]]
    arms: list[ArmBracket]
    #: no more selection rounds: every arm is bracketed or a limit stopped it
    done: bool = False
    #: some point is still running: the next round needs its result
    waiting: bool = False


def _sort_key(result: Score, mode: Mode) -> float:
    """Smaller is better, for the side a bracketed arm widens on: unscored points (failed,
    pruned) rank with diverged ones. Whether an arm is bracketed is ``is_bracketed``'s."""
    value = result.value if result.value is not None else worst(mode)
    return value if mode == "min" else -value


def _arm(protocol: Protocol, points: Mapping[int, Score], mode: Mode) -> tuple[ArmBracket, int]:
    """The arm's state and the grid index it would extend to (always one not run yet)."""
    low, high = min(points), max(points)
    complete = [k for k in sorted(points) if points[k].eligible]
    lrs = tuple(lr_at(protocol, k) for k in sorted(points))
    if not complete:
        return ArmBracket("running", lrs, None, None), low - 1
    best = min(complete, key=lambda k: (_sort_key(points[k], mode), k))
    arm = ArmBracket("running", lrs, lr_at(protocol, best), points[best].value)
    outcomes = [(k, result.outcome) for k, result in points.items()]
    if is_bracketed(best, outcomes):
        edges = (_sort_key(points[low], mode), _sort_key(points[high], mode))
        return replace(arm, status="bracketed"), high + 1 if edges[1] < edges[0] else low - 1
    # extend on the side with no closing LR, past any failed or pruned one (below first)
    closed_below = any(k < best and closes_bracket(o) for k, o in outcomes)
    return arm, high + 1 if closed_below else low - 1


def plan(
    protocol: Protocol,
    arms: Sequence[Mapping[int, Score]],
    mode: Mode,
    *,
    seeds: int,
    runs_used: int,
    budget: int,
) -> Plan:
    """The next round for ``arms`` (each: grid index -> its configuration's score).

    ``runs_used``: selection runs made so far; ``budget``: the most selection runs the
    study may make (the server cap, less the confirmation's)."""
    if not any(arms):
        first = [lr_at(protocol, k) for k in initial_indices(protocol)]
        return Plan([first for _ in arms], [ArmBracket("running", (), None, None)] * len(arms))
    if any(result.outcome == "pending" for points in arms for result in points.values()):
        return Plan([], [], waiting=True)
    states = [_arm(protocol, points, mode) for points in arms]
    extensions = max(len(points) for points in arms) - protocol.initial_points
    if all(state.status == "bracketed" for state, _ in states):
        return Plan([], [state for state, _ in states], done=True)
    stop: Status | None = None
    if extensions >= protocol.max_extensions:
        stop = "max_extensions"
    elif runs_used + len(arms) * seeds > budget:
        stop = "caps"
    if stop is not None:
        final = [
            state if state.status == "bracketed" else replace(state, status=stop)
            for state, _ in states
        ]
        return Plan([], final, done=True)
    return Plan([[lr_at(protocol, k)] for _, k in states], [state for state, _ in states])
