"""Paired comparison of two arms run on common random numbers.

Every seed of a study shares data order and initialisation across arms, so a trial of
arm ``a`` and the trial of arm ``b`` with the same seed and the same other parameters
differ only in the optimizer. Their difference cancels the seed's own luck, and a paired
t interval on the differences is far tighter than comparing the two means.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from studies.analysis.arms import ARM_PARAMS
from studies.analysis.intervals import Interval, mean_interval
from studies.records import Arm, TrialRecord


@dataclass(frozen=True)
class Pair:
    """Two trials that differ only in their arm, both completed."""

    a: TrialRecord
    b: TrialRecord
    #: b - a: negative when b reached the lower objective
    difference: float


@dataclass(frozen=True)
class PairedComparison:
    a: Arm
    b: Arm
    pairs: tuple[Pair, ...]
    #: mean of the pairs' differences (b - a) with its paired-t interval
    difference: Interval
    #: matched (a, b) trial ids left out because a member has no result (it diverged,
    #: was pruned, failed or has not finished)
    incomplete: tuple[tuple[int, int], ...]
    #: ids of trials with no counterpart in the other arm (a missing seed or configuration,
    #: or a repeat of a configuration already matched)
    unpaired: tuple[int, ...]


def match_key(trial: TrialRecord) -> tuple[Any, ...]:
    """What two trials of different arms must share to be a pair: every searched value
    except the arm's, and the seed."""
    params = tuple(sorted((k, v) for k, v in trial.params.items() if k not in ARM_PARAMS))
    return (params, trial.seed_index)


def paired_comparison(
    trials: Iterable[TrialRecord], a: Arm, b: Arm, confidence: float = 0.95
) -> PairedComparison:
    """Pairs arm ``a``'s trials with arm ``b``'s and summarises b - a."""
    if a == b:
        raise ValueError(f"compare two different arms, got {a.label} twice")
    sides: dict[Arm, dict[tuple[Any, ...], TrialRecord]] = {a: {}, b: {}}
    unpaired: list[int] = []
    for trial in sorted(trials, key=lambda trial: trial.number):
        side = sides.get(trial.arm)
        if side is None:
            continue
        key = match_key(trial)
        if key in side:
            unpaired.append(trial.id)  # a repeated configuration: the first one is used
        else:
            side[key] = trial
    pairs, incomplete = [], []
    for key, trial_a in sides[a].items():
        trial_b = sides[b].pop(key, None)
        if trial_b is None:
            unpaired.append(trial_a.id)
        elif trial_a.result is None or trial_b.result is None:
            incomplete.append((trial_a.id, trial_b.id))
        else:
            pairs.append(Pair(trial_a, trial_b, trial_b.result - trial_a.result))
    unpaired.extend(trial.id for trial in sides[b].values())
    return PairedComparison(
        a=a,
        b=b,
        pairs=tuple(pairs),
        difference=mean_interval([pair.difference for pair in pairs], confidence),
        incomplete=tuple(incomplete),
        unpaired=tuple(sorted(unpaired)),
    )
