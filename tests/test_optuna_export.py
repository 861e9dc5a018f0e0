"""``magma-bench export STUDY --format optuna``: a study the real driver ran (module Ray, on
each back end), exported by the real CLI over HTTP from a real ``magma-bench serve`` into an
Optuna storage (a SQLite database and a journal file) that ``optuna.load_study`` opens.

The study mixes outcomes (complete and diverged; ASHA's pruning is left out, as it can
stop either seed of the best configuration), each configuration run with two seeds, so the
export has to apply the scoring rule, not copy trials. Every other outcome is exported from
hand-written API trials at the end."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from studies.engine.driver import Driver
from studies.engine.searcher import StudySearcher
from studies.optuna_export import export_study
from studies.spec import StudySpec
from studies.storage.models import Trial
from tests.db_fixtures import BACKENDS, Database, fresh_database, quadratic_spec
from tests.service_fixtures import MAGMA_BENCH, Server, running_server


@dataclass
class Ran:
    server: Server
    study_id: int
    spec: StudySpec
    trials: list[Trial]
    #: what a driver's searcher rebuilds from SQL
    rebuilt: list[FrozenTrial]


def mixed_spec() -> StudySpec:
    """AdamW on the quadratic: LR 0.1 and 0.03 converge, 1e3 diverges at its first
    evaluation (finite objective ~1e9)."""
    return quadratic_spec(
        name="optuna-export",
        search={"lr": [0.1, 0.03, 1e3]},
        fixed={"threads": 1, "variant": "dense"},
        seeds=2,
    )


@pytest.fixture(scope="module", params=BACKENDS)
def ran(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ray_local: None
) -> Iterator[Ran]:
    directory = tmp_path_factory.mktemp(f"optuna-export-{request.param}")
    with fresh_database(request.param, directory) as url:
        db = Database(url)
        try:
            spec = mixed_spec()
            study_id = db.create_study(spec)
            driver = Driver(url=url, storage_path=directory / "ray", poll_seconds=0.5)
            try:
                driver.run(once=True)
            finally:
                driver.sessions.kw["bind"].dispose()
            assert db.study(study_id).status == "complete", db.study(study_id).error
            rebuilt = StudySearcher(study_id, spec, db.sessions).optuna.get_trials()
            with running_server(url, directory / "server.log") as server:
                yield Ran(server, study_id, spec, db.trials(study_id), rebuilt)
        finally:
            db.dispose()


def export(ran: Ran, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAGMA_URL": ran.server.url}
    env.pop("MAGMA_API_KEY", None)
    command = [str(MAGMA_BENCH), "export", str(ran.study_id), "--format", "optuna", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def expected_trials(ran: Ran) -> list[tuple[int, TrialState, dict, float | None]]:
    """Per configuration, from SQL: a diverged seed makes it the worst value, every seed
    complete the mean objective."""
    expected = []
    for configuration in sorted({t.configuration for t in ran.trials}):
        seeds = [t for t in ran.trials if t.configuration == configuration]
        statuses = {t.status for t in seeds}
        assert statuses in ({"complete"}, {"diverged"}), statuses
        complete = statuses == {"complete"}
        value = sum(t.objective for t in seeds) / len(seeds) if complete else math.inf
        expected.append((configuration, TrialState.COMPLETE, seeds[0].params, value))
    return expected


def summary(trials: list[FrozenTrial]) -> list[tuple[int, TrialState, dict, float | None]]:
    return [(t.number, t.state, t.params, t.value) for t in trials]


def test_export_writes_an_optuna_study_that_load_study_opens(ran: Ran, tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'optuna.db'}"
    for _ in range(2):  # exporting again replaces the earlier export
        done = export(ran, "--to", target)
        assert done.returncode == 0, (done.stdout, done.stderr)
    assert "3 configurations" in done.stdout

    name = f"magma-bench-study-{ran.study_id}"
    assert optuna.get_all_study_names(storage=target) == [name]
    study = optuna.load_study(study_name=name, storage=target)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == [ran.spec.metric]
    assert study.user_attrs["spec"] == ran.spec.model_dump(mode="json")
    exported, expected = summary(study.get_trials()), expected_trials(ran)
    assert [t[:3] for t in exported] == [t[:3] for t in expected]
    assert [t[3] for t in exported] == pytest.approx([t[3] for t in expected])
    assert exported == summary(ran.rebuilt)  # what the searcher itself sees

    best = httpx.get(f"{ran.server.api}/studies/{ran.study_id}/best").json()
    assert study.best_trial.number == best["configuration"]
    assert study.best_trial.params == best["params"]
    assert study.best_value == pytest.approx(best["objective"])


def test_export_to_a_journal_file(ran: Ran, tmp_path: Path) -> None:
    journal = tmp_path / "optuna.log"
    done = export(ran, "--to", str(journal))
    assert done.returncode == 0, (done.stdout, done.stderr)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=f"magma-bench-study-{ran.study_id}", storage=storage)
    assert summary(study.get_trials()) == summary(ran.rebuilt)


def test_export_optuna_needs_a_target(ran: Ran) -> None:
    done = export(ran)
    assert done.returncode == 1 and "--to" in done.stderr


def test_the_export_module_needs_no_database_layer() -> None:
    """The CLI is an HTTP client: building the Optuna study imports neither SQLAlchemy
    (Optuna loads it only for an RDB storage) nor our storage layer, Ray or torch."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, studies.optuna_export; print(sorted({m.split('.')[0] for m in "
            "sys.modules} & {'sqlalchemy', 'ray', 'torch'}), 'studies.storage' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.split() == ["[]", "False"], loaded.stdout


