"""A configuration's seeds as one Ray task (``StudySpec.seed_batch``): the searcher's
chunks, each seed finished from its own rows, and a study whose batches have seeds that
diverge while their batch-mates complete.

The chunk tests drive ``StudySearcher`` directly (no Ray); the study runs the real driver
on the module's Ray. Its quadratic runs plain SGD at an LR on the edge of stability, where
whether and when a seed diverges depends on its seed (its rotations, start and row
sampling): the test takes each seed's single-seed ``train()`` run as the reference.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
from optuna.trial import TrialState

from studies.engine.searcher import StudySearcher
from studies.storage.repository import lease, metric_ingest, trial_lifecycle
from tests.db_fixtures import Database, quadratic_spec
from tests.engine_runs import run_study
from worker.config import TrialConfig
from worker.trainable import META_KEY
from worker.trainer import train


def _searcher(db: Database, name: str = "chunks", **fields) -> tuple[int, StudySearcher]:
    spec = quadratic_spec(name=name, **fields)
    study_id = db.create_study(spec)
    with db.transaction() as session:
        lease.claim_study(session, "driver", timedelta(seconds=60))
    return study_id, StudySearcher(study_id, spec, db.sessions)


def _seed_indices(db: Database, study_id: int, trial_ids: list[int]) -> list[tuple[int, int]]:
    by_id = {t.id: t for t in db.trials(study_id)}
    return [(by_id[i].configuration, by_id[i].seed_index) for i in trial_ids]


def test_the_searcher_hands_out_consecutive_seeds_of_one_configuration(db: Database) -> None:
    """Five seeds in batches of two: chunks of seeds (0, 1), (2, 3), (4) per
    configuration, each one Tune config carrying every seed's SQL trial and its own seed
    and mask seed; the Tune config is the first seed's."""
    study_id, searcher = _searcher(db, search={"lr": [0.1, 0.03]}, seeds=5, seed_batch=2)
    chunks = []
    for n in range(6):
        config = searcher.suggest(f"tune-{n}")
        assert isinstance(config, dict)
        meta = config[META_KEY]
        chunks.append(_seed_indices(db, study_id, meta["trial_ids"]))
        trials = {t.id: t for t in db.trials(study_id)}
        first = trials[meta["trial_ids"][0]].config
        assert {k: v for k, v in config.items() if k != META_KEY} == first
        for trial_id, fields in zip(meta["trial_ids"], meta["seed_fields"], strict=True):
            assert {**first, **fields} == trials[trial_id].config
            assert set(fields) <= {"seed", "mask_seed"}
        assert "resume_from" not in meta
    assert chunks == [
        [(c, 0), (c, 1)] if k == 0 else [(c, 2), (c, 3)] if k == 1 else [(c, 4)]
        for c in (0, 1)
        for k in range(3)
    ]
    assert searcher.suggest("tune-6") is None  # all handed out, none finished: wait


def test_a_requeued_chunk_comes_back_whole_with_its_checkpoint(db: Database) -> None:
    """A driver died with one chunk checkpointed and one not started: the next driver
    hands the checkpointed chunk back whole (its batch checkpoint holds exactly those
    seeds), even when seed_batch would split it, and regroups the fresh seeds."""
    study_id, first = _searcher(db, search={"lr": [0.1]}, seeds=5, seed_batch=3)
    checkpointed = first.suggest("a")[META_KEY]["trial_ids"]
    first.suggest("b")
    with db.transaction() as session:
        for trial_id in checkpointed:
            trial_lifecycle.mark_trial_running(session, trial_id)
            trial_lifecycle.record_checkpoint(session, trial_id, "/ckpt/a")
    del first  # SIGKILL
    with db.transaction() as session:
        assert trial_lifecycle.requeue_unfinished(session, study_id) == 3

    spec = quadratic_spec(name="chunks", search={"lr": [0.1]}, seeds=5, seed_batch=2)
    second = StudySearcher(study_id, spec, db.sessions)  # a smaller batch would split it
    meta = second.suggest("c")[META_KEY]
    assert (meta["trial_ids"], meta["resume_from"]) == (checkpointed, "/ckpt/a")
    assert _seed_indices(db, study_id, second.suggest("d")[META_KEY]["trial_ids"]) == [
        (0, 3),
        (0, 4),
    ]


