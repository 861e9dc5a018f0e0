"""Several studies at once in one driver (``MAGMA_MAX_CONCURRENT_STUDIES``), sharing the
cluster (``studies.engine.fairness``).

The fair-share arithmetic is checked against limits worked out by hand; the searcher's
use of a limit without Ray; and two studies submitted together run by the real driver on
the module's two-CPU local Ray, on SQLite and PostgreSQL, where what happened is read
back from the trials' ``started_at``/``finished_at`` in SQL: with two studies at a time
both have trials running at once, each within its ``max_concurrent`` and, while the other
study runs, within its fair share of one CPU; with one at a time the second study starts
after the first has finished. Either way every configuration runs exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from studies.engine.driver import Driver
from studies.engine.fairness import Demand, fair_limits
from studies.engine.searcher import StudySearcher
from studies.spec import StudySpec
from studies.storage.models import Trial
from tests.db_fixtures import Database, quadratic_spec
from worker.settings import Settings, get_settings

#: a few seconds per trial, so that two studies' trials overlap by whole seconds
STEPS, INTERVAL = 300, 50
LRS = [0.1, 0.05, 0.03]


# --- the setting ---------------------------------------------------------------------------


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv("MAGMA_MAX_CONCURRENT_STUDIES", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_the_setting_defaults_to_one_study_at_a_time(environ: pytest.MonkeyPatch) -> None:
    assert Settings().max_concurrent_studies == 1
    environ.setenv("MAGMA_MAX_CONCURRENT_STUDIES", "3")
    assert Settings().max_concurrent_studies == 3


def test_a_bad_setting_names_its_variable(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("MAGMA_MAX_CONCURRENT_STUDIES", "0")
    with pytest.raises(ValidationError) as caught:
        Settings()
    (error,) = caught.value.errors()
    assert error["loc"] == ("MAGMA_MAX_CONCURRENT_STUDIES",)
    assert "greater than or equal to 1" in error["msg"]


def test_the_driver_reads_the_setting_and_rejects_a_bad_value(
    environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'driver.db'}"
    environ.setenv("MAGMA_MAX_CONCURRENT_STUDIES", "4")
    driver = Driver(url=url, storage_path=tmp_path / "ray")
    driver.sessions.kw["bind"].dispose()
    assert driver.max_concurrent_studies == 4
    with pytest.raises(ValueError, match=r"max_concurrent_studies: must be an integer >= 1"):
        Driver(url=url, storage_path=tmp_path / "ray", max_concurrent_studies=0)


# --- the fair share, by hand ---------------------------------------------------------------


def demand(cpu: float, max_concurrent: int, gpu: float = 0.0) -> Demand:
    need = {"CPU": cpu, "GPU": gpu}
    return Demand({k: v for k, v in need.items() if v}, max_concurrent)


@pytest.mark.parametrize(
    ("demands", "total", "expected"),
    [
        # equal studies split two CPUs evenly, one trial each
        ({1: demand(1, 2), 2: demand(1, 2)}, {"CPU": 2}, {1: 1, 2: 1}),
        # an odd CPU goes to the older study (the lower id); none stays idle
        ({1: demand(1, 8), 2: demand(1, 8)}, {"CPU": 3}, {1: 2, 2: 1}),
        # a study capped at 1 leaves the other seven CPUs to the other study
        ({1: demand(1, 8), 2: demand(1, 1)}, {"CPU": 8}, {1: 7, 2: 1}),
        # 2-CPU trials: the CPUs are split evenly, 4 + 2 x 2
        ({1: demand(1, 8), 2: demand(2, 8)}, {"CPU": 8}, {1: 4, 2: 2}),
        # dominant resources: 1 GPU of 2 is half the cluster, so the GPU study gets both
        # GPUs when the CPU study reaches 4 of 8 CPUs, and the CPU study the 2 CPUs left
        ({1: demand(1, 8, gpu=1), 2: demand(1, 8)}, {"CPU": 8, "GPU": 2}, {1: 2, 2: 6}),
        # more studies than CPUs: each may still have one trial, waiting at Ray
        ({1: demand(1, 4), 2: demand(1, 4), 3: demand(1, 4)}, {"CPU": 2}, {1: 1, 2: 1, 3: 1}),
        # a GPU study on a cluster without GPUs: one trial, waiting at Ray
        ({1: demand(1, 4, gpu=1), 2: demand(1, 4)}, {"CPU": 4}, {1: 1, 2: 4}),
        # alone, a study keeps its max_concurrent even beyond the cluster (autoscaling)
        ({1: demand(1, 4)}, {"CPU": 2}, {1: 4}),
    ],
)
def test_fair_limits(
    demands: dict[int, Demand], total: dict[str, float], expected: dict[int, int]
) -> None:
    assert fair_limits(demands, total) == expected


def test_the_searcher_starts_no_trial_beyond_its_limit(db: Database) -> None:
    spec = quadratic_spec(name="limited", search={"lr": LRS}, max_concurrent=3)
    study_id = db.create_study(spec)
    limit = [1]
    searcher = StudySearcher(study_id, spec, db.sessions, limit=lambda: limit[0])
    first = searcher.suggest("a")
    assert isinstance(first, dict) and first["lr"] == LRS[0]
    assert searcher.suggest("b") is None  # at its limit: asked again later
    limit[0] = 2
    second = searcher.suggest("b")
    assert isinstance(second, dict) and second["lr"] == LRS[1]
    assert searcher.suggest("c") is None
    searcher.on_trial_complete("a", {"status": "complete", "objective": 1.0, "step": 40})
    third = searcher.suggest("c")
    assert isinstance(third, dict) and third["lr"] == LRS[2]
    assert [t.number for t in db.trials(study_id)] == [0, 1, 2]


# --- two studies on the local Ray ------------------------------------------------------------


def study_spec(name: str) -> StudySpec:
    return quadratic_spec(
        name=name,
        workload={"steps": STEPS, "eval_interval": INTERVAL},
        search={"lr": LRS},
        fixed={"threads": 1, "variant": "dense"},
        max_concurrent=2,
    )


def run_two_studies(db: Database, storage: Path, at_once: int) -> tuple[list[Trial], ...]:
    """Submit two studies together, run the driver until both are done; their trials."""
    ids = [db.create_study(study_spec("first")), db.create_study(study_spec("second"))]
    driver = Driver(
        url=db.url, storage_path=storage, poll_seconds=0.5, max_concurrent_studies=at_once
    )
    try:
        driver.run(once=True)
    finally:
        driver.sessions.kw["bind"].dispose()
    for study_id in ids:
        study = db.study(study_id)
        assert (study.status, study.error) == ("complete", None)
    return tuple(db.trials(study_id) for study_id in ids)


def running_at(trials: list[Trial], moment: datetime) -> list[Trial]:
    return [t for t in trials if t.started_at <= moment < t.finished_at]


def assert_each_configuration_ran_once(db: Database, trials: list[Trial]) -> None:
    assert [t.number for t in trials] == [0, 1, 2]
    assert sorted(t.params["lr"] for t in trials) == sorted(LRS)
    for trial in trials:
        assert (trial.status, trial.attempts, trial.last_step) == ("complete", 1, STEPS)
        steps = [m.step for m in db.metrics(trial.id)]
        assert steps == list(range(INTERVAL, STEPS + 1, INTERVAL)), steps
        assert trial.started_at is not None and trial.finished_at is not None


def assert_within_max_concurrent(trials: list[Trial], max_concurrent: int) -> None:
    """At each trial's start (where the count can only have grown), at most
    ``max_concurrent`` of the study's trials were running."""
    for trial in trials:
        assert len(running_at(trials, trial.started_at)) <= max_concurrent


