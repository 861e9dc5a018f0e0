"""Crashes: a driver killed mid-study, a trial process killed mid-trial, and the narrow
windows in which a dying driver leaves SQL and Optuna's storage disagreeing.

* The driver-kill test runs real ``magma-bench driver`` processes, each with its own
  local Ray (own ``RAY_TMPDIR``): the first is SIGKILLed with its process group, every
  process of its session is then accounted for by pid, and a second driver finishes
  the study from the database.
* The trial-kill test runs the driver in this process on the module's Ray and SIGKILLs
  the trainable actor's worker process; Tune retries the trial from its checkpoint.
* The crash-window tests drive ``StudySearcher`` directly (no Ray): they leave exactly
  the state a SIGKILL between two of its storage writes would leave, then let a new
  searcher finish the study.
"""

# The tests that kill real processes take minutes and are marked slow (`make test-all`);
# the crash-window tests run by default.

from __future__ import annotations

import contextlib
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

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import func, select

from studies.engine.searcher import StudySearcher
from studies.storage import repository as repo
from studies.storage.models import FINISHED_TRIAL_STATUSES, Metric

pytest.register_assert_rewrite("tests.db_fixtures")
from tests.db_fixtures import Database, quadratic_spec, wait_for  # noqa: E402
from tests.processes import Proc, alive, session_processes  # noqa: E402

pytest_plugins = ("tests.db_fixtures",)

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
def test_killed_driver_is_replaced_without_losing_or_repeating_work(
    database_url: str, tmp_path: Path, magma_cache_dir: Path
) -> None:
    db = Database(database_url)
    spec = quadratic_spec(
        name="crash",
        workload={"steps": CRASH_STEPS, "eval_interval": CRASH_EVAL},
        search={"lr": CRASH_LRS},
        fixed={"threads": 1, "variant": "dense"},
    )
    study_id = db.create_study(spec)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        DATABASE_URL=database_url,
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

    # Nothing lost, nothing repeated. (Configuration numbers are Optuna trial numbers and
    # may skip one: a driver killed between Optuna's ask and the SQL commit leaves an
    # orphan Optuna trial; see test_a_driver_dying_between_storage_writes_...)
    assert len(trials) == len(CRASH_LRS) == spec.configurations
    assert [t.number for t in trials] == list(range(len(CRASH_LRS)))
    assert len({t.configuration for t in trials}) == len(CRASH_LRS)
    assert [t.params for t in trials] == spec.grid_points()
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

    # Optuna's storage agrees: one finished trial per configuration.
    storage = optuna.storages.RDBStorage(database_url)
    try:
        optuna_trials = optuna.load_study(
            study_name=study.optuna_study_name, storage=storage
        ).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    for trial in trials:
        optuna_trial = optuna_trials[trial.configuration]
        assert optuna_trial.state == TrialState.COMPLETE
        assert optuna_trial.params == trial.params
        assert optuna_trial.value == pytest.approx(trial.objective)
    orphans = [t.number for t in optuna_trials if not t.state.is_finished()]
    if orphans:
        print(f"Optuna trials left unfinished by the kill: {orphans}")
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
def test_killed_trial_process_is_retried_from_its_checkpoint(
    db: Database, tmp_path: Path, ray_local: None
) -> None:
    from studies.engine.driver import Driver

    steps, interval = 600, 10
    spec = quadratic_spec(
        name="trial-kill",
        workload={"steps": steps, "eval_interval": interval},
        search={"lr": [0.03]},
        fixed={"threads": 1, "variant": "dense"},
        max_concurrent=1,
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
        assert len(pids) == 1, pids
        killed_at_step = db.trials(study_id)[0].last_step
        os.kill(pids[0], signal.SIGKILL)
        thread.join(timeout=180)
        assert not thread.is_alive(), "the driver did not finish after the kill"
    finally:
        thread.join(timeout=60)
        driver.sessions.kw["bind"].dispose()
        driver.optuna_storage.engine.dispose()
    assert not failure, failure

    assert db.study(study_id).status == "complete", db.study(study_id).error
    (trial,) = db.trials(study_id)
    assert (trial.status, trial.attempts, trial.last_step) == ("complete", 2, steps)
    assert trial.error is None
    reported = [m.step for m in db.metrics(trial.id)]
    assert reported[0] == interval and reported[-1] == steps
    assert reported.count(interval) == 1, "the retry started over instead of resuming"
    assert set(reported) == set(range(interval, steps + 1, interval))
    # At most the reports after the last persisted checkpoint are repeated.
    repeated = [s for s in set(reported) if reported.count(s) > 1]
    assert all(s >= killed_at_step - 2 * interval for s in repeated), (killed_at_step, repeated)
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
    configuration through the searcher (so Optuna knows it), the checkpoint by
    training the trial's own config to the end in this process."""
    from studies.engine.driver import Driver
    from worker.config import TrialConfig
    from worker.trainer import train

    spec = quadratic_spec(
        name="final-checkpoint",
        search={"lr": [0.1]},
        fixed={"threads": 1, "variant": "dense"},
        max_concurrent=1,
    )
    study_id = db.create_study(spec)
    with db.transaction() as session:
        repo.claim_study(session, "dead-driver", timedelta(seconds=60))
    storage = optuna.storages.RDBStorage(db.url)
    try:
        name = db.study(study_id).optuna_study_name
        searcher = StudySearcher(study_id, spec, db.sessions, storage, name)
        config = searcher.suggest("dead-0")
        assert isinstance(config, dict)
    finally:
        storage.engine.dispose()
    trial_id = config["_meta"]["trial_id"]
    (trial,) = db.trials(study_id)
    checkpoint = tmp_path / "dead-driver" / "checkpoint_000003"
    reports: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], save: Any) -> None:
        reports.append(metrics)
        save(checkpoint)

    final = train(TrialConfig(**trial.config), report=report)
    assert final["status"] == "complete" and final["step"] == spec.workload.steps
    with db.transaction() as session:
        repo.mark_trial_running(session, trial_id)
        repo.add_metrics(session, [(trial_id, m) for m in reports[:-1]])  # last one lost
        repo.record_checkpoint(session, trial_id, str(checkpoint))

    time.sleep(1.2)
    driver = Driver(url=db.url, storage_path=tmp_path / "ray", stale_after=1.0)
    try:
        driver.run(once=True)
    finally:
        driver.sessions.kw["bind"].dispose()
        driver.optuna_storage.engine.dispose()
    study = db.study(study_id)
    (trial,) = db.trials(study_id)
    cause = [line[:160] for line in (study.error or "").splitlines() if "Error:" in line]
    assert (study.status, trial.status) == ("complete", "complete"), cause[-1:]
    assert trial.objective == pytest.approx(final["objective"])
    assert trial.last_step == spec.workload.steps