def test_each_seed_of_a_chunk_is_finished_from_its_own_last_row(db: Database) -> None:
    """A chunk of three ends: seed 0 diverged mid-batch, seed 1 last reported running,
    seed 2 reported nothing. ASHA stopped it: diverged, pruned, pruned. Its process
    failed: diverged, failed, failed (no objective). The configuration is told to Optuna
    once all seeds are finished: a diverged seed scores it the worst value
    (``studies.best``), whatever its batch-mates did."""
    for error, others in ((False, "pruned"), (True, "failed")):
        study_id, searcher = _searcher(db, search={"lr": [0.1]}, seeds=3, name=f"end-{error}")
        ids = searcher.suggest("tune-0")[META_KEY]["trial_ids"]
        rows = [
            (ids[0], {"step": 10, "status": "running", "objective": 5.0}),
            (ids[1], {"step": 10, "status": "running", "objective": 4.0}),
            (ids[0], {"step": 20, "status": "diverged", "objective": 1e9}),
            (ids[1], {"step": 30, "status": "running", "objective": 3.0}),
        ]
        with db.transaction() as session:
            for trial_id in ids:
                trial_lifecycle.mark_trial_running(session, trial_id)
            metric_ingest.add_metrics(session, rows)
        searcher.on_trial_complete("tune-0", error=error)
        trials = db.trials(study_id)
        assert [(t.status, t.last_step, t.objective) for t in trials] == [
            ("diverged", 20, 1e9),
            (others, 30, None if error else 3.0),
            (others, None, None),
        ]
        assert [t.error for t in trials] == [None] + ["trial process failed" if error else None] * 2
        (told,) = searcher.optuna.get_trials(deepcopy=False)
        assert (told.state, told.value) == (TrialState.COMPLETE, math.inf)


def test_seeds_of_a_batch_diverge_on_their_own_and_their_batch_mates_complete(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    """Four seeds in batches of three at an LR where some seeds diverge, at different
    steps, and others complete: each seed's SQL trial, rows and status are its single
    run's, a seed that diverged mid-batch reports nothing after its diverged row, and the
    batch runs as one Ray task (two Tune trials for four seeds)."""
    spec = quadratic_spec(
        name="batch-divergence",
        search={"lr": [1e-4]},
        fixed={"threads": 1, "variant": "dense", "base": "sgd"},
        seeds=4,
        seed_batch=3,
    )
    singles = []
    for seed_index in range(spec.seeds):
        rows: list[dict] = []
        config = TrialConfig(**spec.complete_trial_config({"lr": 1e-4}, seed_index))
        train(config, report=lambda metrics, save, rows=rows: rows.append(metrics))
        singles.append(rows)
    statuses = [rows[-1]["status"] for rows in singles]
    assert "complete" in statuses[:3] and "diverged" in statuses[:3], statuses  # the setup

    run = run_study(db, spec, tmp_path / "ray")
    assert run.study.status == "complete", run.study.error
    trial_dirs = [d for d in (tmp_path / "ray").glob("*/trainable_*") if d.is_dir()]
    assert len(trial_dirs) == 2  # seeds 0-2 and seed 3
    for trial, single in zip(run.trials, singles, strict=True):
        rows = run.metrics[trial.id]
        assert [m.step for m in rows] == [r["step"] for r in single], trial.seed_index
        assert [m.values["status"] for m in rows] == [r["status"] for r in single]
        assert [m.values["val_loss"] for m in rows] == pytest.approx(
            [r["val_loss"] for r in single], rel=1e-5
        )
        assert (trial.status, trial.last_step, trial.attempts) == (
            single[-1]["status"],
            single[-1]["step"],
            1,
        )
        if trial.status == "complete":
            assert trial.objective == pytest.approx(single[-1]["objective"], rel=1e-5)
    (told,) = run.optuna_trials
    assert told.value == math.inf  # a diverged seed scores the worst value
