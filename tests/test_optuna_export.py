"""``magma-bench export STUDY --format optuna``: a study the real driver ran (module Ray, on
each back end), exported by the real CLI over HTTP from a real ``magma-bench serve`` into an
Optuna storage (a SQLite database and a journal file) that ``optuna.load_study`` opens.

The study mixes outcomes (complete, diverged, pruned by ASHA), each configuration run with
two seeds, so the export has to apply the scoring rule, not copy trials."""

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
from studies.spec import StudySpec
from studies.storage.models import Trial

pytest.register_assert_rewrite("tests.db_fixtures", "tests.service_fixtures")
from tests.db_fixtures import BACKENDS, Database, fresh_database, quadratic_spec  # noqa: E402
from tests.service_fixtures import MAGMA_BENCH, Server, running_server  # noqa: E402

pytest_plugins = ("tests.db_fixtures", "tests.service_fixtures")


@dataclass
class Ran:
    server: Server
    study_id: int
    spec: StudySpec
    trials: list[Trial]
    #: what a driver's searcher rebuilds from SQL
    rebuilt: list[FrozenTrial]


def mixed_spec() -> StudySpec:
    """SGD at LR 0.03 diverges on the quadratic (Hessian eigenvalues up to 5000); AdamW at
    1e-4 barely moves and ASHA usually stops it at its first rung."""
    return quadratic_spec(
        name="optuna-export",
        search={"base": ["adamw", "sgd"], "lr": [0.03, 1e-4]},
        fixed={"threads": 1, "variant": "dense"},
        seeds=2,
        early_stopping={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
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
    """Per configuration, from SQL: a diverged seed makes it the worst value (complete),
    a pruned seed pruned, every seed complete the mean objective."""
    expected = []
    for configuration in sorted({t.configuration for t in ran.trials}):
        seeds = [t for t in ran.trials if t.configuration == configuration]
        statuses = {t.status for t in seeds}
        assert statuses <= {"complete", "diverged", "pruned"}, statuses
        if "diverged" in statuses:
            state, value = TrialState.COMPLETE, math.inf
        elif "pruned" in statuses:
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.COMPLETE, sum(t.objective for t in seeds) / len(seeds)
        expected.append((configuration, state, seeds[0].params, value))
    return expected


def summary(trials: list[FrozenTrial]) -> list[tuple[int, TrialState, dict, float | None]]:
    return [(t.number, t.state, t.params, t.value) for t in trials]


def test_export_writes_an_optuna_study_that_load_study_opens(ran: Ran, tmp_path: Path) -> None:
    statuses = {t.status for t in ran.trials}
    assert {"complete", "diverged"} <= statuses, statuses  # the mix this test is about
    target = f"sqlite:///{tmp_path / 'optuna.db'}"
    for _ in range(2):  # exporting again replaces the earlier export
        done = export(ran, "--to", target)
        assert done.returncode == 0, (done.stdout, done.stderr)
    assert "4 configurations" in done.stdout

    name = f"magma-bench-study-{ran.study_id}"
    assert optuna.get_all_study_names(storage=target) == [name]
    study = optuna.load_study(study_name=name, storage=target)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == [ran.spec.metric]
    assert study.user_attrs["spec"] == ran.spec.model_dump(mode="json")
    exported = summary(study.get_trials())
    assert exported == pytest.approx(expected_trials(ran))
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
