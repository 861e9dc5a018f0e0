"""Optuna samplers, search distributions and Optuna trials for a study spec.

SQL is the only store of trial state: an Optuna study is always built from it, in memory
for the searcher (``in_memory_study``) or in a user's storage for ``magma-bench export
--format optuna``. Both build it with ``optuna_trials``, so both show Optuna exactly what
``studies.best.score`` makes of each configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from studies import bracket
from studies.best import CONFIRM_STAGE, STAGE_KEY, Score, score
from studies.spec import Range, StudySpec

#: a configuration's params and its seed trials' ``(status, objective)``
Configuration = tuple[dict[str, Any], list[tuple[str, float | None]]]

#: the Optuna state of each configuration outcome of ``studies.best`` (pending: still running)
OPTUNA_STATES: dict[str, TrialState] = {
    "pending": TrialState.RUNNING,
    "complete": TrialState.COMPLETE,
    "diverged": TrialState.COMPLETE,  # told the worst value
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """Only the searched parameters: fixed scalars are not Optuna's business. A bracket
    study adds the LR, over every grid point it may reach, and its confirmation stage."""
    result: dict[str, BaseDistribution] = {}
    for name, value in spec.search.items():
        if isinstance(value, Range):
            result[name] = FloatDistribution(value.low, value.high, log=value.log)
        elif isinstance(value, list):
            result[name] = CategoricalDistribution(value)
    if spec.bracket:
        reach = bracket.initial_indices(spec.protocol)
        extensions = spec.protocol.max_extensions
        low = bracket.lr_at(spec.protocol, reach[0] - extensions)
        high = bracket.lr_at(spec.protocol, reach[-1] + extensions)
        result["lr"] = FloatDistribution(low, high, log=True)
        result[STAGE_KEY] = CategoricalDistribution([CONFIRM_STAGE])
    return result


def direction(spec: StudySpec) -> str:
    return "minimize" if spec.mode == "min" else "maximize"


def make_sampler(spec: StudySpec, created: int = 0) -> optuna.samplers.BaseSampler:
    """Grid studies enqueue every point themselves, so any sampler would do for them.

    A sampler's random stream restarts from its seed whenever it is built, so one built
    for a study that already has ``created`` configurations (a restarted driver) is seeded
    with ``base_seed + created``: from ``base_seed`` it would propose the study's first
    random configurations again."""
    seed = spec.base_seed + created
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, spec.configurations))
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if spec.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def optuna_state(result: Score) -> tuple[TrialState, float | None]:
    """What Optuna is told of a configuration: its state and value (complete: the mean
    objective; diverged: the worst value; otherwise none)."""
    state = OPTUNA_STATES[result.outcome]
    return state, result.value if state == TrialState.COMPLETE else None


def optuna_trials(
    spec: StudySpec, configurations: Mapping[int, Configuration]
) -> list[FrozenTrial]:
    """One Optuna trial per configuration number, in order, so that trial numbers are
    configuration numbers. A number without trials (an earlier design's driver died
    between Optuna and SQL) becomes a failed trial without params."""
    searched = distributions(spec)
    trials = []
    for number in range(max(configurations, default=-1) + 1):
        if number not in configurations:
            trials.append(create_trial(state=TrialState.FAIL))
            continue
        params, seeds = configurations[number]
        state, value = optuna_state(score(seeds, spec.mode))
        # a bracket study's selection configurations have no stage
        present = {name: searched[name] for name in params}
        trials.append(create_trial(state=state, value=value, params=params, distributions=present))
    return trials


def in_memory_study(spec: StudySpec, configurations: Mapping[int, Configuration]) -> optuna.Study:
    """The study's Optuna state, rebuilt from SQL, with a sampler that carries on from it."""
    trials = optuna_trials(spec, configurations)
    sampler = make_sampler(spec, len(trials))
    study = optuna.create_study(sampler=sampler, direction=direction(spec))
    study.add_trials(trials)
    if isinstance(sampler, optuna.samplers.QMCSampler):
        # QMCSampler counts its draws in a study attribute that a rebuilt study lacks, and
        # would start its sequence over. Every configuration after the first drew at most
        # once, so counting that many draws can skip points but never repeat one.
        for _ in range(len(trials) - 1):
            sampler._find_sample_id(study, distributions(spec))
    return study
