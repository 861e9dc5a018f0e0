"""A study run to its end by the real driver in this process (``Driver.run(once=True)``,
on the Ray the test module started), and what SQL holds about it afterwards, with the
Optuna study the next driver would rebuild from it (``tests/test_engine.py``,
``tests/test_engine_bracket.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial
from sqlalchemy import select

from studies.engine.driver import Driver
from studies.engine.searcher import StudySearcher
from studies.spec import StudySpec
from studies.storage.models import Event, Metric, Study, Trial
from tests.db_fixtures import Database


@dataclass
class StudyRun:
    """Everything SQL holds about one study after the driver returned, and the Optuna
    study the next driver would rebuild from it."""

    study: Study
    trials: list[Trial]
    metrics: dict[int, list[Metric]]
    events: list[Event]
    optuna_trials: list[FrozenTrial] = field(default_factory=list)
    seconds: float = 0.0

    def by_configuration(self) -> dict[int, list[Trial]]:
        groups: dict[int, list[Trial]] = {}
        for trial in self.trials:
            groups.setdefault(trial.configuration, []).append(trial)
        return groups


def run_driver(db: Database, storage: Path, **driver_kwargs: Any) -> Driver:
    """Run every queued study to its end in this process, on the module's Ray."""
    driver = Driver(url=db.url, storage_path=storage, poll_seconds=0.5, **driver_kwargs)
    try:
        driver.run(once=True)
    finally:
        dispose_driver(driver)
    return driver


def dispose_driver(driver: Driver) -> None:
    driver.sessions.kw["bind"].dispose()


def rebuilt_optuna_trials(db: Database, study: Study) -> list[FrozenTrial]:
    """The in-memory Optuna study a searcher over this database starts from."""
    spec = StudySpec.model_validate(study.spec)
    return StudySearcher(study.id, spec, db.sessions).optuna.get_trials(deepcopy=False)


def snapshot(db: Database, study_id: int, seconds: float = 0.0) -> StudyRun:
    study = db.study(study_id)
    trials = db.trials(study_id)
    with db.sessions() as session:
        events = list(
            session.scalars(select(Event).where(Event.study_id == study_id).order_by(Event.id))
        )
    run = StudyRun(study, trials, {t.id: db.metrics(t.id) for t in trials}, events)
    run.seconds = seconds
    if trials:
        run.optuna_trials = rebuilt_optuna_trials(db, study)
    return run


def run_study(db: Database, spec: StudySpec, storage: Path) -> StudyRun:
    study_id = db.create_study(spec)
    started = time.monotonic()
    run_driver(db, storage)
    return snapshot(db, study_id, time.monotonic() - started)
