"""How each claim of the paper is decided: one function per claim, reading the studies of
its roles and the parameters its registry entry fixes (``studies.analysis.claims``).

Every rule has one shape. It lists the paired comparisons the paper's sentence makes
(``Check``), each on its deciding stage (``verdict``), with what would support the claim
and what would contradict it; Holm's adjustment runs across the claim's comparisons
(``inference.holm``, at the tests' level: a sequential look's spent alpha where the study
seeds in rounds); then the claim is *supported* when every comparison supports it and none
is limited (too few pairs, an unbracketed arm, no interval, a stage seeded in rounds still
undecided at its look), *contradicted* when a comparison free of limits contradicts it, and
*inconclusive* otherwise. Absence of evidence never supports: "no other value is better" is
not a test, "equivalent within a stated margin" (TOST) is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from scipy import stats

from studies.analysis.arms import Configuration, best_configuration, configurations
from studies.analysis.inference import ALPHA, PairedTest, Verdict, holm, paired_test
from studies.analysis.lr_window import LRWindow, lr_windows
from studies.analysis.objective import Mode
from studies.analysis.sequential import SequentialDesign, design_of
from studies.analysis.verdict import (
    MIN_DECIDING_PAIRS,
    Comparison,
    Stage,
    StageTest,
    compare_arms,
    compare_configurations,
    describe_test,
    unbracketed_warnings,
)
from studies.best import STAGE_KEY, is_confirmation, runs_confirmation
from studies.records import Arm, BracketSearch, TrialRecord
from worker.contract import LOG_METRICS, Names, Variant


class Support(Names):
    supported = "supported"
    contradicted = "contradicted"
    inconclusive = "inconclusive"


class StudyView(Protocol):
    """What a claim reads of a study (``studies.results.StudyData`` is one)."""

    id: int
    mode: Mode
    spec: dict[str, Any]
    trials: list[TrialRecord]
    #: a bracket study's LR search, None for any other
    bracket: BracketSearch | None


@dataclass(frozen=True)
class Finding:
    support: Support
    #: the numbers the verdict rests on, one line each
    numbers: tuple[str, ...]
    warnings: tuple[str, ...] = ()


#: a claim's fixed thresholds and chosen values, by name (its registry entry's)
Parameters = Mapping[str, Any]
#: a claim's rule: its roles' studies, by role name, and its parameters in; the finding out
Rule = Callable[[Mapping[str, StudyView], Parameters], Finding]


@dataclass(frozen=True)
class Check:
    """One comparison a claim's sentence makes."""

    label: str
    #: the deciding stage's test; None when there was nothing to test
    test: PairedTest | None
    #: why its verdict cannot count (too few pairs, unbracketed, no test)
    limits: tuple[str, ...]
    #: whether a test (Holm-adjusted) supports the claim (by default: better)
    supports: Callable[[PairedTest], bool] = lambda test: test.verdict == Verdict.better
    #: whether it contradicts the claim (by default: worse)
    contradicts: Callable[[PairedTest], bool] = lambda test: test.verdict == Verdict.worse


def _check(label: str, stage: StageTest, limits: Sequence[str] = (), **kwargs: Any) -> Check:
    found = list(limits)
    if stage.test is None or stage.test.p_value is None:
        found.append(f"no test: {stage.reason or 'no interval'}")
    if stage.test is not None and stage.n < MIN_DECIDING_PAIRS:
        found.append(f"{stage.n} deciding pairs, fewer than {MIN_DECIDING_PAIRS}")
    return Check(label, stage.test, tuple(found), **kwargs)


def _from_comparison(label: str, comparison: Comparison, **kwargs: Any) -> Check:
    return _check(label, comparison.deciding, comparison.limits, **kwargs)


def _equivalent(test: PairedTest) -> bool:
    """Equivalent within the test's margin by TOST, at its Holm-adjusted p where adjusted:
    a difference too small to matter, even when it is detectable."""
    adjusted = test.p_equivalence_adjusted
    p = adjusted if adjusted is not None else test.p_equivalence
    return p is not None and p < test.alpha


def _better_or_equivalent(test: PairedTest) -> bool:
    return test.verdict == Verdict.better or _equivalent(test)


def _worse_beyond_margin(test: PairedTest) -> bool:
    """Detectably worse and not equivalent: a loss that matters."""
    return test.verdict == Verdict.worse and not _equivalent(test)


