"""Each masked arm against its dense base, both at their best configuration, paired by seed:
the paired test of each stage (``inference``), the stage that decides, and what limits it.

Why two stages: the selection stage's bests are chosen on the same runs that compare
them, so they carry the winner's curse; a bracket study's confirmation stage reruns each
arm's choice on fresh seeds, and where a study runs one it decides, with no fallback. A
confirmation that yields nothing to test is its own state (``confirmation_failed``), shown
as such. A run that diverged in the deciding stage is a loss for its arm (``inference``'s
one rule), never a dropped seed. A metric that is itself a mean of logs (``LOG_METRICS``)
is compared as exp(value), so that its change is a ratio like any other objective's. An
answer short of evidence is *inconclusive*, never a warned *better*: fewer than
``MIN_DECIDING_PAIRS`` deciding pairs, an arm whose LR search stopped unbracketed, or no
interval (``Comparison.limits``). A stage seeded in rounds (``sequential``, the study's
``protocol.sequential``) is tested at its look's spent alpha, and is inconclusive until
that test decides. The README's "Tested differences" states the rules in full.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from studies.analysis.arms import (
    ARM_PARAMS,
    Configuration,
    best_configuration,
    configurations,
    group_by_arm,
)
from studies.analysis.inference import (
    ALPHA,
    DEFAULT_EFFECT,
    PairedTest,
    SeedsNeeded,
    Verdict,
    paired_test,
)
from studies.analysis.objective import Mode, check_mode
from studies.analysis.sequential import Decision, Look, SequentialDesign, decide
from studies.best import STAGE_KEY, is_confirmation
from studies.bracket import closes_bracket
from studies.records import Arm, ArmSearch, BracketSearch, TrialRecord
from worker.contract import FINISHED_TRIAL_STATUSES, LOG_METRICS, Names, TrialStatus, Variant

#: the decision of a comparison whose deciding verdict cannot stand (``Comparison.limits``)
INCONCLUSIVE = "inconclusive"
#: fewer deciding pairs than this is inconclusive, whatever the test says
MIN_DECIDING_PAIRS = 3
#: the searched value the grid-edge and divergence warnings are about
LR = "lr"


class Stage(Names):
    selection = "selection"  # the runs the bests were chosen on
    confirmation = "confirmation"  # the chosen configurations rerun on fresh seeds


class WarningCode(Names):
    best_at_grid_edge = "best_at_grid_edge"
    few_seeds = "few_seeds"
    diverged_at_chosen_lr = "diverged_at_chosen_lr"
    confirmation_disagrees = "confirmation_disagrees"
    confirmation_failed = "confirmation_failed"
    unbracketed = "unbracketed"


@dataclass(frozen=True)
class VerdictWarning:
    code: WarningCode
    message: str


@dataclass(frozen=True)
class StageTest:
    """One stage's paired test of two configurations' trials."""

    stage: Stage
    #: None when there is nothing to test; ``reason`` says why
    test: PairedTest | None
    reason: str | None = None
    #: the seeds paired, and each arm's value on them (a diverged run as ``inf``)
    seeds: tuple[int, ...] = ()
    baseline_values: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    #: the look a stage seeded in rounds is at (its test at the look's alpha); else None
    look: Look | None = None
    #: its runs still queued or running
    in_flight: int = 0

    @property
    def n(self) -> int:
        return self.test.n if self.test is not None else 0

    @property
    def sequential(self) -> Decision | None:
        """A stage seeded in rounds: its test's decision at the look (``continue`` or, at
        the cap, ``inconclusive`` when undecided); None for a fixed-n stage or no test."""
        if self.look is None or self.test is None:
            return None
        return decide(self.test, self.look)

    @property
    def undecided(self) -> bool:
        """Whether another round of seeds could decide it: it is seeded in rounds and below
        the cap, and its test has not decided (or has too few pairs)."""
        if self.look is None or self.look.final:
            return False
        return self.n < MIN_DECIDING_PAIRS or self.sequential == Decision.continue_

    @property
    def round_limits(self) -> tuple[str, ...]:
        """Why a stage seeded in rounds cannot decide yet: runs in flight, or its test at
        the look's spent alpha is undecided (before the cap: the next round; at it:
        inconclusive). Empty for a fixed-n stage."""
        look, decision = self.look, self.sequential
        if look is None:
            return ()
        found = []
        if self.in_flight:
            found.append(f"{self.in_flight} runs of {look.describe()} are in flight")
        if decision == Decision.continue_:
            # a study seeds on only while its own comparisons are undecided: a claim's other
            # comparisons may stop here, before the cap
            needed = f"; {_needs(self.test.seeds_needed)}" if self.test is not None else ""
            found.append(f"undecided at {look.describe()}, before the cap{needed}")
        elif decision == Decision.inconclusive and self.test is not None:
            needed = _needs(self.test.seeds_needed)
            found.append(f"undecided at the cap ({look.describe()}); {needed}")
        return tuple(found)

    def describe(self) -> str:
        """``-1.8% [-3.1%, -0.5%] better (5 seeds; 1% needs 9 to 21 seeds)``."""
        if self.test is None:
            return f"no test: {self.reason}"
        look = f"; {self.look.describe()}" if self.look is not None else ""
        return describe_test(self.test) + look


@dataclass(frozen=True)
class Comparison:
    """One arm against a baseline arm (a masked arm against its base's dense arm)."""

    baseline: Arm
    arm: Arm
    baseline_best: Configuration | None
    best: Configuration | None
    selection: StageTest
    #: the confirmation stage's test; None when the study runs no confirmation stage
    confirmation: StageTest | None
    warnings: tuple[VerdictWarning, ...]

    @property
    def deciding(self) -> StageTest:
        """The confirmation stage where the study runs one, else the selection stage."""
        return self.confirmation if self.confirmation is not None else self.selection

    @property
    def limits(self) -> tuple[str, ...]:
        """Why the deciding stage's verdict cannot stand (empty when it can)."""
        stage = self.deciding
        found = []
        if stage.test is None:
            found.append(f"the {stage.stage} stage has nothing to test: {stage.reason}")
        elif stage.test.p_value is None:
            found.append(f"the {stage.stage} stage has no interval ({_seeds(stage.n)})")
        if stage.test is not None and stage.n < MIN_DECIDING_PAIRS:
            found.append(
                f"{_seeds(stage.n)} paired in the {stage.stage} stage, fewer than "
                f"{MIN_DECIDING_PAIRS}"
            )
        found += [w.message for w in self.warnings if w.code == WarningCode.unbracketed]
        found += stage.round_limits
        return tuple(found)

    @property
    def undecided(self) -> bool:
        """Whether another round of seeds could decide it (its deciding stage's rule)."""
        return self.deciding.undecided

    @property
    def decision(self) -> Verdict | None:
        """The deciding stage's verdict; None (inconclusive) when a limit applies."""
        if self.limits or self.deciding.test is None:
            return None
        return self.deciding.test.verdict

    @property
    def decision_code(self) -> str:
        """The decision as the API and the pages' ``data-verdict`` name it."""
        return INCONCLUSIVE if self.decision is None else self.decision.value

    @property
    def decision_text(self) -> str:
        return INCONCLUSIVE if self.decision is None else words(self.decision)

    @property
    def summary(self) -> str:
        """The one line every surface shows: the decision, then each stage's test, the
        deciding one marked."""
        head = f"{self.arm.label} vs {self.baseline.label}: {self.decision_text}"
        if self.limits:
            head += f" ({'; '.join(self.limits)})"
        stages = [self.selection] + ([self.confirmation] if self.confirmation else [])
        parts = [
            f"{stage.stage}{' (decides)' if stage is self.deciding else ''}: {stage.describe()}"
            for stage in stages
        ]
        return f"{head}; {'; '.join(parts)}"


def words(verdict: Verdict) -> str:
    """A verdict as a line of text says it: ``no detectable difference``."""
    return verdict.value.replace("_", " ")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def describe_test(test: PairedTest) -> str:
    """``-1.8% [-3.1%, -0.5%] better (5 seeds; 1% needs 9 to 21 seeds)``: the change, its
    interval, the verdict, and the seeds the stated effect needs (point to cautious)."""
    if test.change is None:
        return f"no size: {test.reason}"
    interval = (
        f"[{percent(test.low)}, {percent(test.high)}]"
        if test.low is not None and test.high is not None
        else "[no interval]"
    )
    diverged = f", {test.diverged} with a diverged run" if test.diverged else ""
    level = f" at alpha {test.alpha:.2g}" if test.alpha != ALPHA else ""
    return (
        f"{percent(test.change)} {interval} {words(test.verdict)}{level} "
        f"({_seeds(test.n)}{diverged}; {_needs(test.seeds_needed)})"
    )


def _needs(needed: SeedsNeeded | None) -> str:
    if needed is None or needed.estimate is None:
        return "no variance estimate"
    target = f"{needed.effect:.0%} needs"
    if needed.upper is None or needed.upper == needed.estimate:
        return f"{target} {needed.estimate} seeds"
    return f"{target} {needed.estimate} to {needed.upper} seeds"


def verdicts(
    trials: Iterable[TrialRecord],
    mode: Mode,
    confirmation: Mapping[Arm, Sequence[TrialRecord]] | None = None,
    bracket: BracketSearch | None = None,
    *,
    confirming: bool | None = None,
    effect: float = DEFAULT_EFFECT,
    metric: str | None = None,
    design: SequentialDesign | None = None,
) -> list[Comparison]:
    """Every masked arm against its base's dense arm (canonical order). ``confirmation``:
    each arm's confirmation trials, none of them in ``trials``; without it they are taken
    out of ``trials`` (params ``stage: confirm``). ``confirming``: whether the study runs
    a confirmation stage (a bracket study's ``confirm_seeds``); None infers it from the
    trials. ``bracket``: a bracket study's LR search, whose stops replace the grid-edge
    warning. ``effect``: what seeds needed is sized for; ``metric``: the objective's name;
    ``design``: the study's sequential design (``sequential.design_of``), whose margin the
    comparisons then test equivalence against."""
    check_mode(mode)
    trials = list(trials)
    arms = [arm for arm in group_by_arm(t for t in trials if not is_confirmation(t.params))]
    return [
        compare_arms(
            trials,
            Arm(arm.base, Variant.dense.value),
            arm,
            mode,
            confirmation,
            bracket,
            confirming=confirming,
            margin=design.margin if design is not None else None,
            effect=effect,
            metric=metric,
            design=design,
        )
        for arm in arms
        if arm.variant != Variant.dense.value and Arm(arm.base, Variant.dense.value) in arms
    ]


def compare_arms(
    trials: Iterable[TrialRecord],
    baseline: Arm,
    arm: Arm,
    mode: Mode,
    confirmation: Mapping[Arm, Sequence[TrialRecord]] | None = None,
    bracket: BracketSearch | None = None,
    *,
    confirming: bool | None = None,
    margin: float | None = None,
    effect: float = DEFAULT_EFFECT,
    metric: str | None = None,
    design: SequentialDesign | None = None,
) -> Comparison:
    """``arm`` against ``baseline`` (any two arms of a study), each at its best, by the
    rules of ``verdicts``; ``margin``: a stated equivalence margin for both stages;
    ``design``: the study's sequential design, for the stage it seeds in rounds."""
    check_mode(mode)
    trials = list(trials)
    if confirmation is None:
        confirmation = group_by_arm(t for t in trials if is_confirmation(t.params))
        trials = [t for t in trials if not is_confirmation(t.params)]
    groups = group_by_arm(trials)
    if confirming is None:
        confirming = bool(confirmation)
    configs = {which: configurations(groups.get(which, ())) for which in (baseline, arm)}
    bests = {which: best_configuration(configs[which], mode) for which in (baseline, arm)}
    warnings: list[VerdictWarning] = []
    for which in (baseline, arm):
        chosen = bests[which]
        searches = _searches(groups.get(which, ()), bracket) if bracket is not None else []
        if bracket is not None and searches:
            warnings += _unbracketed(which, searches, bracket)
        elif chosen is not None:
            warnings += _edge(which, chosen, configs[which])
        if chosen is not None:
            runs = [*groups.get(which, ()), *confirmation.get(which, ())]
            warnings += _diverged(which, chosen, runs)
    scale = _Scale(mode, margin, effect, metric in LOG_METRICS, design)
    selection = _selection(baseline, arm, bests, configs, scale)
    confirmed = None
    if confirming:
        confirmed = _stage(
            Stage.confirmation,
            confirmation.get(baseline, ()),
            confirmation.get(arm, ()),
            scale,
        )
        if confirmed.test is None:
            warnings.append(
                VerdictWarning(
                    WarningCode.confirmation_failed,
                    f"the confirmation stage has nothing to test: {confirmed.reason}",
                )
            )
        elif selection.test is not None and confirmed.test.verdict != selection.test.verdict:
            warnings.append(
                VerdictWarning(
                    WarningCode.confirmation_disagrees,
                    f"the confirmation stage says {words(confirmed.test.verdict)}; the "
                    f"selection stage says {words(selection.test.verdict)}",
                )
            )
    comparison = Comparison(
        baseline, arm, bests[baseline], bests[arm], selection, confirmed, tuple(warnings)
    )
    if comparison.deciding.test is not None and comparison.deciding.n < MIN_DECIDING_PAIRS:
        comparison = _with_warning(comparison, _few(comparison.deciding))
    return comparison


def _with_warning(comparison: Comparison, warning: VerdictWarning) -> Comparison:
    return Comparison(
        comparison.baseline,
        comparison.arm,
        comparison.baseline_best,
        comparison.best,
        comparison.selection,
        comparison.confirmation,
        (*comparison.warnings, warning),
    )


def _selection(
    baseline: Arm,
    arm: Arm,
    bests: Mapping[Arm, Configuration | None],
    configs: Mapping[Arm, Sequence[Configuration]],
    scale: _Scale,
) -> StageTest:
    """The two bests' trials, paired by seed. An arm with no complete configuration is
    compared at the other's chosen LR when every run of it there diverged: diverging
    where the other trains is evidence against it, not a missing verdict."""
    base_best, best = bests[baseline], bests[arm]
    if base_best is not None and best is not None:
        return _stage(Stage.selection, base_best.trials, best.trials, scale)
    if base_best is None and best is None:
        reason = "neither arm has a configuration that completed on every seed"
        return StageTest(Stage.selection, None, reason)
    missing, present = (arm, base_best) if best is None else (baseline, best)
    assert present is not None
    diverged = _diverged_at(configs[missing], float(present.value(LR)))
    if diverged is None:
        reason = f"{missing.label} has no configuration that completed on every seed"
        return StageTest(Stage.selection, None, reason)
    pair = (present.trials, diverged) if missing == arm else (diverged, present.trials)
    return _stage(Stage.selection, *pair, scale)


def _diverged_at(configs: Sequence[Configuration], lr: float) -> list[TrialRecord] | None:
    """The trials at ``lr`` when every finished one of them diverged; None otherwise."""
    at_lr = [t for c in configs if float(c.value(LR)) == lr for t in c.trials]
    finished = [t for t in at_lr if t.status in (TrialStatus.complete, TrialStatus.diverged)]
    if finished and all(t.diverged for t in finished):
        return finished
    return None


def compare_configurations(
    baseline: Iterable[TrialRecord],
    trials: Iterable[TrialRecord],
    mode: Mode,
    *,
    stage: Stage = Stage.selection,
    margin: float | None = None,
    effect: float = DEFAULT_EFFECT,
    metric: str | None = None,
    design: SequentialDesign | None = None,
) -> StageTest:
    """``trials`` against ``baseline`` (any two configurations: two component choices of
    one arm, say) by the same paired rule, diverged runs scored as losses; at the look's
    alpha when ``design`` seeds ``stage`` in rounds."""
    scale = _Scale(check_mode(mode), margin, effect, metric in LOG_METRICS, design)
    return _stage(stage, baseline, trials, scale)


@dataclass(frozen=True)
class _Scale:
    """How a comparison's values are tested: the direction, the equivalence margin, the
    effect seeds needed is sized for, whether the metric is a mean of logs, and the
    study's sequential design."""

    mode: Mode
    margin: float | None
    effect: float
    log_metric: bool
    design: SequentialDesign | None = None


def _stage(
    stage: Stage,
    baseline: Iterable[TrialRecord],
    trials: Iterable[TrialRecord],
    scale: _Scale,
) -> StageTest:
    """The stage's paired test; where the design seeds this stage in rounds, at the look
    its seeds (run or running, on either side) have reached, at that look's alpha."""
    baseline, trials = list(baseline), list(trials)
    look, in_flight = None, 0
    if scale.design is not None and scale.design.stage == stage:
        look = scale.design.look(len({t.seed_index for t in (*baseline, *trials)}))
        in_flight = sum(t.status not in FINISHED_TRIAL_STATUSES for t in (*baseline, *trials))
    seeds, base_values, values = _paired(baseline, trials)
    if not seeds:
        reason = "the two arms share no finished seed"
        return StageTest(Stage(stage), None, reason, look=look, in_flight=in_flight)
    if scale.log_metric:
        base_values = tuple(math.exp(v) for v in base_values)
        values = tuple(math.exp(v) for v in values)
    alpha = look.alpha if look is not None else ALPHA
    test = paired_test(
        base_values, values, scale.mode, margin=scale.margin, effect=scale.effect, alpha=alpha
    )
    return StageTest(Stage(stage), test, test.reason, seeds, base_values, values, look, in_flight)


def _score(trial: TrialRecord) -> float | None:
    """A finished trial's value for pairing: its objective, ``inf`` for a diverged run
    (scored by ``inference``'s rule); None for a run that says nothing (failed, pruned,
    cancelled, unfinished)."""
    if trial.diverged:
        return math.inf
    return trial.result


def _paired(
    baseline: Iterable[TrialRecord], trials: Iterable[TrialRecord]
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
    """The seeds both sides finished, in order, and each side's value on them."""
    base = {t.seed_index: score for t in baseline if (score := _score(t)) is not None}
    other = {t.seed_index: score for t in trials if (score := _score(t)) is not None}
    seeds = tuple(sorted(base.keys() & other.keys()))
    return seeds, tuple(base[s] for s in seeds), tuple(other[s] for s in seeds)


def _edge(arm: Arm, best: Configuration, configs: Sequence[Configuration]) -> list[VerdictWarning]:
    """The best LR at an end of the LRs that close a bracket (``studies.bracket``'s rule)."""
    tested = sorted({float(c.value(LR)) for c in configs if closes_bracket(c.outcome)})
    lr = float(best.value(LR))
    if len(tested) == 1:
        message = f"{arm.label}: only lr {lr:g} was tested, so its best lr is not bracketed"
    elif lr in (tested[0], tested[-1]):
        side = "smallest" if lr == tested[0] else "largest"
        message = (
            f"{arm.label}: its best lr {lr:g} is the {side} tested ({tested[0]:g} to "
            f"{tested[-1]:g}); its optimum may lie beyond the grid"
        )
    else:
        return []
    return [VerdictWarning(WarningCode.best_at_grid_edge, message)]


def _diverged(arm: Arm, best: Configuration, runs: Sequence[TrialRecord]) -> list[VerdictWarning]:
    lr = float(best.value(LR))
    at_lr = [t for t in runs if float(t.value(LR)) == lr]
    diverged = sum(t.diverged for t in at_lr)
    if not diverged:
        return []
    message = f"{arm.label}: {diverged} of {len(at_lr)} trials at its chosen lr {lr:g} diverged"
    return [VerdictWarning(WarningCode.diverged_at_chosen_lr, message)]


def _few(stage: StageTest) -> VerdictWarning:
    message = (
        f"only {_seeds(stage.n)} paired in the deciding ({stage.stage}) stage, fewer than "
        f"{MIN_DECIDING_PAIRS}: inconclusive"
    )
    return VerdictWarning(WarningCode.few_seeds, message)


def _search_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration's params as its bracket arm names them: LR and stage marker aside."""
    return {k: v for k, v in params.items() if k not in (LR, STAGE_KEY)}


def _searches(trials: Sequence[TrialRecord], bracket: BracketSearch) -> list[ArmSearch]:
    """The bracket arms whose configurations are among ``trials`` (one arm's): one, or
    several when the study searches another list (``components``, say) besides the LR."""
    ran = [_search_params(t.params) for t in trials]
    return [search for search in bracket.arms if search.params in ran]


def unbracketed_warnings(
    trials: Iterable[TrialRecord], arm: Arm, bracket: BracketSearch | None
) -> list[VerdictWarning]:
    """The ``unbracketed`` warnings about ``arm`` (its trials among ``trials``), for the
    claims that compare an arm's configurations outside ``verdicts``; none without a search."""
    if bracket is None:
        return []
    return _unbracketed(arm, _searches([t for t in trials if t.arm == arm], bracket), bracket)


def _unbracketed(
    arm: Arm, searches: Sequence[ArmSearch], bracket: BracketSearch
) -> list[VerdictWarning]:
    """A warning for each of ``arm``'s bracket searches that did not bracket its best LR,
    naming the limit that stopped it."""
    # the other lists that split an arm into several searches (components, say) name them
    names = {name for other in bracket.arms for name in other.params} - set(ARM_PARAMS)
    varying = sorted(n for n in names if len({repr(o.params.get(n)) for o in bracket.arms}) > 1)
    warnings = []
    for search in searches:
        if search.bracketed:
            continue
        extra = ", ".join(f"{name}={search.params.get(name)}" for name in varying)
        label = f"{arm.label} ({extra})" if extra else arm.label
        lr = search.best_lr
        if lr is None:
            where = "no LR completed"
        elif len(search.lrs) == 1:
            where = f"best LR {lr:g} is the only one tested"
        else:
            side = "smallest" if lr == min(search.lrs) else "largest"
            where = f"best LR {lr:g} is the {side} tested"
        why = {
            "max_extensions": f"the search stopped at max_extensions={bracket.max_extensions} "
            "before bracketing it",
            "caps": "the search stopped at the run cap (the study's runs or the server's "
            "max_trials, whichever is lower) before bracketing it",
            "running": "the search has not bracketed it yet: another round was planned",
        }[search.status]
        warnings.append(VerdictWarning(WarningCode.unbracketed, f"{label}: {where}; {why}"))
    return warnings
