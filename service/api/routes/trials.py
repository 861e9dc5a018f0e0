"""One trial: its config, status and metric curve."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ReadSession, TrialId
from service.api.schemas import MetricRow, TrialDetail, TrialSummary
from service.core.errors import error_responses, not_found
from studies.storage.models import Trial
from studies.storage.repository import reads

router = APIRouter(prefix="/trials", tags=["trials"])


@router.get("/{trial_id}", response_model=TrialDetail, responses=error_responses(404))
def get_trial(trial_id: TrialId, session: ReadSession) -> TrialDetail:
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise not_found("trial", trial_id)
    return TrialDetail(
        **TrialSummary.model_validate(trial).model_dump(),
        config=trial.config,
        error=trial.error,
        checkpoint_path=trial.checkpoint_path,
        metrics=[MetricRow.model_validate(m) for m in reads.trial_metrics(session, trial_id)],
    )
