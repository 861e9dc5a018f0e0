"""What the API and the dashboards list and page through: studies, trial counts, trials
by keyset page, and metric rows.

Read-only, and shaped by the indexes that serve them (``ix_trials_study_number``,
``ix_trials_study_objective``, ``ix_metrics_trial_step``), so a 10k-trial study reads a
page, not every row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, func, or_, select
from sqlalchemy.orm import Session, defer

from studies.storage.models import Metric, Study, Trial
from worker.contract import StudyStatus


def list_studies(
    session: Session, status: str | None, limit: int, offset: int
) -> tuple[list[Study], int]:
    """A page of studies, newest first, and the total matching."""
    where = [Study.status == status] if status else []
    total = session.scalar(select(func.count()).select_from(Study).where(*where)) or 0
    page = session.scalars(
        select(Study).where(*where).order_by(Study.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(page), total


def complete_studies_named(session: Session, names: Iterable[str]) -> list[Study]:
    """The complete studies with one of ``names``, newest first: the claims report tests
    the newest of each preset (and workload)."""
    return list(
        session.scalars(
            select(Study)
            .where(Study.name.in_(list(names)), Study.status == StudyStatus.complete.value)
            .order_by(Study.id.desc())
        )
    )


def trial_status_counts(session: Session, study_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {study_id: {} for study_id in study_ids}
    if not study_ids:
        return counts
    rows = session.execute(
        select(Trial.study_id, Trial.status, func.count())
        .where(Trial.study_id.in_(study_ids))
        .group_by(Trial.study_id, Trial.status)
    )
    for study_id, status, count in rows:
        counts[study_id][status] = count
    return counts


def study_trials(session: Session, study_id: int) -> list[Trial]:
    return list(
        session.scalars(select(Trial).where(Trial.study_id == study_id).order_by(Trial.number))
    )


def trials_page(
    session: Session,
    study_id: int,
    *,
    sort: str,
    descending: bool,
    status: str | None,
    after: tuple[float | None, int] | None,
    limit: int,
) -> list[Trial]:
    """Keyset pagination: ``after`` is the (sort key, id) of the last row already seen.

    Sorted by ``number`` (unique in a study, the order trials were created in; served by
    ``ix_trials_study_number``), a live view asking for rows after its last one gets only
    trials created since. Sorted by ``objective``, trials without one come last in either
    direction."""
    # A page lists trials; their full configs (the bulk of a row) are not needed
    query = select(Trial).options(defer(Trial.config)).where(Trial.study_id == study_id)
    if status:
        query = query.where(Trial.status == status)
    if sort == "number":
        if after is not None:
            last = int(after[0] or 0)
            query = query.where(Trial.number < last if descending else Trial.number > last)
        query = query.order_by(Trial.number.desc() if descending else Trial.number)
    else:
        missing = Trial.objective.is_(None)
        if after is not None:
            value, last_id = after
            if value is None:
                query = query.where(missing, Trial.id > last_id)
            else:
                beyond = Trial.objective < value if descending else Trial.objective > value
                query = query.where(
                    or_(beyond, (Trial.objective == value) & (Trial.id > last_id), missing)
                )
        # NULLS LAST rather than ordering by ``missing`` first: ascending, this is the
        # order of ix_trials_study_objective, so a page reads the index, not every trial
        objective = Trial.objective.desc() if descending else Trial.objective.asc()
        query = query.order_by(objective.nulls_last(), Trial.id)
    return list(session.scalars(query.limit(limit)))


def trial_metrics(session: Session, trial_id: int) -> list[Metric]:
    return list(
        session.scalars(
            select(Metric).where(Metric.trial_id == trial_id).order_by(Metric.step, Metric.id)
        )
    )


def study_metric_rows(
    session: Session, study_id: int, keys: Sequence[str] | None = None
) -> list[Row[tuple[Any, ...]]]:
    """Every metric row of a study's trials as ``(trial_id, step, values)``, by trial and
    step (a step reported twice, by a resumed trial, in the order written), for the
    dashboards: one query on ``ix_metrics_trial_step``, no ORM objects. With ``keys``,
    ``(trial_id, step, *floats)`` instead: only those entries of ``values`` (None where a
    row lacks one), extracted by the database, so no JSON document is parsed here."""
    columns = [Metric.values] if keys is None else [Metric.values[k].as_float() for k in keys]
    return list(
        session.execute(
            select(Metric.trial_id, Metric.step, *columns)
            .join(Trial, Metric.trial_id == Trial.id)
            .where(Trial.study_id == study_id)
            .order_by(Metric.trial_id, Metric.step, Metric.id)
        )
    )
