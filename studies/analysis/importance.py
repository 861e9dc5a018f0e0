"""Which searched parameters matter, per arm, by Optuna's importance evaluators.

Each arm's stable configurations (mean over seeds) become the trials of an in-memory
Optuna study, over the parameters that actually vary among them; the evaluator then
says how much each parameter decides whether a configuration is among the best.
PED-ANOVA is the default: it needs no scikit-learn and copes with small grids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.importance import BaseImportanceEvaluator, PedAnovaImportanceEvaluator

from studies.analysis.arms import Configuration, configurations, group_by_arm, searched_values
from studies.analysis.objective import Mode, check_mode
from studies.records import Arm, TrialRecord

#: scale parameters, searched (and judged) on a log scale
LOG_SCALE = frozenset({"lr"})


@dataclass(frozen=True)
class Importance:
    arm: Arm
    #: parameter -> importance, summing to 1, most important first; empty with a reason
    importances: dict[str, float]
    #: the stable configurations the importances were computed from
    configurations: int
    reason: str | None = None


def parameter_importance(
    trials: Iterable[TrialRecord],
    mode: Mode = "min",
    min_configurations: int = 10,
    evaluator: BaseImportanceEvaluator | None = None,
) -> dict[Arm, Importance]:
    """Per arm, the importance of each searched parameter that varies.

    Configurations with a diverged seed are left out (they have no objective to rank).
    Below ``min_configurations`` stable configurations the result is empty: PED-ANOVA
    contrasts the top 10% of configurations with all of them, and with fewer than ten
    the "top 10%" is a single configuration, which makes any ranking noise.
    """
    check_mode(mode)
    result = {}
    for arm, arm_trials in group_by_arm(trials).items():
        stable = [config for config in configurations(arm_trials) if config.eligible]
        varying = {k: v for k, v in searched_values(stable).items() if len(v) > 1}
        if len(stable) < min_configurations:
            reason = f"needs {min_configurations} stable configurations, has {len(stable)}"
        elif not varying:
            reason = "no searched parameter varies"
        else:
            importances = _evaluate(stable, varying, mode, evaluator)
            result[arm] = Importance(arm, importances, len(stable))
            continue
        result[arm] = Importance(arm, {}, len(stable), reason)
    return result


def _evaluate(
    configs: Sequence[Configuration],
    varying: dict[str, list[Any]],
    mode: Mode,
    evaluator: BaseImportanceEvaluator | None,
) -> dict[str, float]:
    distributions = {name: _distribution(name, values) for name, values in varying.items()}
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for config in configs:
        study.add_trial(
            optuna.trial.create_trial(
                value=config.summary.mean,
                params={name: config.params[name] for name in distributions},
                distributions=distributions,
            )
        )
    return optuna.importance.get_param_importances(
        study, evaluator=evaluator or PedAnovaImportanceEvaluator(), params=list(distributions)
    )


def _distribution(name: str, values: list[Any]) -> BaseDistribution:
    """Numbers span a float range (log for scale parameters); anything else is categorical."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        low, high = float(values[0]), float(values[-1])
        return FloatDistribution(low, high, log=name in LOG_SCALE and low > 0)
    return CategoricalDistribution(values)
