"""Learning curves: each trial's validation metric against its progress, and each arm's
at its best configuration, summarised over the seeds."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from studies.analysis.arms import Configuration, best_per_arm
from studies.analysis.objective import Mode
from studies.records import Arm, MetricPoint, TrialRecord, by_trial


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


@dataclass(frozen=True)
class ArmCurve:
    """An arm's best configuration trained over its seeds: at each progress value that a
    seed reported, the median over the seeds that reported it and their range."""

    arm: Arm
    configuration: Configuration
    #: each seed's own curve, in seed order
    seeds: tuple[Curve, ...]
    x: tuple[float, ...]
    median: tuple[float, ...]
    #: the band: the smallest and largest seed value at each x (with the two to five
    #: seeds a study runs, quartiles would be read off one or two points anyway)
    low: tuple[float, ...]
    high: tuple[float, ...]
    #: how many seeds reported at each x
    n: tuple[int, ...]


def best_configuration_curves(
    trials: Iterable[TrialRecord], curves: Iterable[Curve], mode: Mode = "min"
) -> list[ArmCurve]:
    """Per arm, in arm order, the learning curve of its best configuration (the study's
    best rule, ``best_per_arm``), from the trials' ``learning_curves`` (which a page has
    already drawn); an arm without a best, or whose best has no curve, has none. Seeds of
    a configuration evaluate at the same steps, so they are summarised at each x value
    any of them reported."""
    bests = [config for config in best_per_arm(trials, mode).values() if config is not None]
    by_id = {curve.trial.id: curve for curve in curves}
    result = []
    for config in bests:
        seeds = tuple(by_id[t.id] for t in config.trials if t.id in by_id)
        if not seeds:
            continue
        at: dict[float, list[float]] = {}
        for curve in seeds:
            for px, py in zip(curve.x, curve.y, strict=True):
                at.setdefault(px, []).append(py)
        xs = sorted(at)
        result.append(
            ArmCurve(
                arm=config.arm,
                configuration=config,
                seeds=seeds,
                x=tuple(xs),
                median=tuple(statistics.median(at[px]) for px in xs),
                low=tuple(min(at[px]) for px in xs),
                high=tuple(max(at[px]) for px in xs),
                n=tuple(len(at[px]) for px in xs),
            )
        )
    return result
