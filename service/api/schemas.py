"""Response models: what the API promises to return (and documents in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studies.analysis.claim_rules import Support
from studies.analysis.verdict import Method, Verdict, WarningCode
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


class ArmComparison(BaseModel):
    """A masked arm against its base's dense arm, each at its best, paired by seed."""

    baseline: ArmBest
    arm: ArmBest
    method: Literal[Method.values()] | None = Field(  # type: ignore[valid-type]
        description="log-t: paired t interval on ln(objective); bootstrap: paired percentile "
        "bootstrap of the difference of means (some objective <= 0)"
    )
    seeds: int = Field(description="pairs: seeds both best configurations completed")
    change: float | None = Field(description="arm vs baseline, a fraction: -0.018 is 1.8% lower")
    low: float | None = Field(description="the change's 95% interval; null without one")
    high: float | None
    difference_sd: float | None = Field(
        description="SD of the paired differences (log, or fraction of the dense mean)"
    )
    verdict: Literal[Verdict.values()] | None  # type: ignore[valid-type]
    seeds_needed: int | None = Field(
        description="seeds a paired t-test needs for 80% power against a 1% change at "
        "alpha 0.05, given difference_sd"
    )
    reason: str | None = Field(description="why there is no estimate")
    warnings: list[VerdictWarning]
    summary: str = Field(description="the line the CLI, the table and the export show")


class StudyVerdict(BaseModel):
    study_id: int
    metric: str
    mode: Mode
    confidence: float
    detectable_change: float
    power: float
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
    claims: list[ClaimRow]
