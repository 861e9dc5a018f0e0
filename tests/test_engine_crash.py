"""Crashes: a driver killed mid-study, a trial process killed mid-trial, and a driver
restarted mid-study rebuilding its in-memory Optuna study from SQL.

* The driver-kill test runs real ``magma-bench driver`` processes, each with its own
  local Ray (own ``RAY_TMPDIR``): the first is SIGKILLed with its process group, every
  process of its session is then accounted for by pid, and a second driver finishes
  the study from the database.
* The trial-kill test runs the driver in this process on the module's Ray and SIGKILLs
  the trainable actor's worker process; Tune retries the trial from its checkpoint.
* The restart tests drive ``StudySearcher`` directly (no Ray): a first searcher leaves
  configurations in every state, a second one over the same SQL must rebuild exactly
  the Optuna study the first held in memory and finish the study without repeating a
  configuration. (SQL is the only store of trial state, so there is no window between
  two stores' writes left to test.)
"""

# The tests that kill real processes take minutes and are marked slow (`make test-all`);
# the restart tests run by default.

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from sqlalchemy import func, select

from studies.engine.searcher import StudySearcher
from studies.storage.models import Metric
from studies.storage.repository import lease, metric_ingest, trial_lifecycle
from tests.db_fixtures import Database, quadratic_spec, wait_for
from tests.processes import Proc, alive, session_processes
from worker.contract import FINISHED_TRIAL_STATUSES
from worker.trainable import SEED_ROWS_KEY

MAGMA_BENCH = Path(sys.executable).parent / "magma-bench"


