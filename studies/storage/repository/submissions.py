"""The API's writes on a study: submit it (once per idempotency key), cancel it, delete it.

A submitted study waits queued until a driver claims it (``lease``); a cancel of a
running one is only a request, which the driver reads in its heartbeat.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from studies.spec import StudySpec
from studies.storage.models import Study
from studies.storage.repository import event_log, lease, trial_lifecycle
from worker.contract import StudyStatus


def create_study(session: Session, spec: StudySpec, idempotency_key: str | None = None) -> Study:
    """A queued study: the spec with every default applied, and the facts readers need
    (workload, metric, mode, planned runs) in their own columns."""
    study = Study(
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        workload=spec.workload.kind,
        metric=spec.metric,
        mode=spec.mode,
        runs=spec.runs,
        idempotency_key=idempotency_key,
    )
    session.add(study)
    session.flush()
    event_log.add_event(session, study.id, "study", {"status": StudyStatus.queued.value})
    return study


def study_by_idempotency_key(session: Session, key: str) -> Study | None:
    return session.scalars(select(Study).where(Study.idempotency_key == key)).first()


def request_cancel(session: Session, study_id: int) -> Study | None:
    study = session.get(Study, study_id)
    if study is None:
        return None
    if study.status == StudyStatus.queued.value:
        lease.finish_study(session, study_id, StudyStatus.cancelled.value)
        trial_lifecycle.cancel_unfinished(session, study_id)
    elif study.status == StudyStatus.running.value:
        study.status = StudyStatus.cancelling.value
        event_log.add_event(session, study_id, "study", {"status": StudyStatus.cancelling.value})
    return study


def delete_study(session: Session, study_id: int) -> None:
    """Metric rows, events and trials go by ``ON DELETE CASCADE``."""
    study = session.get(Study, study_id)
    if study is not None:
        session.delete(study)
