"""A study's trials through their lifecycle: created queued (one per seed of a
configuration), marked running, finished, requeued after a driver died, or cancelled; and
the reads of them the searcher and the runner decide on.

A finished trial never changes again (``FINISHED_TRIAL_STATUSES``), and every change of
status comes with its event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from studies.finite import finite
from studies.storage.models import Metric, Trial, utcnow
from studies.storage.repository import event_log
from worker.contract import FINISHED_TRIAL_STATUSES, TrialStatus


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
        .where(Trial.study_id == study_id, Trial.status == TrialStatus.running.value)
        .values(status=TrialStatus.queued.value)
    )
    return result.rowcount or 0


def next_queued(session: Session, study_id: int, exclude: Iterable[int]) -> Trial | None:
    return session.scalars(
        select(Trial)
        .where(
            Trial.study_id == study_id,
            Trial.status == TrialStatus.queued.value,
            Trial.id.not_in(list(exclude)),
        )
        .order_by(Trial.number)
        .limit(1)
    ).first()


def next_chunk(session: Session, study_id: int, exclude: Iterable[int], size: int) -> list[Trial]:
    """The next queued trial with the batch-mates it runs with in one task, in seed order:
    the queued trials of its configuration that share its checkpoint, all of them (a batch
    checkpoint resumes exactly the seeds it holds, and a chunk's trials change status
    together, so a requeued chunk comes back whole), or, without one, up to ``size`` of
    its configuration's trials that have none (they start afresh in any grouping)."""
    first = next_queued(session, study_id, exclude)
    if first is None:
        return []
    path = first.checkpoint_path
    query = (
        select(Trial)
        .where(
            Trial.study_id == study_id,
            Trial.configuration == first.configuration,
            Trial.status == TrialStatus.queued.value,
            Trial.id.not_in(list(exclude)),
            Trial.checkpoint_path.is_(None) if path is None else Trial.checkpoint_path == path,
        )
        .order_by(Trial.number)
    )
    return list(session.scalars(query if path is not None else query.limit(size)))


def mark_trial_running(session: Session, trial_id: int) -> Trial | None:
    trial = session.get(Trial, trial_id)
    if trial is None:
        return None
    trial.status, trial.attempts = TrialStatus.running.value, trial.attempts + 1
    trial.started_at = trial.started_at or utcnow()
    event_log.add_event(
        session,
        trial.study_id,
        "trial",
        {"status": TrialStatus.running.value, "attempt": trial.attempts},
        trial.id,
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
    trial.objective = finite(objective)
    trial.last_step = last_step if last_step is not None else trial.last_step
    event_log.add_event(
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
        finish_trial(session, trial_id, TrialStatus.cancelled.value, None, None)


def record_checkpoint(session: Session, trial_id: int, path: str) -> None:
    session.execute(update(Trial).where(Trial.id == trial_id).values(checkpoint_path=path))


def last_rows(session: Session, trial_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Each trial's last reported metric row, by trial id (absent: it reported none): what
    its run ended on, whichever attempt of its chunk reported it."""
    latest = (
        select(func.max(Metric.id))
        .where(Metric.trial_id.in_(list(trial_ids)))
        .group_by(Metric.trial_id)
    )
    rows = session.execute(select(Metric.trial_id, Metric.values).where(Metric.id.in_(latest)))
    return {trial_id: values for trial_id, values in rows}


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
