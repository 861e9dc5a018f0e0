"""The study engine end to end: a real local Ray, the driver in this process
(``Driver.run(once=True)``), SQL, and the Optuna study a driver rebuilds from it, on
SQLite and on PostgreSQL.

Ray is started once per module (``ray_local``, two CPUs). Most studies train the
stochastic quadratic (40 steps, an evaluation every 10), where a trial's cost is the
Ray worker starting, not the training. The grid study is shared by several tests
(one run per back end, on its own fresh database) to keep the module to a few minutes.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import func, select

from service.export import best_document
from studies.analysis.curves import learning_curves
from studies.best import best_configuration
from studies.engine.driver import Driver
from studies.engine.runner import CancelStopper
from studies.engine.searcher import StudySearcher
from studies.results import load_study
from studies.spec import StudySpec
from studies.storage.models import Study, Trial
from studies.storage.repository import best_sql, lease, submissions, trial_lifecycle
from tests.db_fixtures import BACKENDS, Database, fresh_database, quadratic_spec, wait_for
from tests.engine_runs import StudyRun, dispose_driver, run_driver, run_study, snapshot
from worker.config import TrialConfig
from worker.contract import FINISHED_TRIAL_STATUSES, PROGRESS_METRIC, mask_seed

#: SQL trial status -> the state of its configuration's Optuna trial (one seed)
OPTUNA_STATE = {
    "complete": TrialState.COMPLETE,
    "diverged": TrialState.COMPLETE,  # told the worst value
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "cancelled": TrialState.FAIL,
}


def assert_optuna_matches_sql(run: StudyRun, configurations: int) -> None:
    """One finished Optuna trial per configuration, in the state and with the value its
    SQL trials score (``studies.best``: a diverged seed scores the worst value)."""
    assert len(run.optuna_trials) == configurations
    for number, trials in run.by_configuration().items():
        optuna_trial = run.optuna_trials[number]
        assert optuna_trial.number == number
        assert optuna_trial.params == trials[0].params
        statuses = {t.status for t in trials}
        if "diverged" in statuses:
            expected, value = TrialState.COMPLETE, math.inf
        elif "pruned" in statuses:
            expected, value = TrialState.PRUNED, None
        elif statuses & {"failed", "cancelled"}:
            expected, value = TrialState.FAIL, None
        else:
            expected = TrialState.COMPLETE
            value = pytest.approx(sum(t.objective for t in trials) / len(trials))
        assert (optuna_trial.state, optuna_trial.value) == (expected, value), (number, statuses)
        if len(trials) == 1:
            assert optuna_trial.state == OPTUNA_STATE[trials[0].status]


def assert_metric_curves(run: StudyRun, steps: int, eval_interval: int) -> None:
    """Every trial reported; steps increase; the trial row agrees with its last row."""
    for trial in run.trials:
        rows = run.metrics[trial.id]
        assert rows, f"trial {trial.number} has no metric rows"
        reported = [m.step for m in rows]
        assert reported == sorted(set(reported)), reported
        assert trial.last_step == reported[-1]
        assert all(m.step == m.values["step"] for m in rows)
        if trial.status in ("complete", "pruned"):
            assert reported == list(range(eval_interval, reported[-1] + 1, eval_interval))
            assert all(m.objective is not None and math.isfinite(m.objective) for m in rows)
            assert trial.objective == pytest.approx(rows[-1].objective)
        if trial.status == "complete":
            assert reported[-1] == steps
            assert rows[-1].values["status"] == "complete"


# --- a grid study: seeds, ASHA, every point once -------------------------------------------

GRID_LRS = [0.1, 0.03, 1e-4]  # best first, so that later (worse) trials meet full rungs
GRID_BASE_SEED = 5


def grid_spec() -> StudySpec:
    return quadratic_spec(
        name="grid",
        search={"lr": GRID_LRS},
        fixed={"threads": 1, "variant": "dense"},
        seeds=2,
        base_seed=GRID_BASE_SEED,
        early_stopping={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    )


@pytest.fixture(scope="module", params=BACKENDS)
def grid_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ray_local: None
):
    directory = tmp_path_factory.mktemp(f"grid-{request.param}")
    with fresh_database(request.param, directory) as url:
        db = Database(url)
        try:
            yield run_study(db, grid_spec(), directory / "ray")
        finally:
            db.dispose()


def test_grid_study_completes(grid_run: StudyRun) -> None:
    assert grid_run.study.status == "complete", grid_run.study.error
    assert grid_run.study.error is None
    assert grid_run.study.finished_at is not None
    assert grid_run.study.claimed_by is None
    assert {t.status for t in grid_run.trials} <= set(FINISHED_TRIAL_STATUSES)
    assert all(t.finished_at is not None and t.attempts == 1 for t in grid_run.trials)
    statuses = [e.payload["status"] for e in grid_run.events if e.kind == "study"]
    assert statuses == ["queued", "running", "complete"]


def test_grid_runs_every_point_exactly_once(grid_run: StudyRun) -> None:
    spec = grid_spec()
    configurations = grid_run.by_configuration()
    assert len(configurations) == spec.grid_size == len(GRID_LRS)
    assert sorted(configurations) == list(range(spec.grid_size))
    points = [trials[0].params for _, trials in sorted(configurations.items())]
    assert points == spec.grid_points()
    assert [t.number for t in grid_run.trials] == list(range(spec.grid_size * spec.seeds))
    created = [e for e in grid_run.events if e.kind == "configuration"]
    assert [e.payload["configuration"] for e in created] == list(range(spec.grid_size))


def test_seeds_share_random_numbers_across_configurations(grid_run: StudyRun) -> None:
    """Each configuration runs seeds 0 and 1; seed i has the same data order, init and
    masks (seed = base_seed + i) in every configuration: common random numbers."""
    for configuration, trials in grid_run.by_configuration().items():
        assert [t.seed_index for t in trials] == [0, 1]
        assert len({repr(t.params) for t in trials}) == 1
        for trial in trials:
            assert trial.config["seed"] == GRID_BASE_SEED + trial.seed_index
            assert trial.config["mask_seed"] == mask_seed(trial.config["seed"])
            assert trial.config == TrialConfig(**trial.config).model_dump(mode="json")
            assert trial.config["lr"] == GRID_LRS[configuration]
            assert trial.config["workload"] == "quadratic"
            assert trial.config["threads"] == 1
    for seed_index in (0, 1):
        seeds = {t.config["seed"] for t in grid_run.trials if t.seed_index == seed_index}
        assert seeds == {GRID_BASE_SEED + seed_index}


def test_asha_prunes_the_bad_configuration(grid_run: StudyRun) -> None:
    steps = grid_spec().workload.steps
    pruned = [t for t in grid_run.trials if t.status == "pruned"]
    assert pruned, [(t.number, t.status, t.last_step) for t in grid_run.trials]
    for trial in pruned:
        assert trial.last_step is not None and trial.last_step < steps
        assert all(m.values["status"] == "running" for m in grid_run.metrics[trial.id])
    # The smallest LR barely moves: both its seeds stop at the first rung.
    worst = grid_run.by_configuration()[GRID_LRS.index(1e-4)]
    assert [t.status for t in worst] == ["pruned", "pruned"]
    assert {t.last_step for t in worst} == {10}
    assert {t.status for t in grid_run.trials} <= {"complete", "pruned"}
    assert any(t.status == "complete" for t in grid_run.trials)


def test_grid_metrics_are_in_sql(grid_run: StudyRun) -> None:
    spec = grid_spec()
    assert_metric_curves(grid_run, spec.workload.steps, spec.workload.eval_interval)
    metric_events = [e for e in grid_run.events if e.kind == "metric"]
    assert len(metric_events) == sum(len(rows) for rows in grid_run.metrics.values())
    for rows in grid_run.metrics.values():
        assert {"train_loss", "val_loss", "lr", "tokens", "node"} <= set(rows[-1].values)


def test_grid_rebuilt_optuna_study_matches_sql(grid_run: StudyRun) -> None:
    assert_optuna_matches_sql(grid_run, grid_spec().grid_size)


# --- one study per test ---------------------------------------------------------------------


def test_tpe_study_runs_exactly_its_trials(db: Database, tmp_path: Path, ray_local: None) -> None:
    spec = quadratic_spec(
        name="tpe",
        sampler="tpe",
        trials=4,
        search={"lr": {"low": 1e-4, "high": 0.3, "log": True}},
        fixed={"threads": 1, "variant": "dense"},
        early_stopping={"kind": "asha", "grace_period": 1},
    )
    run = run_study(db, spec, tmp_path / "ray")
    assert run.study.status == "complete", run.study.error
    assert len(run.trials) == 4
    assert sorted(run.by_configuration()) == [0, 1, 2, 3]
    lrs = [t.params["lr"] for t in run.trials]
    assert len(set(lrs)) == 4
    assert all(1e-4 <= lr <= 0.3 for lr in lrs)
    assert all(t.config["lr"] == t.params["lr"] for t in run.trials)
    assert {t.status for t in run.trials} <= {"complete", "pruned"}
    assert_metric_curves(run, spec.workload.steps, spec.workload.eval_interval)

    assert all(t.state.is_finished() for t in run.optuna_trials)
    assert_optuna_matches_sql(run, 4)
    states = {t.number: t.state for t in run.optuna_trials}
    for trial in run.trials:
        assert states[trial.configuration] == OPTUNA_STATE[trial.status]
    # Tune's directory holds the trials' checkpoints, not another copy of their results.
    trial_dirs = [d for d in (tmp_path / "ray").glob("*/trainable_*") if d.is_dir()]
    assert len(trial_dirs) == 4
    kept = {entry.name for d in trial_dirs for entry in d.iterdir()}
    assert all(name.startswith("checkpoint_") for name in kept), kept


def test_diverged_trials_are_recorded_as_diverged(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    """LR 1e3 on a Hessian with eigenvalues up to 5000. AdamW's normalised steps keep the
    loss finite but far above its start (diverged at the first evaluation, objective
    ~1e9); plain SGD overflows within a few steps (objective +inf, stored as null)."""
    spec = quadratic_spec(
        name="diverged",
        search={"base": ["adamw", "sgd"]},
        fixed={"threads": 1, "variant": "dense", "lr": 1e3},
    )
    run = run_study(db, spec, tmp_path / "ray")
    assert run.study.status == "complete", run.study.error
    adamw, sgd = run.trials
    assert (adamw.params, sgd.params) == ({"base": "adamw"}, {"base": "sgd"})
    for trial in run.trials:
        assert trial.status == "diverged"
        assert trial.last_step is not None and trial.last_step < spec.workload.steps
        rows = run.metrics[trial.id]
        assert rows[-1].values["status"] == "diverged"
        assert rows[-1].step == trial.last_step
    assert adamw.objective is not None and adamw.objective > 1e6
    assert adamw.objective == pytest.approx(run.metrics[adamw.id][-1].objective)
    assert sgd.objective is None  # +inf
    assert run.metrics[sgd.id][-1].objective is None
    assert run.metrics[sgd.id][-1].values["objective"] is None
    # Optuna sees both as the worst value (studies.best), finite objective or not.
    assert [(t.state, t.value) for t in run.optuna_trials] == [(TrialState.COMPLETE, math.inf)] * 2
    assert_optuna_matches_sql(run, 2)


def test_cancel_stops_a_running_study(db: Database, tmp_path: Path, ray_local: None) -> None:
    spec = quadratic_spec(
        name="cancel",
        workload={"steps": 100_000, "eval_interval": 50},
        search={"lr": [0.1, 0.03, 0.01, 0.003]},
        fixed={"threads": 1, "variant": "dense"},
    )
    study_id = db.create_study(spec)
    driver = Driver(url=db.url, storage_path=tmp_path / "ray", poll_seconds=0.5)
    failure: list[BaseException] = []
    timeline: list[str] = []

    def serve() -> None:
        try:
            driver.run(once=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    def cancelled() -> bool:
        study, trials = db.study(study_id), db.trials(study_id)
        timeline.append(
            f"{time.monotonic() - cancelled_at:5.1f}s {study.status} "
            f"{[(t.status, t.last_step) for t in trials]}"
        )
        return study.status == "cancelled"

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: any(t.status == "running" and t.last_step for t in db.trials(study_id)),
            timeout=180,
            what="a running trial that has reported",
        )
        with db.transaction() as session:
            submissions.request_cancel(session, study_id)
        cancelled_at = time.monotonic()
        while not cancelled() and time.monotonic() - cancelled_at < 15:
            time.sleep(0.5)
        took = time.monotonic() - cancelled_at
        assert took < 15, "the study was not cancelled within 15 s:\n" + "\n".join(timeline)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the driver did not return after the cancel"
    finally:
        thread.join(timeout=60)
        dispose_driver(driver)
    assert not failure, failure
    run = snapshot(db, study_id)
    assert run.study.finished_at is not None
    statuses = [t.status for t in run.trials]
    assert statuses, "no trial was created"
    assert not {"queued", "running"} & set(statuses), statuses
    assert "cancelled" in statuses
    assert all(t.last_step is None or t.last_step < 100_000 for t in run.trials)
    study_events = [e.payload["status"] for e in run.events if e.kind == "study"]
    assert study_events == ["queued", "running", "cancelling", "cancelled"]


def test_a_driver_whose_study_was_taken_over_stops_its_trials_and_leaves_them(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    """A driver that stalled past ``MAGMA_DRIVER_STALE_SECONDS`` loses its study to another
    driver, which requeues the trials and resumes them. The first one's next heartbeat
    finds the claim gone: it stops its trials within seconds and neither cancels nor
    finishes anything, so the study stays the new owner's."""
    spec = quadratic_spec(
        name="taken-over",
        workload={"steps": 100_000, "eval_interval": 50},
        search={"lr": [0.1, 0.03]},
        fixed={"threads": 1, "variant": "dense"},
    )
    study_id = db.create_study(spec)
    driver = Driver(
        url=db.url, storage_path=tmp_path / "ray", poll_seconds=0.5, heartbeat_seconds=0.5
    )
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            driver.run(once=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: any(t.status == "running" and t.last_step for t in db.trials(study_id)),
            timeout=180,
            what="a running trial that has reported",
        )
        with db.transaction() as session:  # what claim_study does once the claim is stale
            session.get(Study, study_id).claimed_by = "driver-b"
        thread.join(timeout=30)
        assert not thread.is_alive(), "the driver went on with a study it no longer holds"
    finally:
        thread.join(timeout=60)
        dispose_driver(driver)
    assert not failure, failure
    run = snapshot(db, study_id)
    assert (run.study.status, run.study.claimed_by) == ("running", "driver-b")
    assert run.study.finished_at is None and run.study.error is None
    assert [e.payload["status"] for e in run.events if e.kind == "study"] == ["queued", "running"]
    statuses = [t.status for t in run.trials]
    assert "running" in statuses and set(statuses) <= {"queued", "running"}, statuses