class DriverProcess:
    """``magma-bench driver --once`` in its own session, with its own local Ray."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.ray_tmpdir = tempfile.mkdtemp(prefix="mbrt", dir="/tmp")  # short: socket paths
        self.log = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in cleanup
        self.popen = subprocess.Popen(
            [str(MAGMA_BENCH), "driver", "--once", "--poll", "0.5"],
            env={**env, "RAY_TMPDIR": self.ray_tmpdir},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.raylets: list[Proc] = []

    def processes(self) -> list[Proc]:
        return session_processes(self.pid, self.ray_tmpdir)

    def kill(self) -> list[Proc]:
        """SIGKILL the driver's process group, then every process left of its session
        (Ray workers have process groups of their own), by pid. Returns what it saw."""
        seen = self.processes()
        self.raylets = [p for p in seen if p.command.split(" ")[0].endswith("/raylet")]
        os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        self.reap()
        return seen

    def reap(self, grace: float = 15.0) -> list[Proc]:
        """Wait for the driver's processes to go; SIGKILL, by pid, any that stay.
        Returns those that had to be killed."""
        deadline = time.monotonic() + grace
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = self.processes()
        if leftovers:
            print(f"killing {len(leftovers)} leftover processes by pid: {leftovers}")
        for proc in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        if leftovers:
            wait_for(lambda: not self.processes(), timeout=15, what="killed Ray processes to exit")
        return leftovers

    def tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def cleanup(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)
        self.reap(grace=5)
        self._log.close()
        shutil.rmtree(self.ray_tmpdir, ignore_errors=True)


# --- a driver killed mid-study -----------------------------------------------------------------

CRASH_LRS = [0.1, 0.07, 0.05, 0.03, 0.02, 0.01]
CRASH_STEPS = 300
CRASH_EVAL = 10


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [1, 3], ids=["one-seed", "batch-of-3"])
def test_killed_driver_is_replaced_without_losing_or_repeating_work(
    database_url: str, tmp_path: Path, magma_cache_dir: Path, seeds: int
) -> None:
    """``batch-of-3``: each configuration's three seeds are one batch (one Ray task, one
    checkpoint): a batch killed mid-run resumes whole, every seed from that checkpoint."""
    db = Database(database_url)
    spec = quadratic_spec(
        name="crash",
        workload={"steps": CRASH_STEPS, "eval_interval": CRASH_EVAL},
        search={"lr": CRASH_LRS},
        fixed={"threads": 1, "variant": "dense"},
        seeds=seeds,
    )
    study_id = db.create_study(spec)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DATABASE_URL")}
    env.update(
        MAGMA_DATABASE_URL=database_url,
        MAGMA_STORAGE=str(tmp_path / "ray"),
        MAGMA_CACHE_DIR=str(magma_cache_dir),
        MAGMA_DRIVER_STALE_SECONDS="3",
        PYTHONUNBUFFERED="1",
    )
    drivers: list[DriverProcess] = []
    try:
        first = DriverProcess(env, tmp_path / "driver-1.log")
        drivers.append(first)

        def ready_to_kill() -> bool:
            trials = db.trials(study_id)
            if first.popen.poll() is not None or db.study(study_id).status == "complete":
                pytest.fail(f"the study ended before the kill:\n{first.tail()}")
            finished = [t for t in trials if t.status in FINISHED_TRIAL_STATUSES]
            resumable = [
                t for t in trials if t.status == "running" and (t.last_step or 0) >= 2 * CRASH_EVAL
            ]
            return bool(finished and resumable)

        wait_for(ready_to_kill, timeout=240, interval=0.1, what="a finished and a running trial")
        seen = first.kill()
        print(f"killed driver {first.pid}: {len(seen)} processes, raylets {first.raylets}")
        assert first.raylets, f"no raylet among the first driver's processes: {seen}"
        assert not any(alive(p) for p in first.raylets)
        assert not first.processes()

        # The state the dead driver left behind.
        before = {t.id: t for t in db.trials(study_id)}
        finished_before = {
            t.id: (t.number, t.status, t.objective, t.last_step, t.finished_at)
            for t in before.values()
            if t.status in FINISHED_TRIAL_STATUSES
        }
        running_before = {t.id: t for t in before.values() if t.status == "running"}
        with db.sessions() as session:
            last_metric_before = session.scalar(select(func.max(Metric.id)))
        assert finished_before and running_before
        study = db.study(study_id)
        assert study.status == "running"

        # The claim goes stale after 3 s; a new driver takes the study over.
        time.sleep(3.5)
        second = DriverProcess(env, tmp_path / "driver-2.log")
        drivers.append(second)
        second.popen.wait(timeout=300)
        assert second.popen.returncode == 0, second.tail()
        assert second.reap() == [], "Ray processes outlived the second driver's exit"
    finally:
        for driver in drivers:
            driver.cleanup()

    study = db.study(study_id)
    trials = db.trials(study_id)
    assert study.status == "complete", (
        study.status,
        study.error,
        [(t.number, t.status, t.attempts, t.last_step, t.error) for t in trials],
        drivers[-1].tail(),
    )
    assert study.claimed_by is None

    # Nothing lost, nothing repeated, no configuration number skipped.
    assert len(trials) == len(CRASH_LRS) * seeds == spec.runs
    assert [t.number for t in trials] == list(range(len(CRASH_LRS) * seeds))
    assert sorted(t.configuration for t in trials) == [
        c for c in range(len(CRASH_LRS)) for _ in range(seeds)
    ]
    assert [t.params for t in trials] == [p for p in spec.grid_points() for _ in range(seeds)]
    assert [t.seed_index for t in trials] == list(range(seeds)) * len(CRASH_LRS)
    assert {t.status for t in trials} == {"complete"}
    assert all(t.last_step == CRASH_STEPS for t in trials)

    # Finished trials kept their ids and results.
    after = {t.id: t for t in trials}
    for trial_id, kept in finished_before.items():
        trial = after[trial_id]
        assert (trial.number, trial.status, trial.objective, trial.last_step) == kept[:4]
        assert trial.finished_at == kept[4]
        assert trial.attempts == 1

    # Trials that were running resumed from their checkpoints.
    for trial_id, was in running_before.items():
        trial = after[trial_id]
        assert trial.attempts == was.attempts + 1
        rows = db.metrics(trial_id)
        old = [m.step for m in rows if m.id <= last_metric_before]
        new = [m.step for m in rows if m.id > last_metric_before]
        assert old and new, (old, new)
        print(f"trial {trial.number}: steps before the kill {old[-3:]}, after {new[:3]}")
        assert old[0] == CRASH_EVAL and new[-1] == CRASH_STEPS
        if was.checkpoint_path:
            # resumed from the checkpoint, not restarted from step 0 (rows reported
            # after it but still in the recorder's buffer at the kill are lost: see
            # test_a_recorded_checkpoint_never_runs_ahead_of_the_metric_rows)
            assert new[0] > CRASH_EVAL, (old, new)
            assert new[0] >= old[-1], (old, new)
    resumed = [t for t in running_before if after[t].attempts >= 2]
    assert resumed
    # A batch's seeds change status together and share its checkpoint: the dead driver
    # left whole batches running, and each resumed whole.
    running_configurations = {t.configuration for t in running_before.values()}
    for configuration in running_configurations:
        batch = [t for t in before.values() if t.configuration == configuration]
        assert len(batch) == seeds
        assert {t.status for t in batch} == {"running"}
        assert len({t.checkpoint_path for t in batch}) == 1
        assert len({after[t.id].attempts for t in batch}) == 1

    # The Optuna study a driver rebuilds from SQL: one complete trial per configuration.
    rebuilt = StudySearcher(study_id, spec, db.sessions).optuna.get_trials(deepcopy=False)
    assert [(t.number, t.state, t.params) for t in rebuilt] == [
        (t.configuration, TrialState.COMPLETE, t.params) for t in trials[::seeds]
    ]
    means = [
        sum(t.objective for t in trials[c * seeds : (c + 1) * seeds]) / seeds
        for c in range(len(CRASH_LRS))
    ]
    assert [t.value for t in rebuilt] == pytest.approx(means)
    db.dispose()


# --- a trial process killed mid-trial ----------------------------------------------------------


def trainable_actor_pids() -> list[int]:
    """Pids of live Tune trainable actors, from the GCS actor table.

    (``ray.util.state.list_actors`` needs the dashboard, which the test Ray runs without;
    the GCS table has the same pid.)"""
    import ray._private.state as ray_state

    return [
        info["Pid"]
        for info in ray_state.actors().values()
        if info["ActorClassName"].endswith("ImplicitFunc") and info["State"] == "ALIVE"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [1, 3], ids=["one-seed", "batch-of-3"])
def test_killed_trial_process_is_retried_from_its_checkpoint(
    db: Database, tmp_path: Path, ray_local: None, seeds: int
) -> None:
    """``batch-of-3``: the killed process trains three seeds; Tune retries the batch from
    its checkpoint and every seed resumes from it."""
    from studies.engine.driver import Driver

    steps, interval = 600, 10
    spec = quadratic_spec(
        name="trial-kill",
        workload={"steps": steps, "eval_interval": interval},
        search={"lr": [0.03]},
        fixed={"threads": 1, "variant": "dense"},
        max_concurrent=1,
        seeds=seeds,
    )
    study_id = db.create_study(spec)
    driver = Driver(url=db.url, storage_path=tmp_path / "ray", poll_seconds=0.5)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            driver.run(once=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:

        def checkpointed() -> Any:
            trials = db.trials(study_id)
            if trials and trials[0].status != "running" and trials[0].finished_at:
                pytest.fail(f"the trial finished before the kill: {trials[0].status}")
            return trials and trials[0].checkpoint_path and (trials[0].last_step or 0) >= 30

        wait_for(checkpointed, timeout=120, interval=0.1, what="a checkpointed running trial")
        pids = trainable_actor_pids()
        assert len(pids) == 1, pids  # one process for the configuration's seeds
        killed_at_step = min(t.last_step or 0 for t in db.trials(study_id))
        os.kill(pids[0], signal.SIGKILL)
        thread.join(timeout=180)
        assert not thread.is_alive(), "the driver did not finish after the kill"
    finally:
        thread.join(timeout=60)
        driver.sessions.kw["bind"].dispose()
    assert not failure, failure

    assert db.study(study_id).status == "complete", db.study(study_id).error
    trials = db.trials(study_id)
    assert len(trials) == seeds
    assert len({t.checkpoint_path for t in trials}) == 1
    for trial in trials:
        assert (trial.status, trial.attempts, trial.last_step) == ("complete", 2, steps)
        assert trial.error is None
        reported = [m.step for m in db.metrics(trial.id)]
        assert reported[0] == interval and reported[-1] == steps
        assert reported.count(interval) == 1, "the retry started over instead of resuming"
        assert set(reported) == set(range(interval, steps + 1, interval))
        # At most the reports after the last persisted checkpoint are repeated.
        repeated = [s for s in set(reported) if reported.count(s) > 1]
        assert all(s >= killed_at_step - 2 * interval for s in repeated), (
            killed_at_step,
            repeated,
        )
        assert reported == sorted(reported)


@pytest.mark.slow
def test_a_trial_requeued_with_its_final_checkpoint_completes(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    """A driver killed after Tune registered a trial's *last* checkpoint (its final
    report) but before the trial's completion reached SQL leaves the trial ``running``
    with ``checkpoint_path`` at its last step. The next driver requeues it and hands
    the checkpoint back; ``train()`` resumes at ``step == steps``, runs no step and
    returns its saved final metrics, but the trainable never reports them, so Tune
    gets a result without ``objective``, raises, and the whole study fails (seen in the
    driver-kill test on a SQLite run). This builds that state directly: the
    configuration through the searcher, the checkpoint by training the trial's own config
    to the end in this process (a batch of its one seed, as the trainable runs it)."""
    from studies.engine.driver import Driver
    from worker.config import TrialConfig
    from worker.seed_batch import train_seeds

    spec = quadratic_spec(
        name="final-checkpoint",
        search={"lr": [0.1]},
        fixed={"threads": 1, "variant": "dense"},
        max_concurrent=1,
    )
    study_id = db.create_study(spec)
    with db.transaction() as session:
        lease.claim_study(session, "dead-driver", timedelta(seconds=60))
    config = StudySearcher(study_id, spec, db.sessions).suggest("dead-0")
    assert isinstance(config, dict)
    (trial_id,) = config["_meta"]["trial_ids"]
    (trial,) = db.trials(study_id)
    checkpoint = tmp_path / "dead-driver" / "checkpoint_000003"
    reports: list[dict[str, Any]] = []

    def report(rows: list[dict[str, Any] | None], save: Any) -> None:
        reports.append(rows[0])
        save(checkpoint)

    (final,) = train_seeds([TrialConfig(**trial.config)], report=report)
    assert final["status"] == "complete" and final["step"] == spec.workload.steps
    with db.transaction() as session:
        trial_lifecycle.mark_trial_running(session, trial_id)
        metric_ingest.add_metrics(session, [(trial_id, m) for m in reports[:-1]])  # last one lost
        trial_lifecycle.record_checkpoint(session, trial_id, str(checkpoint))

    time.sleep(1.2)
    driver = Driver(url=db.url, storage_path=tmp_path / "ray", stale_after=1.0)
    try:
        driver.run(once=True)
    finally:
        driver.sessions.kw["bind"].dispose()
    study = db.study(study_id)
    (trial,) = db.trials(study_id)
    cause = [line[:160] for line in (study.error or "").splitlines() if "Error:" in line]
    assert (study.status, trial.status) == ("complete", "complete"), cause[-1:]
    assert trial.objective == pytest.approx(final["objective"])
    assert trial.last_step == spec.workload.steps


# --- a driver restarted mid-study ----------------------------------------------------------------

RESTART_SPECS: dict[str, dict[str, Any]] = {
    "grid": {"search": {"lr": [0.1, 0.07, 0.05, 0.03, 0.02, 0.01, 0.005, 0.003]}},
    "tpe": {"sampler": "tpe", "trials": 14, "search": {"lr": {"low": 1e-4, "high": 0.3}}},
    "random": {"sampler": "random", "trials": 10, "search": {"lr": {"low": 1e-4, "high": 0.3}}},
    "qmc": {"sampler": "qmc", "trials": 10, "search": {"lr": {"low": 1e-4, "high": 0.3}}},
}
#: what the first driver leaves of each of its six configurations (two seeds each), and
#: the Optuna trial it must have (and a rebuilt study must have) for it
FIRST_DRIVER = [
    (("complete", 1.0), ("complete", 3.0)),
    (("diverged", 1e9), ("complete", 2.0)),
    (("pruned", 5.0), ("complete", 2.0)),
    (("failed", None), ("complete", 2.0)),
    (("complete", 0.5), ("running", None)),
    (("running", None), ("queued", None)),
]
FIRST_DRIVER_OPTUNA = [
    (TrialState.COMPLETE, 2.0),
    (TrialState.COMPLETE, math.inf),  # diverged: the worst value
    (TrialState.PRUNED, None),
    (TrialState.FAIL, None),
    (TrialState.RUNNING, None),
    (TrialState.RUNNING, None),
]


def _finish(
    db: Database, searcher: StudySearcher, tune_id: str, status: str, objective: float | None
) -> None:
    """What the recorder and Tune report for a chunk whose seeds ended with ``status``:
    each seed's last row (a trial ASHA stops last reported "running"; a failed one may
    have reported nothing), then the chunk's completion."""
    if status != "failed":
        reported = "running" if status == "pruned" else status
        row = {"status": reported, "objective": objective, "step": 10}
        with db.transaction() as session:
            metric_ingest.add_metrics(session, [(i, row) for i in searcher.handed_out[tune_id]])
    searcher.on_trial_complete(tune_id, error=status == "failed")


