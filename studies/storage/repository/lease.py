"""A driver's lease on a study: claim it, keep the claim by heartbeating, release it by
finishing the study.

One driver runs a study at a time; a driver that stops heartbeating loses the study to
the next one that claims, and from then on may write nothing that ends it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from studies.storage.models import Study, utcnow
from studies.storage.repository import event_log
from worker.contract import ACTIVE_STUDY_STATUSES, StudyStatus


def claim_study(session: Session, owner: str, stale_after: timedelta) -> Study | None:
    """The next study to run: a queued one, or one whose driver stopped heartbeating.

    ``FOR UPDATE SKIP LOCKED`` lets several drivers claim from PostgreSQL without
    taking the same study (SQLite, which ignores it, runs one driver)."""
    stale = utcnow() - stale_after
    query = (
        select(Study)
        .where(
            or_(
                Study.status == StudyStatus.queued.value,
                (Study.status.in_(ACTIVE_STUDY_STATUSES))
                & or_(Study.heartbeat_at.is_(None), Study.heartbeat_at < stale),
            )
        )
        .order_by(Study.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    study = session.scalars(query).first()
    if study is None:
        return None
    resumed = study.status != StudyStatus.queued.value
    study.claimed_by, study.heartbeat_at = owner, utcnow()
    if study.status == StudyStatus.queued.value:
        study.status, study.started_at = StudyStatus.running.value, utcnow()
    event_log.add_event(session, study.id, "study", {"status": study.status, "resumed": resumed})
    return study


def heartbeat(session: Session, study_id: int, owner: str) -> str | None:
    """Refresh the claim; returns the study's status (the driver's cancel signal), or None
    once ``owner`` no longer holds the claim (another driver took the study over)."""
    refreshed = session.execute(
        update(Study)
        .where(Study.id == study_id, Study.claimed_by == owner)
        .values(heartbeat_at=utcnow())
    )
    if refreshed.rowcount == 0:
        return None
    return session.scalar(select(Study.status).where(Study.id == study_id))


def finish_study(
    session: Session,
    study_id: int,
    status: str,
    error: str | None = None,
    owner: str | None = None,
) -> bool:
    """End the study; returns whether it was ended.

    With ``owner``, only while that driver still holds the claim: a driver whose claim went
    stale and was taken over must not end the study under its new owner.
    """
    query = update(Study).where(Study.id == study_id)
    if owner is not None:
        query = query.where(Study.claimed_by == owner)
    values = {"status": status, "finished_at": utcnow(), "error": error, "claimed_by": None}
    if session.execute(query.values(**values)).rowcount == 0:
        return False
    event_log.add_event(session, study_id, "study", {"status": status, "error": error})
    return True
