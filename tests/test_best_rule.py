"""One best rule (``studies.best``): the API's ``/best`` and study detail, ``magma-bench
status``, the dashboards' comparison table, the searcher's Optuna study and the Optuna
export all name the same configuration, on a study whose seeds were pruned, failed and
diverged. The trials are written with the engine's repository functions, as the driver
writes them, against a real ``magma-bench serve`` on each backend."""

from __future__ import annotations

import re

import httpx
import optuna
import pytest

from studies.analysis.table import comparison_table
from studies.results import load_study
from studies.samplers import in_memory_study
from studies.spec import StudySpec
from studies.storage.repository import lease, trial_lifecycle
from tests.db_fixtures import Database, quadratic_spec
from tests.service_fixtures import Server, cli

#: per configuration (its lr), each seed's (status, objective); minimising
SEEDS = {
    0.1: [("complete", 1.0), ("pruned", None)],  # the lowest number, but a seed was pruned
    0.2: [("complete", 1.5), ("failed", None)],  # a seed's process failed
    0.3: [("complete", 1.2), ("diverged", None)],  # a seed diverged: scored worst
    0.4: [("complete", 2.0), ("complete", 2.2)],  # every seed complete: the best, mean 2.1
    0.5: [("complete", 3.0), ("complete", 3.0)],
}
BEST_CONFIGURATION, BEST_MEAN = 3, 2.1


def write_study(server: Server) -> tuple[int, list[int]]:
    """The study, finished; returns its id and the best configuration's trial ids."""
    spec = quadratic_spec(name="best-rule", search={"lr": list(SEEDS)}, seeds=2)
    response = httpx.post(f"{server.api}/studies", json=spec.model_dump(mode="json"))
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    db = Database(server.database_url)
    best_ids: list[int] = []
    try:
        with db.transaction() as session:
            for number, (lr, seeds) in enumerate(SEEDS.items()):
                configs = [spec.complete_trial_config({"lr": lr}, s) for s in range(len(seeds))]
                trials = trial_lifecycle.create_configuration(
                    session, study_id, number, {"lr": lr}, configs
                )
                for trial, (status, objective) in zip(trials, seeds, strict=True):
                    trial_lifecycle.mark_trial_running(session, trial.id)
                    trial_lifecycle.finish_trial(session, trial.id, status, objective, 40)
                if number == BEST_CONFIGURATION:
                    best_ids = [trial.id for trial in trials]
            lease.finish_study(session, study_id, "complete")
    finally:
        db.engine.dispose()
    return study_id, best_ids


def test_every_reader_names_the_same_best_configuration(server: Server, tmp_path) -> None:
    study_id, best_ids = write_study(server)

    best = httpx.get(f"{server.api}/studies/{study_id}/best", params={"format": "json"}).json()
    assert (best["configuration"], best["trial_ids"]) == (BEST_CONFIGURATION, best_ids)
    assert best["objective"] == pytest.approx(BEST_MEAN) and best["params"] == {"lr": 0.4}
    detail = httpx.get(f"{server.api}/studies/{study_id}").json()
    assert detail["best"]["configuration"] == BEST_CONFIGURATION

    status = cli(server, "status", str(study_id))
    assert status.returncode == 0, status.stderr
    assert re.search(r"best: \{'lr': 0\.4\}\s+objective 2\.1\b", status.stdout), status.stdout

    # the dashboards' comparison table, as its page computes it and as the page shows it
    db = Database(server.database_url)
    try:
        with db.sessions() as session:
            data = load_study(session, study_id)
            configurations = trial_lifecycle.configurations(session, study_id)
    finally:
        db.engine.dispose()
    assert data is not None
    cell = comparison_table(data.trials, data.mode).rows["adamw"]["magma"]
    assert cell.best is not None and cell.best.number == BEST_CONFIGURATION
    page = httpx.get(f"{server.url}/studies/{study_id}/dashboard/table")
    assert page.status_code == 200
    linked = [int(i) for i in re.findall(r'href="/api/v1/trials/(\d+)"', page.text)]
    assert linked == best_ids

    # the searcher's Optuna study, rebuilt from SQL, and the Optuna export a user opens
    spec = StudySpec.model_validate(detail["spec"])
    searcher_study = in_memory_study(spec, configurations)
    assert searcher_study.best_trial.number == BEST_CONFIGURATION
    assert searcher_study.best_value == pytest.approx(BEST_MEAN)
    target = f"sqlite:///{tmp_path / 'optuna.db'}"
    exported = cli(server, "export", str(study_id), "--format", "optuna", "--to", target)
    assert exported.returncode == 0, exported.stderr
    summary = optuna.get_all_study_summaries(target)
    (name,) = [s.study_name for s in summary]
    opened = optuna.load_study(study_name=name, storage=target)
    assert opened.best_trial.number == BEST_CONFIGURATION
    assert opened.best_trial.params == {"lr": 0.4}
    assert opened.best_value == pytest.approx(BEST_MEAN)
    states = [trial.state for trial in opened.trials]
    assert states == [
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.COMPLETE,  # diverged: told the worst value
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.COMPLETE,
    ]
    assert opened.trials[2].value == float("inf")


def test_an_objective_metric_the_workload_does_not_report_is_a_422(server: Server) -> None:
    spec = quadratic_spec(name="bad-metric").model_dump(mode="json")
    spec["objective"] = {"metric": "val_ppl"}  # the quadratic reports no perplexity
    response = httpx.post(f"{server.api}/studies", json=spec)
    assert response.status_code == 422, response.text
    (detail,) = response.json()["error"]["details"]
    assert detail["field"] == "objective.metric"
    assert "reports no metric 'val_ppl'" in detail["message"]
    assert "'train_loss'" in detail["message"] and "'val_loss'" in detail["message"]
    assert "'log_loss_auc'" in detail["message"] and "'steps_to_target'" in detail["message"]