def _run_to_the_end(db: Database, searcher: StudySearcher) -> None:
    """What Tune does with one slot: suggest, run, complete, until FINISHED."""
    for n in range(100):
        config = searcher.suggest(f"after-{n}")
        if config == StudySearcher.FINISHED or config is None:
            return
        _finish(db, searcher, f"after-{n}", "complete", 1.0 + n / 100)
    pytest.fail("the searcher never finished")


def _optuna_state(searcher: StudySearcher) -> list[tuple[int, TrialState, dict, float | None]]:
    return [(t.number, t.state, t.params, t.value) for t in searcher.optuna.get_trials()]


@pytest.mark.parametrize("sampler", list(RESTART_SPECS))
def test_a_restarted_driver_rebuilds_the_optuna_study_from_sql_and_carries_on(
    db: Database, sampler: str
) -> None:
    """The first driver creates six configurations and leaves them complete, diverged,
    pruned, failed, half finished and not started; then it dies. The next driver's
    searcher, built over the same SQL, must hold the Optuna study the first one held in
    memory (numbers, states, params, values: the configurations' scores by
    ``studies.best``), then finish the study with every configuration number used once
    and no configuration proposed twice (a sampler reseeded from the spec's seed would
    propose its first random points again; QMC would restart its sequence)."""
    spec = quadratic_spec(
        name=f"restart-{sampler}", seeds=2, seed_batch=1, **RESTART_SPECS[sampler]
    )
    study_id = db.create_study(spec)
    with db.transaction() as session:
        lease.claim_study(session, "driver-1", timedelta(seconds=60))
    first = StudySearcher(study_id, spec, db.sessions)
    handed = [f"first-{n}" for n in range(2 * len(FIRST_DRIVER))]
    for tune_id in handed:
        assert isinstance(first.suggest(tune_id), dict)
    sql_ids = [sql_id for tune_id in handed for sql_id in first.handed_out[tune_id]]
    for (tune_id, sql_id), (status, objective) in zip(
        zip(handed, sql_ids, strict=True), [s for pair in FIRST_DRIVER for s in pair], strict=True
    ):
        if status == "running":
            with db.transaction() as session:
                trial_lifecycle.mark_trial_running(session, sql_id)
        elif status != "queued":
            _finish(db, first, tune_id, status, objective)
    held = _optuna_state(first)
    del first  # SIGKILL

    trials = db.trials(study_id)
    assert [(t.configuration, t.seed_index) for t in trials] == [
        (c, s) for c in range(len(FIRST_DRIVER)) for s in (0, 1)
    ]
    params = [trials[2 * c].params for c in range(len(FIRST_DRIVER))]
    expected = [(c, *outcome) for c, outcome in enumerate(FIRST_DRIVER_OPTUNA)]
    assert [(n, state, value) for n, state, _, value in held] == expected
    assert [p for _, _, p, _ in held] == params

    # The next driver: run_study requeues, a new searcher rebuilds and carries on.
    with db.transaction() as session:
        trial_lifecycle.requeue_unfinished(session, study_id)
    second = StudySearcher(study_id, spec, db.sessions)
    assert _optuna_state(second) == held
    _run_to_the_end(db, second)

    trials = db.trials(study_id)
    configurations = sorted({t.configuration for t in trials})
    assert configurations == list(range(spec.configurations))
    points = [next(t.params for t in trials if t.configuration == c) for c in configurations]
    assert points[: len(params)] == params
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points), points
    if sampler == "grid":
        assert points == spec.grid_points()
    assert [t.seed_index for t in trials] == [0, 1] * spec.configurations
    assert all(t.status in FINISHED_TRIAL_STATUSES for t in trials)
    told = _optuna_state(second)
    assert all(state.is_finished() for _, state, _, _ in told)
    assert told == _optuna_state(StudySearcher(study_id, spec, db.sessions))


