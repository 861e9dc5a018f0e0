"""Run one study with Ray Tune on the cluster in ``RAY_ADDRESS`` (or a local one).

Tune supplies the execution: concurrency, ASHA early stopping, retries of a trial
whose process died (from its last checkpoint), and stopping everything when the
study is cancelled. The searcher and the SQL recorder keep the database current; the
database is the only store of trial state. Tune's directory holds the checkpoints trials
resume from, and Tune's own restore bookkeeping, which nothing reads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from sqlalchemy.orm import Session, sessionmaker

from studies.engine._pickling import Unpicklable
from studies.engine.recorder import SQLRecorder
from studies.engine.searcher import StudySearcher
from studies.spec import StudySpec
from studies.storage.engine import transaction
from studies.storage.repository import trial_lifecycle
from worker.contract import OBJECTIVE_KEY, StudyStatus
from worker.trainable import trainable

MAX_TRIAL_RETRIES = 2


class CancelStopper(Unpicklable, tune.Stopper):
    _picklable = ()

    """Stops the whole experiment once the database says the study is cancelling, or once
    another driver has taken the study over (the searcher's ``claim_lost``).

    Both are read by the driver's heartbeat thread; this only looks at flags."""

    def __init__(self, searcher: StudySearcher, cancelled: threading.Event) -> None:
        self.searcher, self.cancelled = searcher, cancelled

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        # Tune may stop a trial through __call__ before it calls stop_all: either way
        # the searcher must know, so the trial is recorded as cancelled, not pruned.
        if self.cancelled.is_set():
            self.searcher.cancelled = True
        return self.cancelled.is_set() or self.searcher.claim_lost.is_set()


#: Tune's trainable registry is not thread-safe: two studies registering at once fail with
#: "dictionary changed size during iteration" (measured), so registration takes this lock
_registration = threading.Lock()


def study_trainable(cpu: float, gpu: float) -> str:
    """``worker.trainable.trainable`` with these resources, registered under a name of its
    own, which Tune is given instead of the function (a name is not registered again).

    ``tune.with_resources`` sets an attribute on the function it is given, and Tune
    registers a trainable by its function name once per Ray job, where every trial
    started looks it up: studies running at once in one driver, each wrapping the one
    shared function, would start trials with each other's resources. One name per
    resource shape gives equal studies one registration and different ones their own."""

    def run(config: dict[str, Any]) -> None:
        trainable(config)

    name = run.__name__ = f"trainable_cpu{cpu:g}_gpu{gpu:g}"
    with _registration:
        tune.register_trainable(name, tune.with_resources(run, {"cpu": cpu, "gpu": gpu}))
    return name


def run_study(
    study_id: int,
    spec: StudySpec,
    sessions: sessionmaker[Session],
    storage_path: Path,
    cancelled: threading.Event,
    claim_lost: threading.Event,
    run_name: str,
    limit: Callable[[], int] | None = None,
) -> str | None:
    """Run until every trial has finished or the study is cancelled; returns the status,
    or None when ``claim_lost`` was set: this driver then stops and writes nothing more,
    since the driver that took the study over has requeued its trials.

    ``limit``: the trials the study may have in flight now, below its ``max_concurrent``
    (the driver's fair share when it runs several studies at once)."""
    with transaction(sessions) as session:
        trial_lifecycle.requeue_unfinished(session, study_id)
    recorder = SQLRecorder(sessions, claim_lost)
    searcher = StudySearcher(
        study_id, spec, sessions, flush=recorder.flush, limit=limit, claim_lost=claim_lost
    )
    if spec.early_stopping.kind == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=max(1, -(-spec.workload.steps // spec.workload.eval_interval)),
            grace_period=spec.early_stopping.grace_period,
            reduction_factor=spec.early_stopping.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    # Tune's default result loggers (CSV, JSON, TensorBoard) would keep another copy of
    # every metric row beside the checkpoints; the recorder writes them to SQL. (The result
    # grid ``fit`` returns, unused, then finds no result files and would say so per trial.)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tuner = tune.Tuner(
        study_trainable(spec.resources.cpu, spec.resources.gpu),
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE_KEY,
            mode=spec.mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent),
            scheduler=scheduler,
            num_samples=-1,
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=str(storage_path.resolve()),
            callbacks=[recorder],
            stop=CancelStopper(searcher, cancelled),
            failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_RETRIES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    tuner.fit()
    if claim_lost.is_set():
        return None
    recorder.flush()
    with transaction(sessions) as session:
        if cancelled.is_set():
            trial_lifecycle.cancel_unfinished(session, study_id)
            return StudyStatus.cancelled.value
        if trial_lifecycle.unfinished_count(session, study_id):
            return StudyStatus.failed.value
    return StudyStatus.complete.value