def test_a_trial_stopped_for_a_cancel_is_recorded_as_cancelled(db: Database) -> None:
    """Tune asks the stopper about each result *before* it calls ``stop_all`` at the end
    of its loop step. A result that arrives after the heartbeat thread set the cancel
    flag makes ``CancelStopper.__call__`` stop the trial, and Tune reports it to the
    searcher while ``searcher.cancelled`` (set only in ``stop_all``) is still False:
    the trial is recorded (and told to Optuna) as *pruned*. This replays that order."""
    spec = quadratic_spec(name="cancel-race", search={"lr": [0.1, 0.03]})
    study_id = db.create_study(spec)
    with db.transaction() as session:
        lease.claim_study(session, "driver", timedelta(seconds=60))
    searcher = StudySearcher(study_id, spec, db.sessions)
    cancel = threading.Event()
    stopper = CancelStopper(searcher, cancel)
    config = searcher.suggest("tune-0")
    assert isinstance(config, dict)
    (trial_id,) = config["_meta"]["trial_ids"]
    with db.transaction() as session:
        trial_lifecycle.mark_trial_running(session, trial_id)

    cancel.set()  # the driver's heartbeat thread read "cancelling"
    result = {"status": "running", "objective": 5.0, "step": 10}
    assert stopper("tune-0", result)  # TuneController._process_trial_result
    searcher.on_trial_complete("tune-0", result)  # TuneController.stop_trial
    assert stopper.stop_all()  # TuneController._stop_experiment_if_needed
    optuna_state = searcher.optuna.get_trials(deepcopy=False)[0].state
    (trial,) = db.trials(study_id)
    assert trial.status == "cancelled", f"recorded {trial.status!r}, Optuna {optuna_state.name}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"search": {"lr": {"low": 1.0, "high": 0.1}}}, "must be below high"),
        ({"search": {"steps": [10, 20]}}, "cannot search ['steps']"),
        ({"search": {"variant": ["dense", "bogus"]}}, "search.variant"),
        ({"search": {"lr": {"low": 1e-3, "high": 1.0}}}, "sampler 'grid' needs lists"),
        ({"sampler": "tpe", "search": {"lr": [0.1]}}, "trials: required"),
        ({"workload": {"kind": "quadratic", "stepz": 10}}, "stepz"),
        ({"fixed": {"threads": 0}}, "threads: Input should be greater than or equal to 1"),
        ({"fixed": {"steps": 10}}, "set by search/workload"),
        ({"seeds": 0}, "seeds"),
        ({"max_concurrent": 0}, "max_concurrent"),
    ],
    ids=[
        "inverted-range",
        "unsearchable",
        "bad-choice",
        "grid-range",
        "no-trials",
        "unknown-workload-field",
        "bad-fixed",
        "fixed-overlap",
        "zero-seeds",
        "zero-concurrency",
    ],
)
def test_a_spec_with_bad_fields_is_rejected_before_anything_is_created(
    db: Database, change: dict[str, Any], message: str
) -> None:
    data = quadratic_spec(name="bad", search={"lr": [0.1]}).model_dump(mode="json")
    data.update(change)
    with pytest.raises(ValidationError) as excinfo:
        StudySpec.model_validate(data)
    assert message in str(excinfo.value)
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 0
        assert session.scalar(select(func.count()).select_from(Trial)) == 0


