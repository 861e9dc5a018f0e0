"""How each claim of the paper is decided: one function per claim, reading the studies of
its roles and the parameters its registry entry fixes (``studies.analysis.claims``).

A rule is conservative: it supports or contradicts a claim only on a paired difference
whose interval excludes 0 (``verdict``) or a measured number against a stated threshold,
and says *inconclusive*, with the reason, short of that. Where a study ran a confirmation
stage (fresh seeds) its verdict decides: the selection stage's best carries the winner's
curse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from studies.analysis.arms import (
    Configuration,
    best_configuration,
    best_per_cell,
    configurations,
)
from studies.analysis.lr_window import lr_windows
from studies.analysis.objective import Mode, rank
from studies.analysis.verdict import (
    MIN_SEEDS,
    Comparison,
    Estimate,
    Verdict,
    paired_estimate,
    unbracketed_warnings,
    verdicts,
)
from studies.records import Arm, BracketSearch, TrialRecord
from worker.contract import Names, Variant


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


def _improvement(estimate: Estimate, mode: Mode) -> float:
    """The change with the sign that makes a gain positive."""
    return -estimate.change if mode == "min" else estimate.change


def _masked(comparisons: Sequence[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.arm.variant == Variant.magma.value]


def _decisive(comparison: Comparison) -> Estimate | None:
    """The confirmation stage's estimate when the study ran one (fresh seeds: free of the
    selection's winner's curse), else the selection stage's."""
    return comparison.confirmation or comparison.estimate


def _line(comparison: Comparison) -> str:
    """The comparison's summary, and its confirmation stage's when there is one."""
    if comparison.confirmation is None:
        return comparison.summary
    return f"{comparison.summary}; confirmation: {comparison.confirmation.describe()}"


def _warnings(comparisons: Sequence[Comparison]) -> tuple[str, ...]:
    """Each comparison's warnings, named by its masked arm when there are several."""
    if len(comparisons) == 1:
        return tuple(w.message for w in comparisons[0].warnings)
    return tuple(f"{c.arm.label}: {w.message}" for c in comparisons for w in c.warnings)


