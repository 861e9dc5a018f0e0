"""The one rule for scoring a configuration and picking a study's best, used by the API's
``/best``, ``magma-bench status``, the export, the dashboards and the searcher (which tells
Optuna the same score). Its SQL twin is
``studies.storage.repository.best_sql.best_configuration_number``.

A configuration is one point of the search space, run once per seed. Its outcome, from its
seed trials' statuses (first match wins):

- **pending**: a seed is still queued or running. Not scored yet.
- **diverged**: a seed diverged. Scored worst (``+inf`` when minimising, ``-inf`` when
  maximising): a setting that blows up on some seeds is not one a practitioner would pick,
  and a mean over the seeds that survived would flatter it.
- **pruned**: a seed was stopped early by the scheduler (ASHA), which judged it worse than
  its peers at a rung. Not scored: it has no final value.
- **failed**: a seed's process failed (or it was cancelled). Not scored: the run says
  nothing about the configuration.
- **complete**: every seed completed. Scored by the mean objective over the seeds.

Only complete configurations compete for best; the best has the lowest (``min``) or highest
(``max``) mean, ties going to the earliest configuration. A bracket study's confirmation
configurations (params ``stage: confirm``) never compete: they re-measure a choice made on
other seeds, and letting them choose again would bring back the winner's curse they remove.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from worker.contract import Mode, TrialStatus

Outcome = Literal["pending", "diverged", "pruned", "failed", "complete"]
#: the params entry that marks a confirmation configuration
STAGE_KEY, CONFIRM_STAGE = "stage", "confirm"
#: trial statuses that leave a configuration unscored, by the outcome they give
_UNSCORED: tuple[tuple[Outcome, tuple[str, ...]], ...] = (
    ("pending", (TrialStatus.queued.value, TrialStatus.running.value)),
    ("diverged", (TrialStatus.diverged.value,)),
    ("pruned", (TrialStatus.pruned.value,)),
    ("failed", (TrialStatus.failed.value, TrialStatus.cancelled.value)),
)


@dataclass(frozen=True)
class Score:
    """A configuration's outcome and, where it has one, its score."""

    outcome: Outcome
    #: the mean objective (complete), the worst value (diverged), else None
    value: float | None

    @property
    def eligible(self) -> bool:
        """Whether it competes for best: every seed completed."""
        return self.outcome == "complete"


def is_confirmation(params: dict[str, Any]) -> bool:
    """Whether a configuration reruns a choice on fresh seeds (never a candidate)."""
    return params.get(STAGE_KEY) == CONFIRM_STAGE


def runs_confirmation(spec: Mapping[str, Any]) -> bool:
    """Whether a study (its spec as stored) runs a confirmation stage: a bracket protocol
    with ``confirm_seeds`` > 0. Only the bracket planner schedules one, so another
    protocol's ``confirm_seeds`` confirms nothing. The verdicts of such a study are decided
    on that stage, even before it has run."""
    protocol = spec.get("protocol") or {}
    return protocol.get("kind") == "bracket" and bool(protocol.get("confirm_seeds"))


def competes(result: Outcome, params: dict[str, Any]) -> bool:
    """Whether a configuration competes for best: every seed completed, and it is no
    confirmation rerun."""
    return result == "complete" and not is_confirmation(params)


C = TypeVar("C")


def pick_best(
    candidates: Iterable[C], mode: Mode, mean: Callable[[C], float], number: Callable[[C], int]
) -> C | None:
    """The best of configurations that compete: the lowest (``min``) or highest (``max``)
    mean, ties going to the lower configuration number; None when there is none. Every
    reader that names a best configuration picks it here."""
    sign = 1.0 if mode == "min" else -1.0
    return min(candidates, key=lambda c: (sign * mean(c), number(c)), default=None)


def worst(mode: Mode) -> float:
    return math.inf if mode == "min" else -math.inf


def outcome(seeds: Sequence[tuple[str, float | None]]) -> Outcome:
    """The outcome of one configuration from its seeds' ``(status, objective)``."""
    statuses = {status for status, _ in seeds}
    for result, members in _UNSCORED:
        if statuses & set(members):
            return result
    if not seeds or any(v is None or not math.isfinite(v) for _, v in seeds):
        # a completed trial always reports a finite objective; one that did not is unusable
        return "failed"
    return "complete"


def score(seeds: Sequence[tuple[str, float | None]], mode: Mode) -> Score:
    """The score of one configuration from its seeds' ``(status, objective)``."""
    result = outcome(seeds)
    if result == "complete":
        return Score(result, statistics.fmean(float(v) for _, v in seeds))  # type: ignore[arg-type]
    return Score(result, worst(mode) if result == "diverged" else None)


class TrialLike(Protocol):
    id: int
    configuration: int
    status: str
    objective: float | None
    params: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class BestConfiguration:
    configuration: int
    objective: float  # mean over seeds
    objective_std: float | None  # sample standard deviation; None with one seed
    trial_ids: list[int]
    objectives: list[float]
    params: dict[str, Any]
    config: dict[str, Any]  # the first seed's full trial config


def best_configuration(trials: Iterable[TrialLike], mode: Mode = "min") -> BestConfiguration | None:
    """The best complete configuration among ``trials`` (any number of configurations)."""
    by_configuration: dict[int, list[TrialLike]] = {}
    for trial in trials:
        by_configuration.setdefault(trial.configuration, []).append(trial)
    candidates = []
    for configuration, group in by_configuration.items():
        group = sorted(group, key=lambda t: t.id)
        result = score([(t.status, t.objective) for t in group], mode)
        if not competes(result.outcome, group[0].params):
            continue
        objectives = [float(t.objective) for t in group]  # type: ignore[arg-type]
        candidates.append(
            BestConfiguration(
                configuration=configuration,
                objective=float(result.value),  # type: ignore[arg-type]
                objective_std=statistics.stdev(objectives) if len(objectives) > 1 else None,
                trial_ids=[t.id for t in group],
                objectives=objectives,
                params=dict(group[0].params),
                config=dict(group[0].config),
            )
        )
    return pick_best(candidates, mode, lambda c: c.objective, lambda c: c.configuration)