class _FakeTrial:
    def __init__(self, *trial_ids: int) -> None:
        self.config = {"_meta": {"trial_ids": list(trial_ids)}}


def _result(*rows: dict[str, Any] | None) -> dict[str, Any]:
    """A chunk's Tune result as ``worker.trainable`` reports it: each seed's row."""
    return {SEED_ROWS_KEY: list(rows)}


class _FakeCheckpoint:
    def __init__(self, path: str) -> None:
        self.path = path


def test_a_recorded_checkpoint_never_runs_ahead_of_the_metric_rows(db: Database) -> None:
    """Tune calls ``on_trial_result`` (the recorder buffers the row) and then
    ``on_checkpoint`` (the recorder writes the checkpoint path at once). A driver killed
    before the next flush leaves SQL with a checkpoint at step N and metric rows only up
    to an earlier step; the resumed trial starts after N, so rows are lost for good (seen
    in the driver-kill test: a curve ..., 270, 280, 300). The checkpoint path should be
    written with (after) the rows it covers."""
    from studies.engine.recorder import SQLRecorder

    spec = quadratic_spec(name="recorder", search={"lr": [0.1]})
    study_id = db.create_study(spec)
    with db.transaction() as session:
        (trial,) = trial_lifecycle.create_configuration(session, study_id, 0, {"lr": 0.1}, [{}])
        trial_lifecycle.mark_trial_running(session, trial.id)
    recorder = SQLRecorder(db.sessions, flush_rows=200, flush_seconds=3600)
    fake = _FakeTrial(trial.id)
    for step in (10, 20):
        result = _result({"step": step, "objective": 1.0 / step, "status": "running"})
        recorder.on_trial_result(0, [], fake, result)
        recorder.on_checkpoint(0, [], fake, _FakeCheckpoint(f"/ckpt/{step}"))
    del recorder  # SIGKILL: the buffer is gone

    (trial,) = db.trials(study_id)
    assert trial.checkpoint_path == "/ckpt/20"
    reported = [m.step for m in db.metrics(trial.id)]
    assert reported == [10, 20], f"checkpoint at step 20 but metric rows {reported}"


