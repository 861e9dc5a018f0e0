"""Metric ingest: the rows trials report, written in batches with the trials' progress
(last step, node) and one live event per row.

Kept apart from the reads of metric rows (``reads``): this is the hot write path, called
by the recorder for every batch a study's trials report.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from studies.finite import finite, jsonable
from studies.storage.models import Metric, Trial
from studies.storage.repository import event_log


def add_metrics(session: Session, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """A batch of (trial id, reported metrics): rows, trial progress and live events."""
    if not rows:
        return
    session.add_all(
        Metric(
            trial_id=trial_id,
            step=int(values.get("step", 0)),
            objective=finite(values.get("objective")),
            values=jsonable(values),
        )
        for trial_id, values in rows
    )
    latest: dict[int, dict[str, Any]] = {}
    for trial_id, values in rows:
        latest[trial_id] = values
    trials = session.scalars(select(Trial).where(Trial.id.in_(list(latest)))).all()
    for trial in trials:
        values = latest[trial.id]
        trial.last_step = int(values.get("step", 0))
        trial.node = values.get("node", trial.node)
    for trial_id, values in rows:
        study_id = next(t.study_id for t in trials if t.id == trial_id)
        event_log.add_event(session, study_id, "metric", values, trial_id)
