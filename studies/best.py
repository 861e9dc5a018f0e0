"""The best configuration of a study, as the API exports it.

Only configurations whose every seed trial finished ``complete`` compete (a pruned,
diverged or failed seed disqualifies it: the objective of a configuration is its mean
over seeds, and a mean over the seeds that happened to survive would flatter it).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol


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


def best_configuration(
    trials: Iterable[TrialLike], mode: Literal["min", "max"] = "min"
) -> BestConfiguration | None:
    by_configuration: dict[int, list[TrialLike]] = {}
    for trial in trials:
        by_configuration.setdefault(trial.configuration, []).append(trial)
    candidates = []
    for configuration, group in by_configuration.items():
        if not all(t.status == "complete" and t.objective is not None for t in group):
            continue
        objectives = [float(t.objective) for t in group]  # type: ignore[arg-type]
        group = sorted(group, key=lambda t: t.id)
        candidates.append(
            BestConfiguration(
                configuration=configuration,
                objective=statistics.fmean(objectives),
                objective_std=statistics.stdev(objectives) if len(objectives) > 1 else None,
                trial_ids=[t.id for t in group],
                objectives=[float(t.objective) for t in group],  # type: ignore[arg-type]
                params=dict(group[0].params),
                config=dict(group[0].config),
            )
        )
    if not candidates:
        return None
    candidates.sort(key=lambda c: c.configuration)  # ties go to the earliest
    pick = min if mode == "min" else max
    return pick(candidates, key=lambda c: c.objective)
