"""Tested differences: each masked arm against its dense base, both at their own best
configuration, paired by seed, with a plain verdict and the warnings that qualify it.

The definitions (the README's "Tested differences" repeats them):

- **Bests.** Each arm's best configuration by the study's one rule
  (``arms.best_configuration``, which follows ``studies.best``): only a configuration whose
  every seed completed competes.
- **Pairs.** The two bests' trials with the same ``seed_index``. A seed gives every arm the
  same data order and initialisation, so a pair's difference cancels the seed's own luck.
- **Log path**, when every paired objective is > 0: d_i = ln(masked_i) - ln(dense_i); the
  paired Student-t interval d_mean +- t_{0.975, n-1} s / sqrt(n) (``intervals.mean_interval``,
  s the sample SD, n the pairs); reported as the % change exp(d_mean) - 1 (the ratio of
  the geometric means, minus 1) with the interval [exp(low) - 1, exp(high) - 1].
- **Bootstrap path**, when some objective is <= 0 and has no log: x_i = (masked_i -
  dense_i) / |mean(dense)|, the difference of the means as a fraction of the dense mean;
  the change is mean(x) and its interval the 95% percentile interval of 9,999 resamples
  of the seeds, each resampled seed carrying both arms (``scipy.stats.bootstrap``, seeded,
  so the same trials always give the same interval). It needs 3 pairs for an interval:
  resampling 2 pairs only spans their two differences, far too narrow to trust.
- **Verdict.** ``better`` or ``worse`` when the interval excludes 0, by the way the study
  optimises (a negative change is better when minimising); otherwise no detectable
  difference at this number of seeds, which is also the verdict without an interval.
- **Seeds needed** to detect a 1% change: the smallest n >= 2 at which a two-sided paired
  t-test at alpha 0.05 has 80% power against a true change of ln(1.01) on the log path
  (0.01 on the bootstrap path's scale), given the observed SD s of the paired
  differences: power = P(|T| > t_{0.975, n-1}) for T noncentral t with n - 1 degrees of
  freedom and noncentrality (effect / s) sqrt(n). None with fewer than 2 pairs: no SD.
- **Warnings** (``WarningCode``): an arm's best LR is the smallest or largest it tested
  (an LR with a complete, diverged or pruned configuration); in a bracket study instead,
  its search stopped (or has not yet stopped) before bracketing its best LR, as the
  study's latest ``bracket`` event says (``BracketSearch``, read by ``studies.results``),
  naming the limit that stopped it; fewer than 3 pairs; a trial of an arm diverged at its
  chosen LR (in any configuration with that LR, or in its confirmation runs); the
  confirmation stage's verdict differs from this one.

The confirmation stage (each arm's chosen configuration rerun on fresh seeds, by a bracket
study's ``protocol.confirm_seeds``) is read from the trials marked ``stage: confirm``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from studies.analysis.arms import (
    ARM_PARAMS,
    Configuration,
    best_configuration,
    configurations,
    group_by_arm,
)
from studies.analysis.intervals import mean_interval
from studies.analysis.objective import Mode, check_mode
from studies.best import STAGE_KEY, is_confirmation
from studies.records import Arm, ArmSearch, BracketSearch, TrialRecord
from worker.contract import Names, Variant

CONFIDENCE = 0.95
#: the change the seeds-needed estimate is for, as a fraction
DETECTABLE_CHANGE = 0.01
POWER = 0.80
#: fewer pairs than this is warned about (and gives no bootstrap interval)
MIN_SEEDS = 3
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
#: the searched value the grid-edge and divergence warnings are about
LR = "lr"
#: configuration outcomes that say how an LR did (failed or pending ones say nothing)
TESTED_OUTCOMES = ("complete", "diverged", "pruned")


class Verdict(Names):
    better = "better"
    worse = "worse"
    no_detectable_difference = "no_detectable_difference"


class Method(Names):
    log_t = "log-t"  # paired Student-t interval on the log of the objective
    bootstrap = "bootstrap"  # paired percentile bootstrap of the difference of means


class WarningCode(Names):
    best_at_grid_edge = "best_at_grid_edge"
    few_seeds = "few_seeds"
    diverged_at_chosen_lr = "diverged_at_chosen_lr"
    confirmation_disagrees = "confirmation_disagrees"
    unbracketed = "unbracketed"


@dataclass(frozen=True)
class VerdictWarning:
    code: WarningCode
    message: str


@dataclass(frozen=True)
class Estimate:
    """The paired change of a masked arm against its dense base, as a fraction."""

    method: Method
    #: pairs (seeds)
    n: int
    #: e.g. -0.018 for 1.8% lower than dense
    change: float
    #: its 95% interval; None without one (one pair; fewer than 3 for the bootstrap)
    low: float | None
    high: float | None
    #: SD of the paired differences (log, or fraction of the dense mean); None for one pair
    sd: float | None
    seeds_needed: int | None
    verdict: Verdict

    @property
    def verdict_text(self) -> str:
        if self.verdict == Verdict.no_detectable_difference:
            return f"no detectable difference at {_seeds(self.n)}"
        return self.verdict.value

    @property
    def difference(self) -> str:
        """``-1.8% [-3.1%, -0.5%] better``: the change, its interval and the verdict."""
        interval = (
            f"[{percent(self.low)}, {percent(self.high)}]"
            if self.low is not None and self.high is not None
            else "[no interval]"
        )
        return f"{percent(self.change)} {interval} {self.verdict_text}"

    def describe(self) -> str:
        """``-1.8% [-3.1%, -0.5%] better (5 seeds; 1% needs 12 seeds)``."""
        method = ", bootstrap" if self.method == Method.bootstrap else ""
        target = f"{DETECTABLE_CHANGE:.0%} needs"
        needs = (
            f"{target} {self.seeds_needed} seeds"
            if self.seeds_needed is not None
            else f"{target}: no variance estimate"
        )
        counts = f"({_seeds(self.n)}{method}; {needs})"
        return f"{self.difference} {counts}"


@dataclass(frozen=True)
class Comparison:
    """One masked arm against the dense arm of its base."""

    baseline: Arm
    arm: Arm
    baseline_best: Configuration | None
    best: Configuration | None
    #: None when there is nothing to pair; ``reason`` says why
    estimate: Estimate | None
    reason: str | None
    #: the same estimate over the confirmation stage's fresh seeds, when it ran
    confirmation: Estimate | None
    warnings: tuple[VerdictWarning, ...]

    @property
    def summary(self) -> str:
        """The one line every surface shows: ``adamw+magma vs adamw: -1.8% [...] better ...``."""
        head = f"{self.arm.label} vs {self.baseline.label}: "
        if self.estimate is None:
            return f"{head}no verdict: {self.reason}"
        return head + self.estimate.describe()


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def verdicts(
    trials: Iterable[TrialRecord],
    mode: Mode,
    confirmation: Mapping[Arm, Sequence[TrialRecord]] | None = None,
    bracket: BracketSearch | None = None,
) -> list[Comparison]:
    """Every masked arm against its base's dense arm (bases and variants in canonical
    order); ``confirmation``: each arm's confirmation-stage trials, none of them in
    ``trials``. Without it, the confirmation trials of a bracket study (params ``stage:
    confirm``) are taken out of ``trials`` as it. ``bracket``: a bracket study's LR search,
    whose stops replace the grid-edge warning. See the module docstring."""
    check_mode(mode)
    if confirmation is None:
        trials = list(trials)
        confirmation = group_by_arm(t for t in trials if is_confirmation(t.params))
        trials = [t for t in trials if not is_confirmation(t.params)]
    groups = group_by_arm(trials)
    configs = {arm: configurations(arm_trials) for arm, arm_trials in groups.items()}
    bests = {arm: best_configuration(arm_configs, mode) for arm, arm_configs in configs.items()}
    result = []
    for arm in groups:
        baseline = Arm(arm.base, Variant.dense.value)
        if arm.variant == Variant.dense.value or baseline not in groups:
            continue
        base_best, best = bests[baseline], bests[arm]
        warnings: list[VerdictWarning] = []
        for which, chosen in ((baseline, base_best), (arm, best)):
            searches = _searches(groups[which], bracket) if bracket is not None else []
            if bracket is not None and searches:
                warnings += _unbracketed(which, searches, bracket)
            elif chosen is not None:
                warnings += _edge(which, chosen, configs[which])
            if chosen is not None:
                runs = [*groups[which], *confirmation.get(which, ())]
                warnings += _diverged(which, chosen, runs)
        estimate, reason = None, None
        if base_best is None or best is None:
            missing = baseline if base_best is None else arm
            reason = f"{missing.label} has no configuration that completed on every seed"
        else:
            pairs = _paired(base_best.trials, best.trials)
            warnings += _few(len(pairs))
            estimate = _estimate(pairs, mode)
            if not pairs:
                reason = "the two best configurations share no seed"
            elif estimate is None:
                reason = "the dense mean is 0, so a change has no size in percent"
        confirmed = None
        if baseline in confirmation and arm in confirmation:
            confirmed = _estimate(_paired(confirmation[baseline], confirmation[arm]), mode)
        if estimate is not None and confirmed is not None and confirmed.verdict != estimate.verdict:
            warnings.append(
                VerdictWarning(
                    WarningCode.confirmation_disagrees,
                    f"the confirmation stage says {confirmed.describe()}; "
                    f"the selection stage says {estimate.verdict_text}",
                )
            )
        result.append(
            Comparison(baseline, arm, base_best, best, estimate, reason, confirmed, tuple(warnings))
        )
    return result


def paired_estimate(
    baseline: Iterable[TrialRecord], trials: Iterable[TrialRecord], mode: Mode
) -> Estimate | None:
    """``trials`` against ``baseline`` by the same paired rule as ``verdicts``, for any two
    configurations (two component choices of one arm, say); None without a shared seed."""
    return _estimate(_paired(baseline, trials), check_mode(mode))


def _paired(
    dense: Iterable[TrialRecord], masked: Iterable[TrialRecord]
) -> list[tuple[float, float]]:
    """(dense, masked) objectives of the completed trials sharing a seed, by seed."""
    by_seed = {t.seed_index: t.result for t in dense if t.result is not None}
    return [
        (by_seed[t.seed_index], t.result)
        for t in sorted(masked, key=lambda t: t.seed_index)
        if t.result is not None and t.seed_index in by_seed
    ]


def _estimate(pairs: Sequence[tuple[float, float]], mode: Mode) -> Estimate | None:
    """The paired change on the log path or, with a value <= 0, the bootstrap path; None
    without pairs or (bootstrap) with a dense mean of 0."""
    if not pairs:
        return None
    n = len(pairs)
    low = high = None
    if all(d > 0 and m > 0 for d, m in pairs):
        method, effect = Method.log_t, math.log1p(DETECTABLE_CHANGE)
        differences = [math.log(m) - math.log(d) for d, m in pairs]
        interval = mean_interval(differences, CONFIDENCE)
        change = math.expm1(statistics.fmean(differences))
        if interval.low is not None and interval.high is not None:
            low, high = math.expm1(interval.low), math.expm1(interval.high)
    else:
        method, effect = Method.bootstrap, DETECTABLE_CHANGE
        scale = abs(statistics.fmean(d for d, _ in pairs))
        if scale == 0:
            return None
        differences = [(m - d) / scale for d, m in pairs]
        change = statistics.fmean(differences)
        if n >= MIN_SEEDS:
            low, high = _bootstrap(differences)
    sd = statistics.stdev(differences) if n > 1 else None
    needed = seeds_needed(sd, effect) if sd is not None else None
    return Estimate(method, n, change, low, high, sd, needed, verdict(low, high, mode))


def _bootstrap(differences: Sequence[float]) -> tuple[float, float]:
    """The percentile interval of the mean over resampled seeds, from a fixed seed."""
    result = stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def verdict(low: float | None, high: float | None, mode: Mode) -> Verdict:
    """Better or worse when the interval excludes 0 (lower is better when minimising)."""
    if low is None or high is None or low <= 0 <= high:
        return Verdict.no_detectable_difference
    lower = high < 0
    return Verdict.better if lower == (check_mode(mode) == "min") else Verdict.worse


def seeds_needed(sd: float, effect: float) -> int:
    """The smallest n >= 2 at which a two-sided paired t-test at level 1 - CONFIDENCE has
    POWER against a true mean difference ``effect``, differences with SD ``sd``."""
    if sd == 0:
        return 2
    alpha = 1 - CONFIDENCE
    normal = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(POWER)) * sd / effect) ** 2
    n = max(2, math.ceil(normal))  # the normal approximation: a start a step or two away
    while n > 2 and _power(n - 1, effect / sd, alpha) >= POWER:
        n -= 1
    while _power(n, effect / sd, alpha) < POWER:
        n += 1
    return n


def _power(n: int, standardized: float, alpha: float) -> float:
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = standardized * math.sqrt(n)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def _edge(arm: Arm, best: Configuration, configs: Sequence[Configuration]) -> list[VerdictWarning]:
    tested = sorted({float(c.value(LR)) for c in configs if c.outcome in TESTED_OUTCOMES})
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


def _few(n: int) -> list[VerdictWarning]:
    if n >= MIN_SEEDS:
        return []
    message = f"only {_seeds(n)} paired, fewer than {MIN_SEEDS}"
    if n < 2:
        message += ": no variance, so no interval and no seeds-needed estimate"
    return [VerdictWarning(WarningCode.few_seeds, message)]


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
