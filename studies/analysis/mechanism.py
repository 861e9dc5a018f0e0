"""Magma's mechanism over training: alignment score and survival per masked component.

A masked trial reports ``alignment/<component>`` (the mean momentum-gradient alignment
score s_t) and ``survival/<component>`` (the fraction of blocks updated) at every
evaluation; dense trials report neither. Averaging an arm's trials per step shows
whether damping or masking changes as training goes on (the paper's Figure 4, bottom).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from studies.records import Arm, MetricPoint, TrialRecord
from worker.contract import TELEMETRY_QUANTITIES, parse_telemetry_key


@dataclass(frozen=True)
class MechanismSeries:
    """One quantity of one component, averaged over an arm's trials at each step."""

    arm: Arm
    quantity: str
    component: str
    steps: tuple[int, ...]
    mean: tuple[float, ...]
    #: how many trials reported the value at each step
    trials: tuple[int, ...]


def mechanism_series(
    trials: Iterable[TrialRecord], metrics: Iterable[MetricPoint]
) -> list[MechanismSeries]:
    """Per arm, quantity and component, the mean over trials at each reported step;
    metric rows of trials not in ``trials`` are ignored."""
    arms = {trial.id: trial.arm for trial in trials}
    found: dict[tuple[Arm, str, str], dict[int, list[float]]] = {}
    for point in metrics:
        arm = arms.get(point.trial_id)
        if arm is None:
            continue
        for key, value in point.values.items():
            parsed = parse_telemetry_key(key)
            if parsed is not None and value is not None:
                quantity, component = parsed
                steps = found.setdefault((arm, quantity, component), {})
                steps.setdefault(point.step, []).append(float(value))
    series = []
    for (arm, quantity, component), steps in found.items():
        ordered = sorted(steps)
        series.append(
            MechanismSeries(
                arm=arm,
                quantity=quantity,
                component=component,
                steps=tuple(ordered),
                mean=tuple(statistics.fmean(steps[step]) for step in ordered),
                trials=tuple(len(steps[step]) for step in ordered),
            )
        )
    series.sort(key=lambda s: (s.arm.order, TELEMETRY_QUANTITIES.index(s.quantity), s.component))
    return series