def test_a_driver_that_lost_its_claim_stops_and_writes_nothing_more(db: Database) -> None:
    """A driver that stalled past the stale limit was taken over: the new owner requeued
    its trials and resumes them. Once the heartbeat sets ``claim_lost``, the old driver's
    searcher hands out nothing and records no result, its recorder writes no metric row,
    running mark or checkpoint (which would point the new owner's resume at the old run),
    and its stopper ends the experiment without calling it a cancel."""
    from studies.engine.recorder import SQLRecorder
    from studies.engine.runner import CancelStopper

    spec = quadratic_spec(name="lost-claim", search={"lr": [0.1, 0.03]})
    study_id = db.create_study(spec)
    with db.transaction() as session:
        lease.claim_study(session, "driver-a", timedelta(seconds=60))
    claim_lost = threading.Event()
    searcher = StudySearcher(study_id, spec, db.sessions, claim_lost=claim_lost)
    recorder = SQLRecorder(db.sessions, claim_lost, flush_rows=1)
    stopper = CancelStopper(searcher, threading.Event())
    config = searcher.suggest("tune-0")
    assert isinstance(config, dict)
    fake = _FakeTrial(*config["_meta"]["trial_ids"])
    recorder.on_trial_start(0, [], fake)
    recorder.on_trial_result(
        0, [], fake, _result({"step": 10, "objective": 2.0, "status": "running"})
    )
    assert not stopper.stop_all()
    before = [(t.status, t.checkpoint_path, t.last_step) for t in db.trials(study_id)]
    assert before[0] == ("running", None, 10)

    claim_lost.set()  # the heartbeat found another driver's name on the study
    assert stopper.stop_all() and not searcher.cancelled
    recorder.on_trial_start(0, [], fake)
    recorder.on_trial_result(
        0, [], fake, _result({"step": 20, "objective": 1.0, "status": "running"})
    )
    recorder.on_checkpoint(0, [], fake, _FakeCheckpoint("/ckpt/20"))
    recorder.flush()
    searcher.on_trial_complete(
        "tune-0", _result({"step": 20, "objective": 1.0, "status": "complete"})
    )
    assert searcher.suggest("tune-1") == StudySearcher.FINISHED

    assert [(t.status, t.checkpoint_path, t.last_step) for t in db.trials(study_id)] == before
    assert [m.step for m in db.metrics(fake.config["_meta"]["trial_ids"][0])] == [10]
    assert [t.state for t in searcher.optuna.get_trials()] == [TrialState.RUNNING]