# --- the windows between the searcher's storage writes -------------------------------------------


GRID = [0.1, 0.03, 0.01]


def _complete(searcher: StudySearcher, tune_id: str, objective: float = 1.0) -> None:
    searcher.on_trial_complete(tune_id, {"status": "complete", "objective": objective, "step": 40})


def _run_to_the_end(searcher: StudySearcher) -> None:
    """What Tune does with one slot: suggest, run, complete, until FINISHED."""
    for n in range(50):
        config = searcher.suggest(f"after-{n}")
        if config == StudySearcher.FINISHED or config is None:
            return
        _complete(searcher, f"after-{n}")
    pytest.fail("the searcher never finished")


@pytest.mark.parametrize("window", ["after-enqueue", "after-ask", "after-sql-finish"])
def test_a_driver_dying_between_storage_writes_leaves_a_consistent_study(
    db: Database, window: str
) -> None:
    """A grid study where the first driver dies between two writes of the searcher:

    * ``after-enqueue``: Optuna has the next grid point enqueued (WAITING), SQL has no
      trial for it: ``enqueue_trial`` ran, ``ask`` did not;
    * ``after-ask``: Optuna has a RUNNING trial for the next point, SQL none:
      ``ask`` ran, the SQL transaction did not commit;
    * ``after-sql-finish``: SQL has the trial finished, Optuna still RUNNING:
      ``finish_trial`` committed, ``tell`` did not run.

    The next driver must still run every grid point exactly once and leave every
    Optuna trial finished and in step with SQL."""
    spec = quadratic_spec(name="windows", search={"lr": GRID}, max_concurrent=1)
    study_id = db.create_study(spec)
    with db.transaction() as session:
        repo.claim_study(session, "driver-1", timedelta(seconds=60))
    name = db.study(study_id).optuna_study_name
    storage = optuna.storages.RDBStorage(db.url)
    try:
        first = StudySearcher(study_id, spec, db.sessions, storage, name)
        assert first.suggest("first-0") is not None  # configuration 0, handed to Tune
        if window == "after-sql-finish":
            with db.transaction() as session:
                repo.finish_trial(session, first.handed_out["first-0"], "complete", 2.0, 40)
        else:
            _complete(first, "first-0", 2.0)
            first.optuna.enqueue_trial(spec.grid_points()[1])
            if window == "after-ask":
                first.optuna.ask(first.distributions)
        del first  # SIGKILL

        # The next driver: run_study requeues, a new searcher carries on.
        with db.transaction() as session:
            repo.requeue_unfinished(session, study_id)
        second = StudySearcher(study_id, spec, db.sessions, storage, name)
        _run_to_the_end(second)
        optuna_trials = second.optuna.get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()

    trials = db.trials(study_id)
    assert sorted(t.params["lr"] for t in trials) == sorted(GRID), [t.params for t in trials]
    assert {t.status for t in trials} == {"complete"}
    unfinished = [
        (t.number, t.state.name, t.params) for t in optuna_trials if not t.state.is_finished()
    ]
    assert unfinished == [], f"Optuna trials left unfinished: {unfinished}"
    for trial in trials:
        assert optuna_trials[trial.configuration].params == trial.params
        assert optuna_trials[trial.configuration].state == TrialState.COMPLETE


class _FakeTrial:
    def __init__(self, trial_id: int) -> None:
        self.config = {"_meta": {"trial_id": trial_id}}


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
        (trial,) = repo.create_configuration(session, study_id, 0, {"lr": 0.1}, [{}])
        repo.mark_trial_running(session, trial.id)
    recorder = SQLRecorder(db.sessions, flush_rows=200, flush_seconds=3600)
    fake = _FakeTrial(trial.id)
    for step in (10, 20):
        result = {"step": step, "objective": 1.0 / step, "status": "running"}
        recorder.on_trial_result(0, [], fake, result)
        recorder.on_checkpoint(0, [], fake, _FakeCheckpoint(f"/ckpt/{step}"))
    del recorder  # SIGKILL: the buffer is gone

    (trial,) = db.trials(study_id)
    assert trial.checkpoint_path == "/ckpt/20"
    reported = [m.step for m in db.metrics(trial.id)]
    assert reported == [10, 20], f"checkpoint at step 20 but metric rows {reported}"
