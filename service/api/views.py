"""ORM rows to response models (the only place that knows both shapes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from service.api.schemas import (
    ArmBest,
    ArmComparison,
    BestTrial,
    Bracket,
    BracketArm,
    ClaimRow,
    ClaimsReport,
    ClaimStudy,
    SeedsNeeded,
    StageResult,
    StudyDetail,
    StudySummary,
    StudyVerdict,
    Timings,
    VerdictWarning,
)
from service.core.errors import not_found
from studies.analysis import claims as claim_tests
from studies.analysis.arms import Configuration
from studies.analysis.claims_report import scale
from studies.analysis.inference import ALPHA, DEFAULT_EFFECT, POWER
from studies.analysis.verdict import (
    LR,
    MIN_DECIDING_PAIRS,
    Comparison,
    StageTest,
    verdicts,
)
from studies.best import BestConfiguration, best_configuration
from studies.records import Arm
from studies.results import claim_studies, load_study, study_bracket
from studies.storage.models import Study, utcnow
from studies.storage.repository import best_sql, reads, trial_lifecycle

# A finished study's trials never change, so its best configuration is cached per process,
# keyed by what identifies the row's content (ids alone can be reused by SQLite after a
# delete).
_finished_best: dict[tuple[int, datetime, datetime], BestConfiguration | None] = {}
CACHE_LIMIT = 4096


def _remember(cache: dict, key: tuple, value: object) -> None:
    if len(cache) >= CACHE_LIMIT:
        cache.pop(next(iter(cache)))
    cache[key] = value


def summary(study: Study, progress: dict[str, int]) -> StudySummary:
    return StudySummary(
        id=study.id,
        name=study.name,
        status=study.status,
        runs=study.runs,
        progress=progress,
        created_at=study.created_at,
        started_at=study.started_at,
        finished_at=study.finished_at,
    )


def best_of(session: Session, study: Study) -> BestConfiguration | None:
    key = (study.id, study.created_at, study.finished_at) if study.finished_at else None
    if key is not None and key in _finished_best:
        return _finished_best[key]
    number = best_sql.best_configuration_number(session, study.id, study.mode)
    best = (
        None
        if number is None
        else best_configuration(
            trial_lifecycle.configuration_trials(session, study.id, number), study.mode
        )
    )
    if key is not None:
        _remember(_finished_best, key, best)
    return best


def detail(session: Session, study: Study) -> StudyDetail:
    progress = reads.trial_status_counts(session, [study.id])[study.id]
    best = best_of(session, study)
    end = study.finished_at or utcnow()
    bracket = study_bracket(session, study)
    return StudyDetail(
        **summary(study, progress).model_dump(),
        spec=study.spec,
        error=study.error,
        best=BestTrial(
            configuration=best.configuration,
            objective=best.objective,
            objective_std=best.objective_std,
            trial_ids=best.trial_ids,
            params=best.params,
        )
        if best
        else None,
        timings=Timings(
            queued_seconds=_seconds(study.created_at, study.started_at),
            running_seconds=_seconds(study.started_at, end) if study.started_at else None,
        ),
        bracket=Bracket(
            done=bracket.done,
            rounds=bracket.rounds,
            arms=[
                BracketArm(
                    arm=arm.params,
                    status=arm.status,
                    lrs=list(arm.lrs),
                    best_lr=arm.best_lr,
                    best_value=arm.best_value,
                )
                for arm in bracket.arms
            ],
        )
        if bracket
        else None,
    )


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def verdict(session: Session, study: Study) -> StudyVerdict:
    """Each masked arm against its dense base (``studies.analysis.verdict``), from the
    trials as the dashboards read them; a study that runs a confirmation stage is decided
    on it, even before it has run."""
    data = load_study(session, study.id)
    if data is None:  # deleted since the caller read it
        raise not_found("study", study.id)
    comparisons = verdicts(
        data.trials,
        data.mode,
        bracket=data.bracket,
        confirming=data.confirming,
        effect=DEFAULT_EFFECT,
        metric=data.metric,
        design=data.design,
    )
    return StudyVerdict(
        study_id=data.id,
        metric=data.metric,
        mode=data.mode,
        confidence=1 - ALPHA,
        power=POWER,
        effect=DEFAULT_EFFECT,
        min_deciding_pairs=MIN_DECIDING_PAIRS,
        comparisons=[_comparison(c) for c in comparisons],
    )


def _comparison(comparison: Comparison) -> ArmComparison:
    return ArmComparison(
        baseline=_arm_best(comparison.baseline, comparison.baseline_best),
        arm=_arm_best(comparison.arm, comparison.best),
        selection=_stage(comparison.selection),
        confirmation=(
            _stage(comparison.confirmation) if comparison.confirmation is not None else None
        ),
        deciding_stage=comparison.deciding.stage.value,
        decision=comparison.decision_code,
        limits=list(comparison.limits),
        warnings=[
            VerdictWarning(code=w.code.value, message=w.message) for w in comparison.warnings
        ],
        summary=comparison.summary,
    )


def _stage(stage: StageTest) -> StageResult:
    test = stage.test
    needed = test.seeds_needed if test is not None else None
    seeds_needed = (
        SeedsNeeded(effect=needed.effect, estimate=needed.estimate, upper=needed.upper)
        if needed is not None
        else None
    )
    return StageResult(
        stage=stage.stage.value,
        method=test.method.value if test is not None else None,
        seeds=stage.n,
        change=test.change if test is not None else None,
        low=test.low if test is not None else None,
        high=test.high if test is not None else None,
        p_value=test.p_value if test is not None else None,
        p_equivalence=test.p_equivalence if test is not None else None,
        difference_sd=test.sd if test is not None else None,
        verdict=test.verdict.value if test is not None else None,
        seeds_needed=seeds_needed,
        diverged=test.diverged if test is not None else 0,
        reason=stage.reason,
    )


def _arm_best(arm: Arm, best: Configuration | None) -> ArmBest:
    return ArmBest(
        arm=arm.label,
        configuration=best.number if best else None,
        lr=float(best.value(LR)) if best else None,
        objective=best.summary.mean if best else None,
        params=best.params if best else None,
        trial_ids=list(best.trial_ids) if best else [],
    )


def claims(session: Session) -> ClaimsReport:
    """Every claim of the paper tested on its presets' newest complete studies
    (``studies.analysis.claims``), as the claims page shows them."""
    results = claim_tests.evaluate(claim_studies(session, claim_tests.roles()))
    return ClaimsReport(
        registry_version=claim_tests.registry_version(),
        shared_rule=claim_tests.SHARED_RULE,
        claims=[
            ClaimRow(
                id=result.claim.id,
                reference=result.claim.reference,
                statement=result.claim.statement,
                definition=result.claim.definition,
                parameters=dict(result.claim.parameters),
                studies=[
                    ClaimStudy(
                        role=role.name,
                        preset=role.preset,
                        workload=dict(role.workload),
                        study_id=study.id if study else None,
                        scale=scale(study.spec) if study else None,
                    )
                    for role in result.claim.roles
                    for study in [result.studies[role.name]]
                ],
                support=result.finding.support.value,
                numbers=list(result.finding.numbers),
                warnings=list(result.finding.warnings),
            )
            for result in results
        ],
    )
