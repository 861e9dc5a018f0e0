"""Response models: what the API promises to return (and documents in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studies.analysis.claim_rules import Support
from studies.analysis.inference import Method, Verdict
from studies.analysis.verdict import INCONCLUSIVE, Stage, WarningCode
from worker.contract import Mode


class TrialSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    study_id: int
    number: int
    configuration: int = Field(description="seed repeats of one configuration share it")
    seed_index: int
    params: dict[str, Any]
    status: str
    objective: float | None
    last_step: int | None
    attempts: int
    node: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class MetricRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    objective: float | None
    values: dict[str, Any]


class TrialDetail(TrialSummary):
    config: dict[str, Any]
    error: str | None
    checkpoint_path: str | None
    metrics: list[MetricRow]


class Timings(BaseModel):
    queued_seconds: float | None = Field(description="created until a driver started it")
    running_seconds: float | None = Field(description="started until finished (or now)")


class StudySummary(BaseModel):
    id: int
    name: str
    status: str
    runs: int = Field(
        description="trials the study will run: configurations x seeds; a bracket study's "
        "is an upper bound (its extensions stop once every arm's LR is bracketed)"
    )
    progress: dict[str, int] = Field(description="trial count per trial status")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BestTrial(BaseModel):
    configuration: int
    objective: float = Field(description="mean over the configuration's seeds")
    objective_std: float | None
    trial_ids: list[int]
    params: dict[str, Any]


class BracketArm(BaseModel):
    arm: dict[str, Any] = Field(description="the arm's searched values, lr aside")
    status: str = Field(
        description="bracketed (an LR on each side of its best LR completed or diverged; a "
        "failed or pruned one does not count); max_extensions or caps (stopped unbracketed "
        "by that limit); running"
    )
    lrs: list[float] = Field(description="every LR it ran, ascending")
    best_lr: float | None
    best_value: float | None


class Bracket(BaseModel):
    """A bracket study's LR tuning (``protocol.kind: bracket``), as last recorded."""

    done: bool = Field(description="no more selection rounds; the confirmation may follow")
    rounds: int = Field(description="selection rounds run: the first, then the extensions")
    arms: list[BracketArm]


class StudyDetail(StudySummary):
    spec: dict[str, Any]
    error: str | None
    best: BestTrial | None = Field(description="over configurations whose seeds all completed")
    timings: Timings
    bracket: Bracket | None = Field(None, description="a bracket study's LR tuning, else null")


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int
    limit: int
    offset: int


class TrialPage(BaseModel):
    items: list[TrialSummary]
    next_cursor: str | None = Field(
        description="pass as ?after= for the rows that follow. Null once the study has "
        "finished (complete, failed or cancelled) and no rows follow: the end. While the "
        "study is live it is never null, even on an empty page, so a live view polls from it "
        "for new trials"
    )
    has_more: bool = Field(
        description="more rows exist right now after this page; false on a live study means "
        "caught up, not the end (see next_cursor)"
    )


class Preset(BaseModel):
    name: str
    description: str
    paper_reference: str
    runs: int
    spec: dict[str, Any]


