"""Paired comparison of two arms run on common random numbers.

Every seed of a study shares data order and initialisation across arms, so arm ``a``'s
trial and arm ``b``'s trial with the same seed differ only in the optimizer and the
configuration each arm chose. Their difference cancels the seed's own luck, and a paired
t interval on the differences is far tighter than comparing the two means.

Each arm is compared at its best configuration (``studies.analysis.arms.best_configuration``,
the study's one best rule: only a configuration whose every seed completed competes, and
never a bracket study's confirmation rerun), and the two bests' trials are paired by
``seed_index``: one pair per seed. Pairing every configuration the arms share (each LR of a
sweep, say) would count a seed once per configuration as if each were a new one, and give
an interval too narrow for the number of seeds that were actually run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from studies.analysis.arms import Configuration, best_configuration, configurations
from studies.analysis.intervals import Interval, mean_interval
from studies.analysis.objective import Mode
from studies.records import Arm, TrialRecord


@dataclass(frozen=True)
class Pair:
    """The two arms' best configurations' trials on one seed, both completed."""

    a: TrialRecord
    b: TrialRecord
    #: b - a: negative when b reached the lower objective
    difference: float


@dataclass(frozen=True)
class PairedComparison:
    a: Arm
    b: Arm
    #: each arm's best configuration; None when none of its configurations competes (no
    #: configuration whose every seed completed), which leaves no pairs
    a_best: Configuration | None
    b_best: Configuration | None
    #: one pair per seed both bests ran, by seed index
    pairs: tuple[Pair, ...]
    #: mean of the pairs' differences (b - a) with its paired-t interval
    difference: Interval
    #: ids of the bests' trials whose seed the other arm's best did not run
    unpaired: tuple[int, ...]


def paired_comparison(
    trials: Iterable[TrialRecord], a: Arm, b: Arm, mode: Mode, confidence: float = 0.95
) -> PairedComparison:
    """Arm ``a``'s best configuration against arm ``b``'s, their trials paired by seed
    index (one pair per seed), and the mean of b - a with its paired-t interval."""
    if a == b:
        raise ValueError(f"compare two different arms, got {a.label} twice")
    trials = list(trials)
    bests = {
        arm: best_configuration(configurations([t for t in trials if t.arm == arm]), mode)
        for arm in (a, b)
    }
    seeds = {
        arm: {trial.seed_index: trial for trial in best.trials} if best is not None else {}
        for arm, best in bests.items()
    }
    pairs = []
    for seed in sorted(seeds[a].keys() & seeds[b].keys()):
        trial_a, trial_b = seeds[a][seed], seeds[b][seed]
        # a best configuration's every seed completed, so each has a result
        if trial_a.result is not None and trial_b.result is not None:
            pairs.append(Pair(trial_a, trial_b, trial_b.result - trial_a.result))
    unpaired = [
        trial.id
        for arm, other in ((a, b), (b, a))
        for seed, trial in seeds[arm].items()
        if seed not in seeds[other]
    ]
    return PairedComparison(
        a=a,
        b=b,
        a_best=bests[a],
        b_best=bests[b],
        pairs=tuple(pairs),
        difference=mean_interval([pair.difference for pair in pairs], confidence),
        unpaired=tuple(sorted(unpaired)),
    )
