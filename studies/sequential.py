"""The sequential seeding planner (``protocol.sequential``): which seeds a study runs next,
and when it stops. Pure (no I/O): the searcher hands it the study's trials and creates what
it returns, as ``studies.bracket`` is for the LR rounds.

The stage seeded in rounds is a bracket study's confirmation stage (its first round is the
``confirm_seeds = round_seeds`` the bracket planner starts it with) or, in any other study,
every configuration of its grid (the first round is its ``seeds = round_seeds``). Once every
run of the stage has finished, the study is at a look (``studies.analysis.sequential``):
every comparison of the study (``verdict.verdicts``: each masked arm against its dense base
on the deciding stage, tested at the look's spent alpha, equivalence against the design's
margin; with a ``baseline`` configuration, each other configuration of its arm against it
too) either decided or not. While one is undecided and the cap is not reached, the next
round gives *every* configuration of the stage ``round_seeds`` more seeds (fresh ones, after
its last), so the arms stay paired; seeding stops when every comparison decided, at
``max_seeds``, or when the round would pass the run budget (the server cap). Each plan
carries the look's decisions, which the searcher records as a ``sequential`` event: why
seeding went on or stopped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from studies.analysis.sequential import Decision, SequentialDesign, design_of
from studies.analysis.verdict import (
    Stage,
    StageTest,
    compare_configurations,
    verdicts,
)
from studies.best import STAGE_KEY, is_confirmation, runs_confirmation
from studies.records import Arm, TrialRecord
from studies.spec import StudySpec
from worker.contract import FINISHED_TRIAL_STATUSES

#: decided: every comparison decided at the look; max_seeds: the cap, some undecided;
#: caps: the next round would pass the run budget; running: another round is planned
Reason = Literal["decided", "max_seeds", "caps", "running"]


@dataclass(frozen=True)
class Extension:
    """More seeds for one configuration already in the study."""

    configuration: int
    params: dict[str, Any]
    #: the seed index of its first new seed (after its last)
    first_seed: int
    count: int


@dataclass(frozen=True)
class SeedPlan:
    #: the configurations to extend now (none when waiting or done)
    extensions: list[Extension] = field(default_factory=list)
    #: the look's decisions and the design: what the ``sequential`` event records
    report: dict[str, Any] = field(default_factory=dict)
    #: no more rounds
    done: bool = False
    #: some run of the stage is still queued or running: the look needs its result
    waiting: bool = False


def plan(spec: StudySpec, trials: Sequence[TrialRecord], *, budget: int) -> SeedPlan:
    """The next round for ``spec``'s study with ``trials`` (all of its trials so far);
    ``budget``: the most runs the study may make (its ``runs`` or the server cap)."""
    stored = spec.model_dump(mode="json")
    design = design_of(stored)
    if design is None:
        raise ValueError(f"study {spec.name!r} has no protocol.sequential to plan")
    confirming = runs_confirmation(stored)
    stage = [t for t in trials if is_confirmation(t.params) == confirming]
    if not stage or any(t.status not in FINISHED_TRIAL_STATUSES for t in stage):
        return SeedPlan(waiting=True)
    configurations: dict[int, list[TrialRecord]] = {}
    for trial in stage:
        configurations.setdefault(trial.configuration, []).append(trial)
    seeds = max(len(runs) for runs in configurations.values())
    look = design.look(seeds)
    comparisons = verdicts(
        trials, spec.mode, confirming=confirming, metric=spec.metric, design=design
    )
    against = _against_baseline(spec, stage, confirming, design)
    tests = [c.deciding for c in comparisons] + [test for _, _, test in against]
    count = min(design.round_seeds, design.max_seeds - seeds)
    reason: Reason = "running"
    if not any(test.undecided for test in tests):
        reason = "max_seeds" if look.final and not all(map(_decided, tests)) else "decided"
    elif len(trials) + count * len(configurations) > budget:
        reason = "caps"
    report = {
        "done": reason != "running",
        "reason": reason,
        "look": look.index + 1,
        "looks": look.looks,
        "seeds": seeds,
        "alpha": look.alpha,
        "design": design.as_dict(),
        "comparisons": [_decision(c.arm.label, c.baseline.label, c.deciding) for c in comparisons]
        + [_decision(label, baseline, test) for label, baseline, test in against],
    }
    if reason != "running":
        return SeedPlan(report=report, done=True)
    extensions = [
        Extension(
            number,
            dict(runs[0].params),
            max(t.seed_index for t in runs) + 1,
            count,
        )
        for number, runs in sorted(configurations.items())
    ]
    return SeedPlan(extensions, report)


def _against_baseline(
    spec: StudySpec, stage: list[TrialRecord], confirming: bool, design: SequentialDesign
) -> list[tuple[str, str, StageTest]]:
    """With ``protocol.sequential.baseline``: each other configuration of the baseline's arm
    against it on the stage seeded in rounds, labelled by the values that differ."""
    sequential = spec.protocol.sequential
    baseline = sequential.baseline if sequential is not None else None
    if not baseline:
        return []
    groups: dict[tuple[Arm, str], tuple[dict[str, Any], list[TrialRecord]]] = {}
    for trial in stage:
        values = {k: v for k, v in trial.params.items() if k not in ("lr", STAGE_KEY)}
        key = (trial.arm, json.dumps(values, sort_keys=True))
        groups.setdefault(key, (values, []))[1].append(trial)
    found = []
    for (arm, _), (values, runs) in groups.items():
        if not baseline.items() <= values.items():
            continue
        for (other_arm, _), (other_values, other_runs) in groups.items():
            if other_arm != arm or other_values == values:
                continue
            changed = ", ".join(f"{k}={v}" for k, v in other_values.items() if values.get(k) != v)
            test = compare_configurations(
                runs,
                other_runs,
                spec.mode,
                stage=Stage.confirmation if confirming else Stage.selection,
                margin=design.margin,
                metric=spec.metric,
                design=design,
            )
            found.append((f"{arm.label} ({changed})", f"{arm.label} (baseline)", test))
    return found


def _decided(stage: StageTest) -> bool:
    return stage.sequential in (Decision.better, Decision.worse, Decision.equivalent)


def _decision(arm: str, baseline: str, stage: StageTest) -> dict[str, Any]:
    """One comparison at the look, as the event records it."""
    test = stage.test
    return {
        "arm": arm,
        "baseline": baseline,
        "stage": stage.stage.value,
        "decision": stage.sequential.value if stage.sequential is not None else None,
        "pairs": stage.n,
        "change": test.change if test is not None else None,
        "low": test.low if test is not None else None,
        "high": test.high if test is not None else None,
        "p_value": test.p_value if test is not None else None,
        "p_equivalence": test.p_equivalence if test is not None else None,
    }