def test_export_scores_every_outcome_and_keeps_configuration_numbers(tmp_path: Path) -> None:
    """API trials in every state, and a configuration number with no trials (a driver of
    the old design died between Optuna's ask and SQL): each becomes the Optuna trial of its
    number, in the state ``studies.best`` gives it; the study opens and ranks."""
    spec = quadratic_spec(
        name="outcomes",
        sampler="random",
        trials=8,
        seeds=2,
        search={"lr": {"low": 1e-4, "high": 0.3, "log": True}},
    )
    seeds = {
        0: [("complete", 2.0), ("complete", 4.0)],
        1: [("diverged", 1e9), ("complete", 1.0)],
        2: [("pruned", 5.0), ("complete", 1.0)],
        3: [("cancelled", None), ("complete", 1.0)],
        4: [("failed", None), ("pruned", 3.0)],
        5: [("complete", 0.5), ("running", None)],
        7: [("complete", 1.5), ("complete", 2.5)],
    }
    trials = [
        {
            "number": 2 * c + s,
            "configuration": c,
            "params": {"lr": 0.01 * (c + 1)},
            "status": status,
            "objective": objective,
        }
        for c, pair in seeds.items()
        for s, (status, objective) in enumerate(pair)
    ]
    detail = {"id": 42, "name": "outcomes", "spec": spec.model_dump(mode="json")}
    target = f"sqlite:///{tmp_path / 'outcomes.db'}"
    export_study(detail, reversed(trials), target)

    study = optuna.load_study(study_name="magma-bench-study-42", storage=target)
    assert [(t.number, t.state, t.value) for t in study.trials] == [
        (0, TrialState.COMPLETE, 3.0),
        (1, TrialState.COMPLETE, math.inf),
        (2, TrialState.PRUNED, None),
        (3, TrialState.FAIL, None),
        (4, TrialState.PRUNED, None),  # pruned before failed: the first match wins
        (5, TrialState.RUNNING, None),
        (6, TrialState.FAIL, None),  # no trials
        (7, TrialState.COMPLETE, 2.0),
    ]
    assert [t.params for t in study.trials] == [
        {} if n == 6 else {"lr": 0.01 * (n + 1)} for n in range(8)
    ]
    assert study.best_trial.number == 7


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_export_keeps_the_open_choices_mixed_values(tmp_path: Path, storage: str) -> None:
    """score_init's list mixes a word and numbers, decay_on_skip's is booleans: each is one
    categorical in Optuna, and every configuration keeps the value it ran."""
    search = {
        "score_init": ["first", 0.5, 1.0],
        "momentum": ["updated", "previous"],
        "decay_on_skip": [False, True],
    }
    spec = quadratic_spec(name="open-choices", sampler="grid", search=search)
    points = spec.grid_points()
    trials = [
        {
            "number": c,
            "configuration": c,
            "params": params,
            "status": "complete",
            "objective": float(c),
        }
        for c, params in enumerate(points)
    ]
    detail = {"id": 7, "name": "open-choices", "spec": spec.model_dump(mode="json")}
    target = (
        f"sqlite:///{tmp_path / 'open.db'}" if storage == "sqlite" else str(tmp_path / "open.log")
    )
    export_study(detail, trials, target)

    opened = target if storage == "sqlite" else JournalStorage(JournalFileBackend(target))
    study = optuna.load_study(study_name="magma-bench-study-7", storage=opened)
    assert [t.params for t in study.trials] == points
    assert study.trials[0].distributions["score_init"].choices == ("first", 0.5, 1.0)
    assert study.best_trial.params == {
        "score_init": "first",
        "momentum": "updated",
        "decay_on_skip": False,
    }
