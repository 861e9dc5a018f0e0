"""Every read and write the engine and the API make, as small functions on a Session.

Kept in one place so the queries the indexes serve are easy to see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, case, func, or_, select, text, update
from sqlalchemy.orm import Session, defer

from studies.best import CONFIRM_STAGE, STAGE_KEY
from studies.spec import StudySpec
from studies.storage.models import Event, Metric, Study, Trial, utcnow
from worker.contract import ACTIVE_STUDY_STATUSES, FINISHED_TRIAL_STATUSES, StudyStatus


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/Infinity: non-finite floats are stored as null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()
    }


def add_event(
    session: Session, study_id: int, kind: str, payload: dict[str, Any], trial_id: int | None = None
) -> None:
    _lock_event_log(session, study_id)
    session.add(Event(study_id=study_id, trial_id=trial_id, kind=kind, payload=_jsonable(payload)))


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


# --- studies ------------------------------------------------------------------------


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
    add_event(session, study.id, "study", {"status": "queued"})
    return study


def claim_study(session: Session, owner: str, stale_after: timedelta) -> Study | None:
    """The next study to run: a queued one, or one whose driver stopped heartbeating.

    ``FOR UPDATE SKIP LOCKED`` lets several drivers claim from PostgreSQL without
    taking the same study (SQLite, which ignores it, runs one driver)."""
    stale = utcnow() - stale_after
    query = (
        select(Study)
        .where(
            or_(
                Study.status == "queued",
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
    resumed = study.status != "queued"
    study.claimed_by, study.heartbeat_at = owner, utcnow()
    if study.status == "queued":
        study.status, study.started_at = "running", utcnow()
    add_event(session, study.id, "study", {"status": study.status, "resumed": resumed})
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
    add_event(session, study_id, "study", {"status": status, "error": error})
    return True


def request_cancel(session: Session, study_id: int) -> Study | None:
    study = session.get(Study, study_id)
    if study is None:
        return None
    if study.status == "queued":
        finish_study(session, study_id, "cancelled")
        cancel_unfinished(session, study_id)
    elif study.status == "running":
        study.status = "cancelling"
        add_event(session, study_id, "study", {"status": "cancelling"})
    return study


# --- trials ---------------------------------------------------------------------------


def configurations_created(session: Session, study_id: int) -> int:
    return session.scalar(
        select(func.count(func.distinct(Trial.configuration))).where(Trial.study_id == study_id)
    )


def create_configuration(
    session: Session,
    study_id: int,
    configuration: int,
    params: dict[str, Any],
    configs: list[dict[str, Any]],
    first_seed: int = 0,
) -> list[Trial]:
    """One queued trial per seed repeat of a configuration; ``configs[i]`` runs seed
    index ``first_seed + i`` (a confirmation stage's fresh seeds follow the study's)."""
    first = session.scalar(
        select(func.coalesce(func.max(Trial.number), -1)).where(Trial.study_id == study_id)
    )
    trials = [
        Trial(
            study_id=study_id,
            number=first + 1 + seed_index,
            configuration=configuration,
            seed_index=first_seed + seed_index,
            params=params,
            config=config,
        )
        for seed_index, config in enumerate(configs)
    ]
    session.add_all(trials)
    session.flush()
    return trials


def requeue_unfinished(session: Session, study_id: int) -> int:
    """After a driver died: running trials go back to the queue (their checkpoints stay)."""
    result = session.execute(
        update(Trial)
        .where(Trial.study_id == study_id, Trial.status == "running")
        .values(status="queued")
    )
    return result.rowcount or 0


def next_queued(session: Session, study_id: int, exclude: Iterable[int]) -> Trial | None:
    return session.scalars(
        select(Trial)
        .where(Trial.study_id == study_id, Trial.status == "queued", Trial.id.not_in(list(exclude)))
        .order_by(Trial.number)
        .limit(1)
    ).first()


def mark_trial_running(session: Session, trial_id: int) -> Trial | None:
    trial = session.get(Trial, trial_id)
    if trial is None:
        return None
    trial.status, trial.attempts = "running", trial.attempts + 1
    trial.started_at = trial.started_at or utcnow()
    add_event(
        session, trial.study_id, "trial", {"status": "running", "attempt": trial.attempts}, trial.id
    )
    return trial


def finish_trial(
    session: Session,
    trial_id: int,
    status: str,
    objective: float | None,
    last_step: int | None,
    error: str | None = None,
) -> Trial | None:
    trial = session.get(Trial, trial_id)
    if trial is None or trial.status in FINISHED_TRIAL_STATUSES:
        return trial
    trial.status, trial.finished_at, trial.error = status, utcnow(), error
    trial.objective = _finite(objective)
    trial.last_step = last_step if last_step is not None else trial.last_step
    add_event(
        session,
        trial.study_id,
        "trial",
        {"status": status, "objective": trial.objective, "step": trial.last_step},
        trial.id,
    )
    return trial


def cancel_unfinished(session: Session, study_id: int) -> None:
    """Every queued or running trial becomes cancelled, each with its final event."""
    unfinished = session.scalars(
        select(Trial.id).where(
            Trial.study_id == study_id, Trial.status.not_in(FINISHED_TRIAL_STATUSES)
        )
    ).all()
    for trial_id in unfinished:
        finish_trial(session, trial_id, "cancelled", None, None)


def record_checkpoint(session: Session, trial_id: int, path: str) -> None:
    session.execute(update(Trial).where(Trial.id == trial_id).values(checkpoint_path=path))


def configuration_trials(session: Session, study_id: int, configuration: int) -> list[Trial]:
    return list(
        session.scalars(
            select(Trial).where(Trial.study_id == study_id, Trial.configuration == configuration)
        )
    )


def configurations(
    session: Session, study_id: int
) -> dict[int, tuple[dict[str, Any], list[tuple[str, float | None]]]]:
    """Each configuration's params and its seed trials' (status, objective), by
    configuration number: everything a searcher rebuilds its Optuna study from."""
    result: dict[int, tuple[dict[str, Any], list[tuple[str, float | None]]]] = {}
    rows = session.execute(
        select(Trial.configuration, Trial.params, Trial.status, Trial.objective)
        .where(Trial.study_id == study_id)
        .order_by(Trial.number)
    )
    for configuration, params, status, objective in rows:
        result.setdefault(configuration, (params, []))[1].append((status, objective))
    return result


def unfinished_count(session: Session, study_id: int) -> int:
    return session.scalar(
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study_id, Trial.status.not_in(FINISHED_TRIAL_STATUSES))
    )


# --- metrics --------------------------------------------------------------------------


def add_metrics(session: Session, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """A batch of (trial id, reported metrics): rows, trial progress and live events."""
    if not rows:
        return
    session.add_all(
        Metric(
            trial_id=trial_id,
            step=int(values.get("step", 0)),
            objective=_finite(values.get("objective")),
            values=_jsonable(values),
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
        add_event(session, study_id, "metric", values, trial_id)


# --- reads for the API ------------------------------------------------------------------


def study_by_idempotency_key(session: Session, key: str) -> Study | None:
    return session.scalars(select(Study).where(Study.idempotency_key == key)).first()


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


def delete_study(session: Session, study_id: int) -> None:
    """Metric rows, events and trials go by ``ON DELETE CASCADE``."""
    study = session.get(Study, study_id)
    if study is not None:
        session.delete(study)


def best_configuration_number(session: Session, study_id: int, mode: str) -> int | None:
    """The configuration with the best mean objective among those whose every trial
    completed, confirmation stages aside (see ``studies.best``), found in SQL so a
    10k-trial study stays cheap."""
    complete = func.sum(case((Trial.status == "complete", 1), else_=0))
    mean = func.avg(Trial.objective)
    stage = func.coalesce(Trial.params[STAGE_KEY].as_string(), "")
    query = (
        select(Trial.configuration)
        .where(Trial.study_id == study_id, stage != CONFIRM_STAGE)
        .group_by(Trial.configuration)
        .having(complete == func.count(), func.count(Trial.objective) == func.count())
        .order_by(mean.asc() if mode == "min" else mean.desc(), Trial.configuration)
        .limit(1)
    )
    return session.scalar(query)
