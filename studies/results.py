"""SQL rows to the plain records ``studies.analysis`` works on: where the pages and the API
load a study for the analyses (through ``studies.storage.repository``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from studies.analysis.claims import Role
from studies.analysis.objective import Mode, check_mode
from studies.analysis.sequential import SequentialDesign, design_of
from studies.best import runs_confirmation
from studies.records import (
    BracketSearch,
    MetricPoint,
    TrialRecord,
    bracket_from_event,
    metrics_from_rows,
    trials_from_rows,
)
from studies.storage.models import Study, Trial
from studies.storage.repository import event_log, reads
from worker.contract import FINISHED_STUDY_STATUSES, FINISHED_TRIAL_STATUSES, PROGRESS_METRIC


@dataclass(frozen=True)
class StudyData:
    """One study as the dashboards see it."""

    id: int
    name: str
    status: str
    spec: dict[str, Any]
    #: the workload kind (``llama-c4``, ``quadratic``, ``linear-transformer``)
    workload: str
    #: the metric the study optimises (its trials' ``objective``)
    metric: str
    mode: Mode
    #: trials the study will run: configurations x seeds
    runs: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    trials: list[TrialRecord]
    #: as ``load_study`` was asked: none, the learning curves' values only, or all
    metrics: list[MetricPoint] = field(default_factory=list)
    #: the latest event id when the rows were read: where a live view's stream starts
    last_event_id: int = 0
    #: a bracket study's LR search (``study_bracket``); None for any other study
    bracket: BracketSearch | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STUDY_STATUSES

    @property
    def confirming(self) -> bool:
        """Whether the study runs a confirmation stage (``studies.best.runs_confirmation``),
        for the verdicts: its comparisons are decided on that stage, run or not."""
        return runs_confirmation(self.spec)

    @property
    def design(self) -> SequentialDesign | None:
        """The study's sequential design (``protocol.sequential``), for the verdicts: the
        stage it seeds in rounds is tested at its look's spent alpha."""
        return design_of(self.spec)

    @property
    def finished_trials(self) -> int:
        return sum(trial.status in FINISHED_TRIAL_STATUSES for trial in self.trials)


def trial_row(trial: Trial) -> dict[str, Any]:
    return {
        "id": trial.id,
        "number": trial.number,
        "configuration": trial.configuration,
        "seed_index": trial.seed_index,
        "status": trial.status,
        "objective": trial.objective,
        "params": trial.params,
        "config": trial.config,
        "last_step": trial.last_step,
    }


def load_study(
    session: Session, study_id: int, metrics: Literal["none", "curves", "all"] = "none"
) -> StudyData | None:
    """A study's trials and, by ``metrics``, none of its metric rows, only what learning
    curves need (the validation metric and its x axis, extracted by the database), or all
    of them; None when there is no such study. The event cursor is read first, so a live
    view that streams from it sees every change made after the rows it was rendered from
    (some, possibly, twice)."""
    study = session.get(Study, study_id)
    if study is None:
        return None
    cursor = event_log.last_event_id(session, study_id)
    trials = trials_from_rows(trial_row(t) for t in reads.study_trials(session, study_id))
    points = _metrics(session, study_id, study.workload, study.metric, metrics)
    return StudyData(
        id=study.id,
        name=study.name,
        status=study.status,
        spec=study.spec,
        workload=study.workload,
        metric=study.metric,
        mode=check_mode(study.mode),
        runs=study.runs,
        error=study.error,
        created_at=study.created_at,
        started_at=study.started_at,
        finished_at=study.finished_at,
        trials=trials,
        metrics=points,
        last_event_id=cursor,
        bracket=study_bracket(session, study),
    )


def study_bracket(session: Session, study: Study) -> BracketSearch | None:
    """A bracket study's LR search from its latest ``bracket`` event: the one reading of
    that event, for the verdicts (API, pages, claims, and the CLI through the API) and the
    study detail. None when the study has none (protocol ``none``, or no round planned)."""
    event = event_log.latest_event(session, study.id, "bracket")
    if event is None:
        return None
    return bracket_from_event(event.payload, int(study.spec["protocol"]["max_extensions"]))


def _metrics(
    session: Session, study_id: int, workload: str, metric: str, which: str
) -> list[MetricPoint]:
    if which == "none":
        return []
    if which == "all":
        rows = reads.study_metric_rows(session, study_id)
        return metrics_from_rows(
            {"trial_id": trial_id, "step": step, "values": values}
            for trial_id, step, values in rows
        )
    keys = [k for k in (metric, PROGRESS_METRIC[workload]) if k != "step"]
    rows = reads.study_metric_rows(session, study_id, keys)
    return metrics_from_rows(
        {"trial_id": row[0], "step": row[1], "values": dict(zip(keys, row[2:], strict=True))}
        for row in rows
    )


def study_list(session: Session, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of studies, newest first, each with its trial counts; and the total."""
    studies, total = reads.list_studies(session, None, limit, offset)
    counts = reads.trial_status_counts(session, [study.id for study in studies])
    rows = []
    for study in studies:
        progress = counts[study.id]
        rows.append(
            {
                "id": study.id,
                "name": study.name,
                "status": study.status,
                "workload": study.workload,
                "metric": study.metric,
                "runs": study.runs,
                "progress": progress,
                "finished": sum(n for s, n in progress.items() if s in FINISHED_TRIAL_STATUSES),
                "created_at": study.created_at,
            }
        )
    return rows, total


def claim_studies(session: Session, roles: list[Role]) -> dict[Role, StudyData | None]:
    """Each role's newest complete study (its preset's name and workload fields), with its
    trials; None for a role no complete study fills."""
    found: dict[Role, StudyData | None] = dict.fromkeys(roles)
    for study in reads.complete_studies_named(session, {role.preset for role in roles}):
        if all(found.values()):
            break
        for role in roles:
            if found[role] is None and role.matches(study.spec):
                found[role] = load_study(session, study.id)
    return found