def table1(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    study = studies["study"]
    comparisons = _masked(verdicts(study.trials, study.mode, bracket=study.bracket))
    if not comparisons:
        return Finding(Support.inconclusive, ("no base was run both dense and with magma",))
    found = [estimate.verdict if (estimate := _decisive(c)) else None for c in comparisons]
    if Verdict.worse in found:
        support = Support.contradicted
    elif all(v == Verdict.better for v in found):
        support = Support.supported
    else:
        support = Support.inconclusive
    return Finding(support, tuple(_line(c) for c in comparisons), _warnings(comparisons))


def _neighbours(values: Sequence[float], centre: float) -> list[float] | None:
    """The centre and its tested neighbours on each side; None when it was not tested."""
    ordered = sorted(set(values))
    if centre not in ordered:
        return None
    i = ordered.index(centre)
    return ordered[max(i - 1, 0) : i + 2]


def sensitivity(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    study = studies["study"]
    masked = [t for t in study.trials if t.arm.variant == Variant.magma.value]
    cells = best_per_cell(masked, "p", "tau", study.mode)
    ps = _neighbours([float(p) for p, _ in cells], given["p"])
    taus = _neighbours([float(tau) for _, tau in cells], given["tau"])
    if ps is None or taus is None or (given["p"], given["tau"]) not in cells:
        return Finding(Support.inconclusive, ("p=0.5, tau=2 was not run with magma",))
    if len(ps) < 2 or len(taus) < 2:
        return Finding(Support.inconclusive, ("p or tau has no tested neighbour of 0.5 or 2",))
    hood = {(p, tau): cells.get((p, tau)) for p in ps for tau in taus if (p, tau) in cells}
    failed = [cell for cell, config in hood.items() if config is None]
    if failed:
        text = ", ".join(f"p={p:g} tau={tau:g}" for p, tau in failed)
        return Finding(Support.contradicted, (f"no configuration completed at {text}",))
    configs = {cell: config for cell, config in hood.items() if config is not None}
    ranked = sorted(configs, key=lambda cell: rank(configs[cell].summary.mean, study.mode))
    best, worst = configs[ranked[0]], configs[ranked[-1]]
    if best.summary.mean == 0:
        return Finding(Support.inconclusive, ("the best cell's objective is 0",))
    spread = abs(worst.summary.mean - best.summary.mean) / abs(best.summary.mean)
    cells_text = "; ".join(
        f"p={p:g} tau={tau:g}: {config.summary.mean:.6g}" for (p, tau), config in configs.items()
    )
    # A spread beyond the tolerance contradicts only when it is no seed noise: the worst
    # cell is detectably worse than the best, paired by seed (the tested-differences rule).
    estimate = paired_estimate(best.trials, worst.trials, study.mode)
    numbers = (
        f"spread {spread:.2%} of the best cell over {len(configs)} cells "
        f"(tolerance {given['spread_tolerance']:.0%})",
        cells_text,
        f"worst cell vs best: {_describe(estimate)}",
    )
    seeds = min(len(config.trials) for config in configs.values())
    warnings = (
        (f"{seeds} seed(s) a cell: the spread includes seed noise",) if seeds < MIN_SEEDS else ()
    )
    if spread <= given["spread_tolerance"]:
        support = Support.supported
    elif estimate is not None and estimate.verdict == Verdict.worse:
        support = Support.contradicted
    else:
        support = Support.inconclusive
    return Finding(support, numbers, warnings)


def lr_window(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    study = studies["study"]
    windows = lr_windows(study.trials, study.mode, given["window_delta"])
    numbers: list[str] = []
    warnings: list[str] = []
    found: list[Support] = []
    for arm in windows:
        if arm.variant != Variant.magma.value or Arm(arm.base, "dense") not in windows:
            continue
        masked, dense = windows[arm], windows[Arm(arm.base, "dense")]
        m, d = getattr(masked, "width", None), getattr(dense, "width", None)
        if m is None or d is None:
            numbers.append(f"{arm.label} vs {arm.base}: a window is missing (no stable LR)")
            found.append(Support.inconclusive)
            continue
        numbers.append(f"{arm.label} vs {arm.base}: {m:.2f} vs {d:.2f} decades")
        for window in (masked, dense):
            if _censored(window):
                warnings.append(f"{window.arm.label}: its window reaches the end of the LR grid")
            warnings += _unbracketed(study, window.arm)
        if m > d:
            found.append(Support.inconclusive if _censored(dense) else Support.supported)
        elif m < d:
            found.append(Support.inconclusive if _censored(masked) else Support.contradicted)
        else:
            found.append(Support.inconclusive)
    seeds = {t.seed_index for t in study.trials}
    if len(seeds) < MIN_SEEDS:
        warnings.append(f"{len(seeds)} seed(s): the windows are drawn through seed noise")
    return Finding(_all_or_any(found), tuple(numbers), tuple(warnings))


def _censored(window: Any) -> bool:
    """Whether a window ends at the first or last tested LR (it may extend beyond)."""
    points = getattr(window, "points", ())
    low, high = getattr(window, "low", None), getattr(window, "high", None)
    if not points or low is None or high is None:
        return False
    return low <= points[0].lr or high >= points[-1].lr


def _all_or_any(found: Sequence[Support]) -> Support:
    """Contradicted by any part, supported by every part, else inconclusive."""
    if Support.contradicted in found:
        return Support.contradicted
    if found and all(s == Support.supported for s in found):
        return Support.supported
    return Support.inconclusive


def _one_comparison(study: StudyView) -> Comparison | None:
    masked = _masked(verdicts(study.trials, study.mode, bracket=study.bracket))
    return masked[0] if masked else None


def heavy_tailed(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    heavy, light = _one_comparison(studies["heavy"]), _one_comparison(studies["light"])
    if heavy is None or light is None:
        return Finding(Support.inconclusive, ("a study has no dense and magma arms of a base",))
    numbers = (f"heavy: {_line(heavy)}", f"light: {_line(light)}")
    warnings = tuple(f"heavy: {w}" for w in _warnings([heavy])) + tuple(
        f"light: {w}" for w in _warnings([light])
    )
    heavy_estimate, light_estimate = _decisive(heavy), _decisive(light)
    if heavy_estimate is None or light_estimate is None:
        return Finding(Support.inconclusive, numbers, warnings)
    gain_heavy = _improvement(heavy_estimate, studies["heavy"].mode)
    gain_light = _improvement(light_estimate, studies["light"].mode)
    if heavy_estimate.verdict == Verdict.worse or (
        light_estimate.verdict == Verdict.better and gain_light >= gain_heavy
    ):
        support = Support.contradicted
    elif heavy_estimate.verdict == Verdict.better and gain_heavy > gain_light:
        support = Support.supported
    else:
        support = Support.inconclusive
    return Finding(support, numbers, warnings)


def quadratic(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    hetero = _one_comparison(studies["heterogeneous"])
    homo = _one_comparison(studies["homogeneous"])
    if hetero is None or homo is None:
        return Finding(Support.inconclusive, ("a study has no dense and magma arms of a base",))
    numbers = (f"heterogeneous: {_line(hetero)}", f"homogeneous: {_line(homo)}")
    warnings = tuple(f"heterogeneous: {w}" for w in _warnings([hetero])) + tuple(
        f"homogeneous: {w}" for w in _warnings([homo])
    )
    homo_estimate, hetero_estimate = _decisive(homo), _decisive(hetero)
    margin = given["neutral_margin"]
    low, high = (homo_estimate.low, homo_estimate.high) if homo_estimate else (None, None)
    neutral = low is not None and high is not None and -margin <= low <= high <= margin
    outside = low is not None and high is not None and (low > margin or high < -margin)
    helps = hetero_estimate.verdict if hetero_estimate else None
    if helps == Verdict.worse or outside:
        support = Support.contradicted
    elif helps == Verdict.better and neutral:
        support = Support.supported
    else:
        support = Support.inconclusive
    return Finding(support, numbers, warnings)


def _best_where(
    trials: Sequence[TrialRecord], arm: Arm, name: str, value: Any, mode: Mode
) -> Configuration | None:
    chosen = [t for t in trials if t.arm == arm and t.value(name) == value]
    return best_configuration(configurations(chosen), mode)


def _choice(
    study: StudyView, arm: Arm, name: str, chosen: Any, baseline: Arm, baseline_value: Any
) -> Finding:
    """``chosen`` (of ``name``) in ``arm`` is best or tied among the values ``arm`` ran and
    better than ``baseline`` (at ``baseline_value`` of ``name``, None for its best)."""
    trials, mode = study.trials, study.mode
    values = sorted({t.value(name) for t in trials if t.arm == arm}, key=str)
    best = _best_where(trials, arm, name, chosen, mode)
    if best is None:
        return Finding(Support.inconclusive, (f"{arm.label} at {name}={chosen} never completed",))
    if baseline_value is None:
        base = best_configuration(configurations(t for t in trials if t.arm == baseline), mode)
    else:
        base = _best_where(trials, baseline, name, baseline_value, mode)
    found: list[Support] = []
    numbers: list[str] = []
    rivals = 0
    for value in values:
        other = _best_where(trials, arm, name, value, mode) if value != chosen else None
        if other is None:
            continue
        rivals += 1
        estimate = paired_estimate(other.trials, best.trials, mode)
        numbers.append(f"{name}={chosen} vs {name}={value}: {_describe(estimate)}")
        found.append(
            Support.contradicted
            if estimate is not None and estimate.verdict == Verdict.worse
            else Support.supported
        )
    if rivals == 0:
        found.append(Support.inconclusive)
        numbers.append(f"{arm.label} ran no other {name} that completed")
    label = baseline.label + (f" ({name}={baseline_value})" if baseline_value else "")
    estimate = paired_estimate(base.trials, best.trials, mode) if base is not None else None
    numbers.append(f"{arm.label} ({name}={chosen}) vs {label}: {_describe(estimate)}")
    verdict = estimate.verdict if estimate is not None else None
    found.append(
        {Verdict.better: Support.supported, Verdict.worse: Support.contradicted}.get(
            verdict, Support.inconclusive
        )
    )
    seeds = len(best.trials)
    warnings = [f"{seeds} seed(s) a configuration"] if seeds < MIN_SEEDS else []
    warnings += _unbracketed(study, arm) + _unbracketed(study, baseline)
    return Finding(_all_or_any(found), tuple(numbers), tuple(warnings))


def _unbracketed(study: StudyView, arm: Arm) -> list[str]:
    return [w.message for w in unbracketed_warnings(study.trials, arm, study.bracket)]


def _describe(estimate: Estimate | None) -> str:
    return "no shared seed" if estimate is None else estimate.difference


def _base(study: StudyView) -> str | None:
    bases = {t.arm.base for t in study.trials}
    return bases.pop() if len(bases) == 1 else None


def components(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    study = studies["study"]
    base = _base(study)
    if base is None:
        return Finding(Support.inconclusive, ("the study does not run exactly one base",))
    arm, dense = Arm(base, Variant.magma.value), Arm(base, Variant.dense.value)
    return _choice(study, arm, "components", given["components"], dense, None)


def granularity(studies: Mapping[str, StudyView], given: Parameters) -> Finding:
    study = studies["study"]
    base = _base(study)
    if base is None:
        return Finding(Support.inconclusive, ("the study does not run exactly one base",))
    arm, undamped = Arm(base, Variant.magma.value), Arm(base, Variant.skipupdate.value)
    return _choice(study, arm, "granularity", given["granularity"], undamped, given["granularity"])