def test_a_bad_fixed_field_is_reported_under_fixed() -> None:
    """The message should name ``fixed``, where the bad value is. It names the first
    searched parameter instead ("search.lr: threads: ..."), because ``_consistent``
    checks every searched value (each with the fixed fields merged in) before it
    checks the fixed fields on their own."""
    data = quadratic_spec(name="bad", search={"lr": [0.1]}).model_dump(mode="json")
    data["fixed"] = {"threads": 0}
    with pytest.raises(ValidationError) as excinfo:
        StudySpec.model_validate(data)
    assert "fixed.threads" in str(excinfo.value)


def test_driver_fails_a_stored_study_whose_spec_is_invalid(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    """A spec that reached the database without validation (an older schema, a manual
    insert) fails the study with the field named; the driver does not crash."""
    study_id = db.create_study(quadratic_spec(name="bad", search={"lr": [0.1]}))
    with db.transaction() as session:  # a manual insert: nothing validates it
        study = session.get(Study, study_id)
        assert study is not None
        study.spec = {**study.spec, "search": {"lr": [0.1], "variant": ["bogus"]}}
    run_driver(db, tmp_path / "ray")
    study = db.study(study_id)
    assert study.status == "failed"
    assert study.error is not None and "search.variant" in study.error
    assert db.trials(study_id) == []


# --- llama-nano on the C4 sample --------------------------------------------------------------


def test_llama_nano_study_completes(db: Database, tmp_path: Path, ray_local: None) -> None:
    spec = StudySpec.model_validate(
        {
            "name": "llama-nano",
            "workload": {
                "kind": "llama-c4",
                "model": "llama-nano",
                "steps": 20,
                "batch_size": 4,
                "seq_len": 64,
                "eval_tokens": 2048,
                "eval_interval": 10,
            },
            "search": {"lr": [1e-3, 3e-3], "variant": ["dense", "magma"]},
            "sampler": "grid",
            "max_concurrent": 2,
            "fixed": {"threads": 1},
        }
    )
    run = run_study(db, spec, tmp_path / "ray")
    assert run.study.status == "complete", run.study.error
    assert len(run.trials) == 4
    assert [t.params for t in run.trials] == spec.grid_points()
    assert {t.status for t in run.trials} == {"complete"}
    assert_metric_curves(run, steps=20, eval_interval=10)
    for trial in run.trials:
        rows = run.metrics[trial.id]
        assert [m.step for m in rows] == [10, 20]
        for row in rows:
            assert row.objective == pytest.approx(row.values["val_ppl"])
            assert 1 < row.objective < 1e6
            assert row.values["tokens"] > 0
    assert_optuna_matches_sql(run, 4)
    print(f"llama-nano study: {run.seconds:.1f} s")


def test_the_objective_metric_drives_the_search_best_and_dashboards(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    """A study optimising ``train_loss``: every reported row's objective (what Tune, ASHA
    and the SQL objective columns read) is its train loss, and the best configuration, the
    dashboards' curves and the export follow it."""
    spec = quadratic_spec(
        name="train-loss",
        search={"lr": [0.003, 0.03, 0.3]},
        objective={"metric": "train_loss"},
        early_stopping={"kind": "asha", "grace_period": 1},
    )
    run = run_study(db, spec, tmp_path / "ray")
    assert run.study.status == "complete", run.study.error
    assert (run.study.metric, run.study.mode) == ("train_loss", "min")
    for trial in run.trials:
        rows = run.metrics[trial.id]
        assert rows and all(r.values["objective"] == r.values["train_loss"] for r in rows)
        assert all(r.objective == r.values["train_loss"] for r in rows)
        assert trial.config["metric"] == "train_loss"
        if trial.status == "complete":
            assert trial.objective == rows[-1].values["train_loss"] != rows[-1].values["val_loss"]
    complete = [t for t in run.trials if t.status == "complete"]
    expected = min(complete, key=lambda t: (t.objective, t.configuration))
    with db.sessions() as session:
        assert best_sql.best_configuration_number(session, run.study.id, "min") == (
            expected.configuration
        )
        data = load_study(session, run.study.id, metrics="curves")
    assert data is not None and data.metric == "train_loss"
    curves = learning_curves(data.trials, data.metrics, data.metric, PROGRESS_METRIC["quadratic"])
    by_trial = {curve.trial.id: curve for curve in curves}
    for trial in run.trials:
        assert list(by_trial[trial.id].y) == [r.values["train_loss"] for r in run.metrics[trial.id]]
    best = best_configuration(run.trials, "min")
    assert best is not None and best.configuration == expected.configuration
    document = best_document(run.study, best)
    assert document["study"]["objective"] == {"metric": "train_loss", "mode": "min"}
