"""Trials grouped into arms and configurations, and the best configuration of a group.

A configuration is one point of the search space run once per seed. Whether it counts,
and as what, is the study's one rule (``studies.best``): only a configuration whose every
seed completed competes for best; one with a diverged seed is scored worst.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from studies.analysis.intervals import Interval, mean_interval, range_interval
from studies.analysis.objective import Mode, check_mode
from studies.best import STAGE_KEY, Outcome, competes, outcome, pick_best
from studies.records import Arm, TrialRecord

#: the parameters that name an arm rather than place a configuration within it
ARM_PARAMS = ("base", "variant")


@dataclass(frozen=True)
class Configuration:
    """One configuration of an arm over its seeds."""

    arm: Arm
    #: the trials' shared ``configuration`` number
    number: int
    #: its seeds, in seed order
    trials: tuple[TrialRecord, ...]
    #: mean and interval over the seeds that completed
    summary: Interval
    #: how many seeds diverged
    diverged: int

    @cached_property
    def interval(self) -> Interval:
        """The same mean with the interval charts draw (``range_interval``): in the
        metric's range, where ``summary``'s symmetric t interval can cross zero."""
        return range_interval([trial.result for trial in self.trials if trial.result is not None])

    @property
    def params(self) -> dict[str, Any]:
        """The searched values, the same for every seed."""
        return self.trials[0].params

    @property
    def outcome(self) -> Outcome:
        """pending, diverged, pruned, failed or complete (``studies.best.outcome``)."""
        return outcome([(trial.status, trial.objective) for trial in self.trials])

    @property
    def finished(self) -> bool:
        """Whether it has a score: every seed completed, or one diverged."""
        return self.outcome in ("complete", "diverged")

    @property
    def eligible(self) -> bool:
        """Every seed completed, and it is no confirmation rerun: it competes for best."""
        return competes(self.outcome, self.params)

    @property
    def trial_ids(self) -> tuple[int, ...]:
        return tuple(trial.id for trial in self.trials)

    def value(self, name: str) -> Any:
        return self.trials[0].value(name)


def group_by_arm(trials: Iterable[TrialRecord]) -> dict[Arm, list[TrialRecord]]:
    """Trials per arm, arms in canonical order (bases, then dense, skipupdate, magma)."""
    groups: dict[Arm, list[TrialRecord]] = {}
    for trial in trials:
        groups.setdefault(trial.arm, []).append(trial)
    return {arm: groups[arm] for arm in sorted(groups, key=lambda arm: arm.order)}


def configurations(trials: Iterable[TrialRecord]) -> list[Configuration]:
    """The configurations of one study's trials, by arm, then configuration number."""
    groups: dict[int, list[TrialRecord]] = {}
    for trial in trials:
        groups.setdefault(trial.configuration, []).append(trial)
    result = []
    for number, seeds in groups.items():
        seeds.sort(key=lambda trial: trial.seed_index)
        results = [trial.result for trial in seeds if trial.result is not None]
        result.append(
            Configuration(
                arm=seeds[0].arm,
                number=number,
                trials=tuple(seeds),
                summary=mean_interval(results),
                diverged=sum(trial.diverged for trial in seeds),
            )
        )
    result.sort(key=lambda config: (config.arm.order, config.number))
    return result


def best_configuration(candidates: Iterable[Configuration], mode: Mode) -> Configuration | None:
    """The eligible configuration with the best mean (the lower number on a tie); None when
    no configuration is eligible: ``studies.best.pick_best``, the rule every reader uses."""
    check_mode(mode)
    eligible = [config for config in candidates if config.eligible]
    return pick_best(eligible, mode, lambda c: c.summary.mean, lambda c: c.number)


def best_per_arm(trials: Iterable[TrialRecord], mode: Mode) -> dict[Arm, Configuration | None]:
    """Each arm's best configuration; None for an arm with no eligible configuration, so
    that an arm which only diverged still shows up."""
    return {
        arm: best_configuration(configurations(arm_trials), mode)
        for arm, arm_trials in group_by_arm(trials).items()
    }


def best_per_cell(
    trials: Iterable[TrialRecord], x: str, y: str, mode: Mode
) -> dict[tuple[Any, Any], Configuration | None]:
    """The best configuration in each (x, y) cell over every other parameter, as in the
    paper's Figure A1 where each (p, tau) cell shows its best learning rate. A cell that
    was run but has no eligible configuration maps to None."""
    cells: dict[tuple[Any, Any], list[Configuration]] = {}
    for config in configurations(trials):
        if config.finished:
            cells.setdefault((config.value(x), config.value(y)), []).append(config)
    return {cell: best_configuration(members, mode) for cell, members in cells.items()}


def searched_values(configs: Sequence[Configuration]) -> dict[str, list[Any]]:
    """Every searched parameter other than the arm's, with its distinct values in order
    (numbers before strings). A confirmation stage's marker (``studies.best.STAGE_KEY``)
    says which runs re-check a choice, not where a search went: it is no searched value."""
    values: dict[str, set[Any]] = {}
    for config in configs:
        for name, value in config.params.items():
            if name not in ARM_PARAMS and name != STAGE_KEY:
                values.setdefault(name, set()).add(value)
    return {name: sorted(found, key=sort_key) for name, found in sorted(values.items())}


def sort_key(value: Any) -> tuple[bool, Any]:
    """Orders a parameter's values: numbers by size, then strings alphabetically."""
    return (isinstance(value, str), value)