def test_two_studies_run_at_once_each_within_its_limits(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    first, second = run_two_studies(db, tmp_path / "ray", at_once=2)
    for trials in (first, second):
        assert_each_configuration_ran_once(db, trials)
        assert_within_max_concurrent(trials, 2)
    overlaps = [
        (a.number, b.number)
        for a in first
        for b in second
        if max(a.started_at, b.started_at) < min(a.finished_at, b.finished_at)
    ]
    assert overlaps, "no trial of the second study ran while one of the first did"
    # Fair share on two CPUs: while the other study is running (its first trial started,
    # its last not finished), a study starts a trial only when none of its own runs.
    for mine, other in ((first, second), (second, first)):
        begun = min(t.started_at for t in other)
        ended = max(t.finished_at for t in other)
        for trial in mine:
            if begun <= trial.started_at < ended:
                assert len(running_at(mine, trial.started_at)) == 1, (
                    f"trial {trial.number} started beyond its study's share of the cluster"
                )


def test_one_study_at_a_time_runs_them_one_after_the_other(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    first, second = run_two_studies(db, tmp_path / "ray", at_once=1)
    for trials in (first, second):
        assert_each_configuration_ran_once(db, trials)
        assert_within_max_concurrent(trials, 2)
    assert max(t.finished_at for t in first) <= min(t.started_at for t in second)
    # and the first study alone used both CPUs: its own max_concurrent, no share
    assert max(len(running_at(first, t.started_at)) for t in first) == 2
