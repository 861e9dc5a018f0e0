"""worker.trainable under a real local Ray Tune: ASHA early stopping, checkpoints that
``train_seeds()`` can resume, and a crashed trial restarting from its last checkpoint.
Each trial here is a batch of one seed (the config without the engine's ``seed_fields``).

Trials train the quadratic workload (milliseconds per step), so the cost is Ray's.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from tests.worker_fixtures import deterministic
from worker.config import TrialConfig
from worker.seed_batch import SEED_BATCH_CHECKPOINT_FILE, train_seeds
from worker.trainable import META_KEY, SEED_ROWS_KEY, trainable

STEPS, EVAL_INTERVAL = 100, 10
REPORTS = STEPS // EVAL_INTERVAL
LRS = [0.1, 0.03, 0.01, 0.001]  # best first: later, worse trials meet recorded rungs
QUADRATIC = {
    "workload": "quadratic",
    "variant": "dense",
    "steps": STEPS,
    "eval_interval": EVAL_INTERVAL,
    "threads": 1,
}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


class StepLog(tune.Callback):
    """Every result's (trial_id, step), as the driver sees them; optionally kills a
    trial's worker process once, right after it reports ``kill_at``."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at = kill_at
        self.steps: dict[str, list[int]] = {}
        self.killed: set[str] = set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.steps.setdefault(trial.trial_id, []).append(result["step"])
        if result["step"] == self.kill_at and trial.trial_id not in self.killed:
            self.killed.add(trial.trial_id)
            os.kill(result["pid"], signal.SIGKILL)


@pytest.fixture(scope="module")
def asha(ray_cluster, tmp_path_factory):
    log = StepLog()
    tuner = tune.Tuner(
        trainable,
        param_space={**QUADRATIC, "lr": tune.grid_search(LRS), META_KEY: {"study": "test"}},
        tune_config=tune.TuneConfig(
            metric="objective",
            mode="min",
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                grace_period=1,
                max_t=REPORTS,
                reduction_factor=2,
            ),
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(
            name="asha",
            storage_path=str(tmp_path_factory.mktemp("ray-results")),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[log],
            verbose=0,
        ),
    )
    return tuner.fit(), log


def test_asha_stops_some_trials_and_reports_metrics(asha):
    results, log = asha
    assert results.num_errors == 0, results.errors
    assert len(results) == len(LRS)
    assert sorted(r.config["lr"] for r in results) == sorted(LRS)
    last_steps = []
    for result in results:
        (metrics,) = result.metrics[SEED_ROWS_KEY]
        assert {"objective", "step", "status", "val_loss", "tokens_per_s", "node"} <= set(metrics)
        assert metrics["objective"] == metrics["val_loss"] == result.metrics["objective"]
        assert metrics["step"] == result.metrics["step"]
        steps = log.steps[result.metrics["trial_id"]]
        assert steps == list(range(EVAL_INTERVAL, metrics["step"] + 1, EVAL_INTERVAL))
        assert metrics["status"] == ("complete" if metrics["step"] == STEPS else "running")
        assert result.metrics["training_iteration"] == len(steps)
        # a checkpoint with every report, the newest being the trial's last
        assert len(result.best_checkpoints) == len(steps)
        assert result.checkpoint is not None
        assert (Path(result.checkpoint.path) / SEED_BATCH_CHECKPOINT_FILE).is_file()
        last_steps.append(metrics["step"])
    assert min(last_steps) < STEPS, "ASHA stopped no trial"
    assert max(last_steps) == STEPS
    best = results.get_best_result()
    assert best.metrics["objective"] == min(r.metrics["objective"] for r in results)
    assert best.metrics["step"] == STEPS
    assert best.metrics[SEED_ROWS_KEY][0]["status"] == "complete"


def test_trial_checkpoint_resumes_with_train_seeds(asha):
    results, _ = asha
    best = results.get_best_result()
    config = TrialConfig(**{k: v for k, v in best.config.items() if k != META_KEY})
    by_step = {metrics["step"]: ckpt for ckpt, metrics in best.best_checkpoints}
    assert sorted(by_step) == list(range(EVAL_INTERVAL, STEPS + 1, EVAL_INTERVAL))
    middle = Path(by_step[STEPS // 2].path)
    assert sorted(p.name for p in middle.iterdir()) == [SEED_BATCH_CHECKPOINT_FILE]
    (resumed,) = train_seeds([config], resume_from=middle)
    assert deterministic(resumed) == deterministic(best.metrics[SEED_ROWS_KEY][0])


def test_crashed_trial_restarts_from_its_checkpoint(ray_cluster, tmp_path):
    config = {**QUADRATIC, "variant": "magma", "lr": 0.05, "steps": 60}
    log = StepLog(kill_at=30)
    tuner = tune.Tuner(
        trainable,
        param_space=config,
        tune_config=tune.TuneConfig(metric="objective", mode="min", num_samples=1),
        run_config=tune.RunConfig(
            name="crash",
            storage_path=str(tmp_path),
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[log],
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert results.num_errors == 0, results.errors
    (result,) = results
    assert len(log.killed) == 1, "the trial was never killed"
    (steps,) = log.steps.values()
    kill = steps.index(30)
    before, after = steps[: kill + 1], steps[kill + 1 :]
    assert before == [10, 20, 30]
    # resumed from a checkpoint (the one at 30, or at 20 if the kill beat its
    # registration), never from scratch
    assert after[0] in (30, 40) and after[-1] == 60, steps
    (row,) = result.metrics[SEED_ROWS_KEY]
    assert row["status"] == "complete"
    (uninterrupted,) = train_seeds([TrialConfig(**config)])
    assert deterministic(row) == deterministic(uninterrupted)


def test_meta_resume_from_continues_an_earlier_run(ray_cluster, tmp_path):
    """``_meta.resume_from``: the checkpoint of an earlier run of the trial, handed back by
    a restarted study driver; the Tune trial continues from it instead of step 0."""
    config = {**QUADRATIC, "variant": "magma", "lr": 0.05, "steps": 40}
    trial = TrialConfig(**config)
    earlier = tmp_path / "earlier"

    def report(rows, save):
        if rows[0]["step"] == 20:
            save(earlier)

    (uninterrupted,) = train_seeds([trial], report=report)
    assert (earlier / SEED_BATCH_CHECKPOINT_FILE).is_file()
    log = StepLog()
    results = tune.Tuner(
        trainable,
        param_space={**config, META_KEY: {"trial_ids": [7], "resume_from": str(earlier)}},
        tune_config=tune.TuneConfig(metric="objective", mode="min", num_samples=1),
        run_config=tune.RunConfig(
            name="meta-resume", storage_path=str(tmp_path / "ray"), callbacks=[log], verbose=0
        ),
    ).fit()
    assert results.num_errors == 0, results.errors
    (result,) = results
    assert list(log.steps.values()) == [[30, 40]]
    assert deterministic(result.metrics[SEED_ROWS_KEY][0]) == deterministic(uninterrupted)
