"""Response models: what the API promises to return (and documents in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    runs: int = Field(description="trials the study will run: configurations x seeds")
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


class StudyDetail(StudySummary):
    spec: dict[str, Any]
    error: str | None
    best: BestTrial | None = Field(description="over configurations whose seeds all completed")
    timings: Timings


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