class Component(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Component
    ray: Component
    version: str


class PresetSubmission(BaseModel):
    """Submit a preset by name, with nested overrides merged into it."""

    model_config = ConfigDict(extra="forbid")

    preset: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class ArmBest(BaseModel):
    arm: str = Field(description="e.g. adamw, or adamw+magma")
    configuration: int | None = Field(description="its best configuration (the best rule)")
    lr: float | None
    objective: float | None = Field(description="mean over the configuration's seeds")
    params: dict[str, Any] | None
    trial_ids: list[int]


class VerdictWarning(BaseModel):
    code: Literal[WarningCode.values()]  # type: ignore[valid-type]
    message: str


class SeedsNeeded(BaseModel):
    """The pairs a paired t test at two-sided alpha needs for the stated power against
    ``effect``, from the SD of this stage's paired differences."""

    effect: float = Field(description="the change it is sized for, a fraction: 0.01 is 1%")
    estimate: int | None = Field(description="from the observed SD of the differences")
    upper: int | None = Field(
        description="from the (1 - alpha) upper confidence bound on that SD: the cautious "
        "end of the range (from 2 or 3 pairs the observed SD is a poor estimate)"
    )


class StageResult(BaseModel):
    """One stage's paired test of the arm against its baseline (``studies.analysis.
    inference``): every finished seed both configurations ran, a diverged run scored as
    the worst finite value of the comparison (a loss for its arm, never a dropped seed)."""

    stage: Literal[Stage.values()] = Field(  # type: ignore[valid-type]
        description="selection: the runs the bests were chosen on; confirmation: the "
        "chosen configurations rerun on fresh seeds"
    )
    method: Literal[Method.values()] | None = Field(  # type: ignore[valid-type]
        description="log-t: paired Student t on ln(arm / baseline), every value > 0; "
        "scaled-t: paired Student t on (arm - baseline) / |baseline mean|; none: nothing "
        "scored (every run diverged); null: no seed to pair"
    )
    seeds: int = Field(description="pairs: seeds both configurations finished")
    change: float | None = Field(description="arm vs baseline, a fraction: -0.018 is 1.8% lower")
    low: float | None = Field(
        description="the change's (1 - alpha) t interval; null without one (under 2 pairs, "
        "or equal differences on too few pairs for the exact test)"
    )
    high: float | None
    p_value: float | None = Field(description="two-sided, no difference; null without a test")
    p_equivalence: float | None = Field(
        description="TOST p against a stated equivalence margin; null without a margin "
        "(the verdict endpoint states none)"
    )
    difference_sd: float | None = Field(
        description="SD of the paired differences (log, or fraction of the baseline mean)"
    )
    verdict: Literal[Verdict.values()] | None = Field(  # type: ignore[valid-type]
        description="better or worse when p < alpha (by the study's direction), equivalent "
        "when p_equivalence < alpha, else no_detectable_difference; null without a test"
    )
    seeds_needed: SeedsNeeded | None = Field(description="null under 2 pairs")
    diverged: int = Field(description="pairs in which a diverged run was scored as a loss")
    reason: str | None = Field(description="why this stage has no test, or no size")


#: the decision of a comparison whose deciding stage cannot stand (``limits``)


class ArmComparison(BaseModel):
    """A masked arm against its base's dense arm, each at its best configuration, paired
    by seed in each stage; the confirmation stage decides where the study runs one."""

    baseline: ArmBest
    arm: ArmBest
    selection: StageResult = Field(description="the trials the bests were chosen on")
    confirmation: StageResult | None = Field(
        description="the chosen configurations rerun on fresh seeds; null when the study "
        "runs no confirmation stage"
    )
    deciding_stage: Literal[Stage.values()] = Field(  # type: ignore[valid-type]
        description="confirmation where the study runs one (even before it has run: no "
        "fallback to selection), else selection"
    )
    decision: Literal[(*Verdict.values(), INCONCLUSIVE)] = Field(  # type: ignore[valid-type]
        description="the deciding stage's verdict, or inconclusive when a limit applies"
    )
    limits: list[str] = Field(
        description="why the deciding stage's verdict cannot stand: under 3 deciding pairs, "
        "no test or no interval, an arm whose LR search stopped unbracketed"
    )
    warnings: list[VerdictWarning]
    summary: str = Field(
        description="the line the CLI, the table and the export show: the decision, then "
        "each stage's test, the deciding one marked (decides)"
    )


class StudyVerdict(BaseModel):
    study_id: int
    metric: str
    mode: Mode
    confidence: float = Field(description="of every interval: 1 - alpha")
    power: float = Field(description="the power seeds_needed is sized for")
    effect: float = Field(description="the change (a fraction) seeds_needed is sized for")
    min_deciding_pairs: int = Field(
        description="fewer pairs in the deciding stage make a comparison inconclusive"
    )
    comparisons: list[ArmComparison]


class ClaimStudy(BaseModel):
    """A study a claim is tested on: the newest complete one of its preset and workload."""

    role: str = Field(description="study, or e.g. heavy / light for a two-study claim")
    preset: str
    workload: dict[str, str] = Field(description="the workload fields the study must have")
    study_id: int | None = Field(description="null when no complete study fills the role")
    scale: str | None = Field(description="workload, model, steps, batch and seeds it ran at")


class ClaimRow(BaseModel):
    id: str
    reference: str = Field(description="where the paper makes the claim")
    statement: str
    definition: str = Field(description="how the test decides")
    parameters: dict[str, Any] = Field(
        description="the thresholds and chosen values the test uses, fixed before any run"
    )
    studies: list[ClaimStudy]
    support: Literal[Support.values()]  # type: ignore[valid-type]
    numbers: list[str] = Field(description="the numbers the verdict rests on")
    warnings: list[str]


class ClaimsReport(BaseModel):
    registry_version: str = Field(
        description="hash of the claims registry (definitions, thresholds, rules) that "
        "decided this report: a rule changed after seeing the data shows as a new version"
    )
    shared_rule: str = Field(description="how every claim's comparisons decide it")
    claims: list[ClaimRow]


# --- compare: verdicts for anyone's numbers (``studies.compare``) -----------------------


class CompareRow(BaseModel):
    """One seed of one comparison: each arm's objective on that seed."""

    comparison: str = Field(description="rows sharing it are that comparison's pairs")
    seed: int | str = Field(description="at most once within a comparison")
    baseline: float | str | None = Field(
        description='the objective; a diverged run is "inf", "nan" or "diverged" (JSON has '
        "no Infinity); null is a missing value, an error"
    )
    treatment: float | str | None = Field(description="as baseline")


class CompareRequest(BaseModel):
    mode: Mode = Field("min", description="min: lower is better; max: higher is better")
    margin: float | None = Field(
        None, gt=0, lt=1, description="equivalence margin, a fraction; enables equivalent"
    )
    effect: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="the change seeds_needed is sized for, a fraction; default: the "
        "margin, else 0.01",
    )
    holm: bool = Field(False, description="decide at Holm-adjusted p-values across the rows")
    rows: list[CompareRow]


class CompareSeedsNeeded(BaseModel):
    effect: float = Field(description="the change it is sized for, a fraction")
    estimate: int | None = Field(description="pairs for 80% power, from the observed SD")
    upper: int | None = Field(description="the same from the SD's 95% upper bound")


class CompareResult(BaseModel):
    """One comparison's paired test, as ``magma-bench compare --json`` prints it."""

    comparison: str
    n: int = Field(description="pairs (seeds)")
    method: Literal[Method.values()] = Field(  # type: ignore[valid-type]
        description="log-t: paired t on ln(treatment / baseline); scaled-t: on the "
        "differences / |baseline mean|; none: nothing to test (every run diverged)"
    )
    change: float | None = Field(description="treatment vs baseline, a fraction")
    low: float | None = Field(description="the change's 95% interval; null without one")
    high: float | None
    verdict: Literal[Verdict.values()]  # type: ignore[valid-type]
    seeds_needed: CompareSeedsNeeded | None = Field(description="null under 2 pairs")
    p_value: float | None = Field(
        description="two-sided, no difference (Holm-adjusted with holm); null without a test"
    )
