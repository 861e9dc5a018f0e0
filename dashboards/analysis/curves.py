"""Learning curves: each trial's validation metric against its progress."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dashboards.records import MetricPoint, TrialRecord, by_trial


@dataclass(frozen=True)
class Curve:
    trial: TrialRecord
    x: tuple[float, ...]
    y: tuple[float, ...]


def learning_curves(
    trials: Iterable[TrialRecord], metrics: Iterable[MetricPoint], y: str, x: str = "step"
) -> list[Curve]:
    """One curve per trial that reported ``y``, in trial-number order. ``x`` is a metric
    key or ``step``; points missing either value (e.g. a non-finite loss, stored as None)
    are skipped, so a diverged trial's curve ends at its last finite point."""
    points = by_trial(metrics)
    curves = []
    for trial in sorted(trials, key=lambda trial: trial.number):
        xs, ys = [], []
        for point in points.get(trial.id, ()):
            px = point.step if x == "step" else point.values.get(x)
            py = point.values.get(y)
            if px is not None and py is not None:
                xs.append(float(px))
                ys.append(float(py))
        if xs:
            curves.append(Curve(trial, tuple(xs), tuple(ys)))
    return curves