def _beyond_margin(margin: float) -> Callable[[PairedTest], bool]:
    """A detectable difference whose size exceeds ``margin``: what contradicts a claim of
    insensitivity (a detectable difference inside the margin does not)."""

    def contradicts(test: PairedTest) -> bool:
        detected = test.verdict in (Verdict.better, Verdict.worse)
        return detected and test.change is not None and abs(test.change) > margin

    return contradicts


def _decide(checks: Sequence[Check], warnings: Sequence[str] = ()) -> Finding:
    """Holm across the checks' tests, then the one rule of the module docstring."""
    tested = [check for check in checks if check.test is not None]
    adjusted = dict(zip(map(id, tested), holm([c.test for c in tested]), strict=True))  # type: ignore[misc]
    numbers: list[str] = []
    found: list[Support] = []
    for check in checks:
        test = adjusted.get(id(check))
        if test is None:
            numbers.append(f"{check.label}: no test ({'; '.join(check.limits)})")
            found.append(Support.inconclusive)
            continue
        holm_p = f", Holm p {test.p_adjusted:.3g}" if test.p_adjusted is not None else ""
        line = f"{check.label}: {describe_test(test)}{holm_p}"
        if check.limits:
            numbers.append(f"{line}; does not count: {'; '.join(check.limits)}")
            found.append(Support.inconclusive)
        elif check.contradicts(test):
            numbers.append(f"{line}; contradicts")
            found.append(Support.contradicted)
        elif check.supports(test):
            numbers.append(line)
            found.append(Support.supported)
        else:
            numbers.append(line)
            found.append(Support.inconclusive)
    if not checks:
        return Finding(Support.inconclusive, ("nothing the claim compares was run",), ())
    return Finding(_combine(found), tuple(numbers), tuple(dict.fromkeys(warnings)))


def _combine(parts: Sequence[Support]) -> Support:
    """Contradicted by any part, supported by every part, otherwise inconclusive."""
    if Support.contradicted in parts:
        return Support.contradicted
    if parts and all(part == Support.supported for part in parts):
        return Support.supported
    return Support.inconclusive


# --- reading a study ----------------------------------------------------------------------


def _confirming(study: StudyView) -> bool:
    """Whether the study runs a confirmation stage (``studies.best.runs_confirmation``)."""
    return runs_confirmation(study.spec)


def _design(study: StudyView) -> SequentialDesign | None:
    """The study's sequential design (``sequential.design_of``): the stage it seeds in
    rounds is tested at the look's spent alpha, and Holm runs at it."""
    return design_of(study.spec)


def _metric(study: StudyView) -> str | None:
    return (study.spec.get("objective") or {}).get("metric")


def _comparisons(
    study: StudyView, pairs: Sequence[tuple[Arm, Arm]], **kwargs: Any
) -> list[Comparison]:
    trials = list(study.trials)
    present = {t.arm for t in trials}
    return [
        compare_arms(
            trials,
            baseline,
            arm,
            study.mode,
            None,
            study.bracket,
            confirming=_confirming(study),
            metric=_metric(study),
            design=_design(study),
            **kwargs,
        )
        for baseline, arm in pairs
        if baseline in present and arm in present
    ]


def _warnings(comparisons: Sequence[Comparison], prefix: str = "") -> list[str]:
    return [
        f"{prefix}{c.arm.label} vs {c.baseline.label}: {w.message}"
        for c in comparisons
        for w in c.warnings
    ]


def _config_trials(study: StudyView, config: Configuration) -> list[TrialRecord]:
    """A chosen configuration's deciding runs: its confirmation reruns where the study ran
    them (fresh seeds, free of the choice's winner's curse), else its own trials."""
    if not _confirming(study):
        return list(config.trials)
    wanted = {k: v for k, v in config.params.items() if k != STAGE_KEY}
    return [
        t
        for t in study.trials
        if is_confirmation(t.params)
        and {k: v for k, v in t.params.items() if k != STAGE_KEY} == wanted
    ]


def _best_where(study: StudyView, arm: Arm, **values: Any) -> Configuration | None:
    """``arm``'s best selection-stage configuration among those with ``values``."""
    chosen = [
        t
        for t in study.trials
        if t.arm == arm
        and not is_confirmation(t.params)
        and all(t.value(name) == value for name, value in values.items())
    ]
    return best_configuration(configurations(chosen), study.mode)


