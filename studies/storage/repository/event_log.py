"""A study's event log: what happened to it and its trials, in commit order.

The API streams it to live views by cursor (``id > after``), so its ids must follow the
order transactions commit in; every writer goes through ``add_event``, which takes the
lock that guarantees it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from studies.finite import jsonable
from studies.storage.models import Event


def add_event(
    session: Session, study_id: int, kind: str, payload: dict[str, Any], trial_id: int | None = None
) -> None:
    _lock_event_log(session, study_id)
    session.add(Event(study_id=study_id, trial_id=trial_id, kind=kind, payload=jsonable(payload)))


def _lock_event_log(session: Session, study_id: int) -> None:
    """Serialise a study's event writers until commit, so event ids follow commit order.

    PostgreSQL draws ids from a sequence at INSERT, so without this a transaction that
    inserts first but commits last lands behind a reader's ``id > cursor`` and is never
    streamed. SQLite's ``BEGIN IMMEDIATE`` already serialises writers."""
    if session.bind is None or session.bind.dialect.name != "postgresql":
        return
    held = session.info.setdefault("event_locks", set())
    if study_id not in held:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": study_id})
        held.add(study_id)


def last_event_id(session: Session, study_id: int) -> int:
    """The id of a study's latest event (0 when it has none): where a live view that
    has just read the study's rows starts its event stream."""
    return session.scalar(select(func.max(Event.id)).where(Event.study_id == study_id)) or 0


def latest_event(session: Session, study_id: int, kind: str) -> Event | None:
    """A study's newest event of ``kind`` (a bracket study's ``bracket`` status, say)."""
    return session.scalars(
        select(Event)
        .where(Event.study_id == study_id, Event.kind == kind)
        .order_by(Event.id.desc())
        .limit(1)
    ).first()


def events_after(session: Session, study_id: int, after: int, limit: int) -> list[Event]:
    return list(
        session.scalars(
            select(Event)
            .where(Event.study_id == study_id, Event.id > after)
            .order_by(Event.id)
            .limit(limit)
        )
    )