def _compare_configs(
    study: StudyView,
    label: str,
    baseline: Configuration | None,
    chosen: Configuration | None,
    *,
    margin: float | None = None,
    effect: float,
    **kwargs: Any,
) -> Check:
    if baseline is None or chosen is None:
        which = "the baseline" if baseline is None else "the chosen configuration"
        return Check(label, None, (f"{which} has no configuration complete on every seed",))
    stage = Stage.confirmation if _confirming(study) else Stage.selection
    test = compare_configurations(
        _config_trials(study, baseline),
        _config_trials(study, chosen),
        study.mode,
        stage=stage,
        margin=margin,
        effect=effect,
        metric=_metric(study),
        design=_design(study),
    )
    return _check(label, test, test.round_limits, **kwargs)


def _unbracketed(study: StudyView, *arms: Arm) -> list[str]:
    return [
        w.message for arm in arms for w in unbracketed_warnings(study.trials, arm, study.bracket)
    ]


def _one_base(study: StudyView) -> str | None:
    bases = {t.arm.base for t in study.trials}
    return bases.pop() if len(bases) == 1 else None


# --- the claims ---------------------------------------------------------------------------


def table1(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """Magma improves each base the paper masks, and Adam+Magma beats C-Adam."""
    study = studies["study"]
    magma, dense = Variant.magma.value, Variant.dense.value
    pairs = [(Arm(base, dense), Arm(base, magma)) for base in given["bases"]]
    paper = _comparisons(study, pairs, effect=given["effect"])
    rival = _comparisons(
        study, [(Arm(given["rival"], dense), Arm(given["rival_of"], magma))], effect=given["effect"]
    )
    checks = [_from_comparison(f"{c.arm.label} vs {c.baseline.label}", c) for c in paper + rival]
    finding = _decide(checks, _warnings(paper + rival))
    others = sorted(
        {t.arm.base for t in study.trials if t.arm.variant == magma} - set(given["bases"])
    )
    extra = _comparisons(
        study, [(Arm(b, dense), Arm(b, magma)) for b in others], effect=given["effect"]
    )
    shown = tuple(f"not in the paper, not tested: {c.summary}" for c in extra)
    return replace(finding, numbers=finding.numbers + shown)


def sensitivity(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """p=0.5 beats every other p at every tau; tau barely matters at p=0.5."""
    study = studies["study"]
    arm = Arm(given["base"], Variant.magma.value)
    ps = sorted({float(t.value("p")) for t in study.trials if t.arm == arm})
    taus = sorted({float(t.value("tau")) for t in study.trials if t.arm == arm})
    p0, tau0 = given["p"], given["tau"]
    if p0 not in ps or tau0 not in taus:
        return Finding(Support.inconclusive, (f"p={p0:g}, tau={tau0:g} was not run",))
    if len(ps) < 2 or len(taus) < 2:
        return Finding(Support.inconclusive, ("p or tau has a single value",))

    def cell(p: float, tau: float) -> Configuration | None:
        return _best_where(study, arm, p=p, tau=tau)

    checks = [
        _compare_configs(
            study,
            f"tau={tau:g}: p={p0:g} vs p={p:g}",
            cell(p, tau),
            cell(p0, tau),
            effect=given["effect"],
        )
        for tau in taus
        for p in ps
        if p != p0
    ]
    margin = given["tau_margin"]
    checks += [
        _compare_configs(
            study,
            f"p={p0:g}: tau={tau:g} vs tau={tau0:g}",
            cell(p0, tau0),
            cell(p0, tau),
            margin=margin,
            effect=margin,
            supports=_equivalent,
            contradicts=_beyond_margin(margin),
        )
        for tau in taus
        if tau != tau0
    ]
    return _decide(checks)


def _per_seed(study: StudyView, delta: float) -> dict[int, dict[Arm, LRWindow]]:
    """Each seed's LR windows: a window drawn through one seed's runs per LR."""
    seeds = sorted({t.seed_index for t in study.trials if not is_confirmation(t.params)})
    selection = [t for t in study.trials if not is_confirmation(t.params)]
    return {
        seed: lr_windows([t for t in selection if t.seed_index == seed], study.mode, delta)
        for seed in seeds
    }


def _censored(window: LRWindow) -> bool:
    """Whether a window ends at the first or last tested LR (it may extend beyond)."""
    if not window.points or window.low is None or window.high is None:
        return False
    return window.low <= window.points[0].lr or window.high >= window.points[-1].lr


def _window_check(
    label: str,
    windows: Mapping[int, Mapping[Arm, LRWindow]],
    baseline: Arm,
    arm: Arm,
    quantity: str,
    effect: float,
) -> Check:
    """Per seed, ``quantity`` (``width``: the window's width in decades; ``frontier``: the
    largest LR with no diverged run) of ``arm`` against ``baseline``; larger is better. A
    seed without a window or a stable LR scores as a diverged run: the worst."""
    base_values: list[float] = []
    values: list[float] = []
    limits: list[str] = []
    unbounded = 0
    for seed, by_arm in windows.items():
        if baseline not in by_arm or arm not in by_arm:
            continue
        pair = []
        for which in (baseline, arm):
            window = by_arm[which]
            value = window.width if quantity == "width" else window.max_stable_lr
            if quantity == "width" and _censored(window):
                limits.append(f"seed {seed}: {which.label}'s window reaches the grid's end")
            pair.append(math.inf if value is None else value)
        if quantity == "frontier" and all(
            by_arm[w].min_diverged_lr is None for w in (baseline, arm)
        ):
            unbounded += 1
        base_values.append(pair[0])
        values.append(pair[1])
    if not values:
        return Check(label, None, ("no seed ran both arms",))
    if unbounded == len(values):
        limits.append("neither arm diverged at any tested LR: the grid does not reach them")
    test = paired_test(base_values, values, "max", effect=effect)
    stage = StageTest(Stage.selection, test, test.reason, (), tuple(base_values), tuple(values))
    return _check(label, stage, tuple(dict.fromkeys(limits)))


def lr_window(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """Adam+Magma's window of good LRs is wider than Adam's and C-Adam's, and it stays
    stable at LRs where they diverge."""
    study = studies["study"]
    windows = _per_seed(study, given["window_delta"])
    arm = Arm(given["base"], Variant.magma.value)
    checks = []
    for rival in given["rivals"]:
        baseline = Arm(rival, Variant.dense.value)
        checks.append(
            _window_check(
                f"{arm.label} vs {baseline.label}: window width in decades per seed",
                windows,
                baseline,
                arm,
                "width",
                given["effect"],
            )
        )
        checks.append(
            _window_check(
                f"{arm.label} vs {baseline.label}: largest stable LR per seed",
                windows,
                baseline,
                arm,
                "frontier",
                given["effect"],
            )
        )
    warnings = _unbracketed(study, arm, *(Arm(r, Variant.dense.value) for r in given["rivals"]))
    return _decide(checks, warnings)


def _log_changes(stage: StageTest) -> list[float] | None:
    """The deciding pairs' ln(masked / dense); None with a diverged or non-positive run."""
    pairs = list(zip(stage.baseline_values, stage.values, strict=True))
    if not pairs or any(not (0 < b < math.inf and 0 < v < math.inf) for b, v in pairs):
        return None
    return [math.log(v) - math.log(b) for b, v in pairs]


def heavy_tailed(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """Magma beats Adam under heavy-tailed noise, by more than under light-tailed noise."""
    found = {}
    for role in ("heavy", "light"):
        study = studies[role]
        base = _one_base(study) or given["base"]
        pair = (Arm(base, Variant.dense.value), Arm(base, Variant.magma.value))
        comparisons = _comparisons(study, [pair], effect=given["effect"])
        if not comparisons:
            return Finding(Support.inconclusive, (f"{role}: no dense and magma arms of a base",))
        found[role] = comparisons[0]
    heavy, light = found["heavy"], found["light"]
    paired = _decide(
        [_from_comparison("heavy: magma vs dense", heavy)],
        _warnings([heavy], "heavy: ") + _warnings([light], "light: "),
    )
    d_heavy, d_light = _log_changes(heavy.deciding), _log_changes(light.deciding)
    if d_heavy is None or d_light is None or min(len(d_heavy), len(d_light)) < 2:
        line = "heavy - light: no interval (needs 2 finite positive pairs a study)"
        difference = Support.inconclusive
    else:
        line, difference = heavy_minus_light(d_heavy, d_light, studies["heavy"].mode)
    numbers = (*paired.numbers, f"light: {light.summary}", line)
    return Finding(_combine([paired.support, difference]), numbers, paired.warnings)


def heavy_minus_light(
    heavy: Sequence[float], light: Sequence[float], mode: Mode
) -> tuple[str, Support]:
    """The difference of the two studies' mean log changes (heavy - light) with its Welch
    (1 - ALPHA) interval: supports when heavy gains detectably more, contradicts when light
    does. Together with "heavy is better" it is an intersection-union test: each part at
    ALPHA, no adjustment needed."""
    welch = stats.ttest_ind(heavy, light, equal_var=False)
    low, high = welch.confidence_interval(1 - ALPHA)
    # a gain is a negative log change when minimising
    heavy_gains_more = high < 0 if mode == "min" else low > 0
    light_gains_more = low > 0 if mode == "min" else high < 0
    if heavy_gains_more:
        found, support = "heavy gains more", Support.supported
    elif light_gains_more:
        found, support = "light gains more", Support.contradicted
    else:
        found, support = "no detectable difference", Support.inconclusive
    diff = statistics.fmean(heavy) - statistics.fmean(light)
    line = (
        f"heavy - light, log change: {diff:+.4f} [{low:+.4f}, {high:+.4f}] (Welch, "
        f"p {welch.pvalue:.3g}): {found}"
    )
    return line, support


def _at_floor(comparison: Comparison, floor: float) -> bool:
    """Both arms' deciding runs at or below the numerical floor: their ratio is rounding."""
    values = [*comparison.deciding.baseline_values, *comparison.deciding.values]
    return bool(values) and all(0 <= v <= floor for v in values)


def quadratic(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """Magma converges faster than AdamW on the heterogeneous quadratic, and comparably on
    the homogeneous one."""
    margin, floor = given["neutral_margin"], given["numerical_floor"]
    checks, warnings = [], []
    for role, label in (("heterogeneous", "better"), ("homogeneous", "equivalent")):
        study = studies[role]
        base = _one_base(study) or given["base"]
        pair = (Arm(base, Variant.dense.value), Arm(base, Variant.magma.value))
        neutral = role == "homogeneous"
        comparisons = _comparisons(
            study,
            [pair],
            margin=margin if neutral else None,
            effect=margin if neutral else given["effect"],
        )
        if not comparisons:
            checks.append(Check(f"{role}: magma vs dense", None, ("no dense and magma arms",)))
            continue
        comparison = comparisons[0]
        warnings += _warnings([comparison], f"{role}: ")
        # a mean log loss is the convergence measure that has no floor; a final loss has one
        at_floor = _metric(study) not in LOG_METRICS and _at_floor(comparison, floor)
        limits = ["both arms at the numerical floor: a tie"] if at_floor else []
        kwargs: dict[str, Any] = (
            {"supports": _equivalent, "contradicts": _beyond_margin(margin)} if neutral else {}
        )
        checks.append(
            _check(
                f"{role}: magma vs dense ({label})",
                comparison.deciding,
                [*comparison.limits, *limits],
                **kwargs,
            )
        )
    return _decide(checks, warnings)


def components(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """Masking attention+MLP beats masking attention only, MLP only, or everything, and
    beats the dense base."""
    study = studies["study"]
    base = _one_base(study)
    if base is None:
        return Finding(Support.inconclusive, ("the study does not run exactly one base",))
    arm, dense = Arm(base, Variant.magma.value), Arm(base, Variant.dense.value)
    chosen_value = given["components"]
    chosen = _best_where(study, arm, components=chosen_value)
    values = sorted({str(t.value("components")) for t in study.trials if t.arm == arm})
    checks = [
        _compare_configs(
            study,
            f"{chosen_value} vs {value}",
            _best_where(study, arm, components=value),
            chosen,
            effect=given["effect"],
        )
        for value in values
        if value != chosen_value
    ]
    checks.append(
        _compare_configs(
            study,
            f"{arm.label} ({chosen_value}) vs {dense.label}",
            _best_where(study, dense),
            chosen,
            effect=given["effect"],
        )
    )
    return _decide(checks, _unbracketed(study, arm, dense))


def granularity(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """Block masking loses nothing against finer granularities (better or equivalent
    within the margin), and damping (magma) beats undamped sampling (skipupdate)."""
    study = studies["study"]
    base = _one_base(study)
    if base is None:
        return Finding(Support.inconclusive, ("the study does not run exactly one base",))
    arm, undamped = Arm(base, Variant.magma.value), Arm(base, Variant.skipupdate.value)
    block, margin = given["granularity"], given["margin"]
    chosen = _best_where(study, arm, granularity=block)
    values = sorted({str(t.value("granularity")) for t in study.trials if t.arm == arm})
    checks = [
        _compare_configs(
            study,
            f"{block} vs {value}",
            _best_where(study, arm, granularity=value),
            chosen,
            margin=margin,
            effect=margin,
            supports=_better_or_equivalent,
            contradicts=_worse_beyond_margin,
        )
        for value in values
        if value != block
    ]
    checks.append(
        _compare_configs(
            study,
            f"{arm.label} vs {undamped.label} ({block})",
            _best_where(study, undamped, granularity=block),
            chosen,
            effect=given["effect"],
        )
    )
    return _decide(checks, _unbracketed(study, arm, undamped))


def choices_text(values: Mapping[str, Any]) -> str:
    """``score_init=0.5, momentum=previous``: a combination of choices as a label."""
    return ", ".join(f"{name}={value}" for name, value in values.items())


def _against_algorithm_1(
    studies: Mapping[str, StudyView],
    given: Parameters,
    variants: Mapping[str, Mapping[str, Any]],
    supports: Callable[[PairedTest], bool],
    contradicts: Callable[[float], Callable[[PairedTest], bool]],
) -> Finding:
    """In each role's study (its role's ``margins`` entry the equivalence margin), each of
    ``variants`` (a label and the choices it changes from ``algorithm_1``) against
    Algorithm 1's choices, both in the base's magma arm at their best LR. A configuration
    whose LR search stopped unbracketed limits its comparison (its best may lie beyond), and
    so does a flip of ``decay_on_skip`` without weight decay (it cannot matter there)."""
    ours = given["algorithm_1"]
    checks = []
    for role, study in studies.items():
        base, margin = _one_base(study), given["margins"][role]
        if base is None:
            checks.append(Check(role, None, ("the study does not run exactly one base",)))
            continue
        arm = Arm(base, Variant.magma.value)
        baseline = _best_where(study, arm, **ours)
        for label, changed in variants.items():
            chosen = _best_where(study, arm, **{**ours, **changed})
            check = _compare_configs(
                study,
                f"{role}: {label} vs Algorithm 1",
                baseline,
                chosen,
                margin=margin,
                effect=margin,
                supports=supports,
                contradicts=contradicts(margin),
            )
            found = [c for c in (baseline, chosen) if c is not None]
            limits = _unbracketed_configs(study, arm, found)
            if "decay_on_skip" in changed and any(not c.value("weight_decay") for c in found):
                limits += ("weight_decay 0: decay_on_skip changes nothing",)
            checks.append(replace(check, limits=check.limits + limits))
    return _decide(checks)


def _unbracketed_configs(
    study: StudyView, arm: Arm, chosen: Sequence[Configuration]
) -> tuple[str, ...]:
    """The unbracketed LR searches of these configurations of ``arm`` (a point of the
    study's grid each), as limits."""
    trials = [t for config in chosen for t in config.trials]
    found = unbracketed_warnings(trials, arm, study.bracket)
    return tuple(dict.fromkeys(w.message for w in found))


def _worse_beyond(margin: float) -> Callable[[PairedTest], bool]:
    """Detectably worse by more than ``margin``: a loss that matters."""
    beyond = _beyond_margin(margin)
    return lambda test: test.verdict == Verdict.worse and beyond(test)


def implementation_choices(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """Each open choice of Algorithm 1, flipped alone from ours, changes the result by less
    than the margin (TOST) on each workload; a detectable change beyond it contradicts."""
    flips = {choices_text(flip): flip for flip in given["flips"]}
    return _against_algorithm_1(studies, given, flips, _equivalent, _beyond_margin)


def public_implementations(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    """No public implementation's combination of choices is worse than Algorithm 1's:
    each is better or equivalent within the margin; one worse beyond it contradicts."""
    combinations = {
        f"{name} ({choices_text(changed)})": changed
        for name, changed in given["implementations"].items()
    }
    return _against_algorithm_1(studies, given, combinations, _better_or_equivalent, _worse_beyond)
