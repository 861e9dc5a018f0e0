"""The study database layer (``studies.storage``) on SQLite and on PostgreSQL.

Each test gets a fresh empty database of each kind (``database_url`` / ``db`` from
``tests/db_fixtures.py``); nothing here needs Ray.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from typing import Any

import optuna
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from studies.best import CONFIRM_STAGE, STAGE_KEY, best_configuration, is_confirmation
from studies.spec import StudySpec
from studies.storage.engine import MIGRATIONS, make_engine, migrate, session_factory, transaction
from studies.storage.models import Base, Event, Metric, Study, Trial
from studies.storage.repository import (
    best_sql,
    event_log,
    lease,
    metric_ingest,
    submissions,
    trial_lifecycle,
)
from tests.db_fixtures import Database, quadratic_spec

MAGMA_TABLES = {"magma_studies", "magma_trials", "magma_metrics", "magma_events"}
LONG = timedelta(seconds=60)


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def schema(engine) -> dict[str, Any]:
    """Tables, their columns and index names, and the recorded revision."""
    inspector = inspect(engine)
    tables = {
        name: (
            sorted(c["name"] for c in inspector.get_columns(name)),
            sorted(i["name"] for i in inspector.get_indexes(name)),
        )
        for name in inspector.get_table_names()
    }
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM magma_alembic_version")).all()
    return {"tables": tables, "versions": [v[0] for v in versions]}


def spec_data(name: str = "storage-test", **overrides: Any) -> dict[str, Any]:
    spec = quadratic_spec(name=name, search={"lr": [0.01, 0.1]}, seeds=2, **overrides)
    return spec.model_dump(mode="json")


def new_study(db: Database, name: str = "storage-test") -> int:
    with db.transaction() as session:
        return submissions.create_study(session, StudySpec.model_validate(spec_data(name))).id


def new_configuration(db: Database, study_id: int, configuration: int, seeds: int = 2) -> list[int]:
    configs = [{"lr": 0.1, "seed": s} for s in range(seeds)]
    with db.transaction() as session:
        trials = trial_lifecycle.create_configuration(
            session, study_id, configuration, {"lr": 0.1}, configs
        )
        return [t.id for t in trials]


def events(db: Database, study_id: int, after: int = 0) -> list[Event]:
    with db.sessions() as session:
        return list(
            session.scalars(
                select(Event).where(Event.study_id == study_id, Event.id > after).order_by(Event.id)
            )
        )


# --- migrations ------------------------------------------------------------------------


def test_migrations_apply_on_an_empty_database_and_are_idempotent(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert inspect(engine).get_table_names() == []
        migrate(engine)
        first = schema(engine)
        assert MAGMA_TABLES | {"magma_alembic_version"} == set(first["tables"])
        assert first["versions"] == [head_revision()]
        trial_indexes = first["tables"]["magma_trials"][1]
        for index in ("ix_trials_study_number", "ix_trials_study_objective"):
            assert index in trial_indexes
        assert "ix_metrics_trial_step" in first["tables"]["magma_metrics"][1]
        assert "ix_events_study_id" in first["tables"]["magma_events"][1]

        migrate(engine)  # a second driver / API start
        migrate(engine)
        assert schema(engine) == first

        # The migration creates exactly what the models declare.
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_name": lambda name, type_, _parent: (
                        type_ != "table" or name.startswith("magma_")
                    ),
                    "version_table": "magma_alembic_version",
                },
            )
            diffs = compare_metadata(context, Base.metadata)
        assert diffs == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("someone_else", [False, True], ids=["ours-only", "shared"])
def test_migrations_drop_optunas_tables_unless_someone_else_keeps_studies_there(
    database_url: str, someone_else: bool
) -> None:
    """Up to 0003 the driver kept a copy of every study's trial state in Optuna's RDB
    storage, beside our tables. 0004 drops Optuna's tables (and its alembic version
    table, never ours) when every Optuna study in them is ours, and leaves them, still
    working, to a database where someone also keeps their own Optuna studies."""
    storage = optuna.storages.RDBStorage(database_url)
    optuna.create_study(storage=storage, study_name="magma-bench-study-1")
    if someone_else:
        theirs = optuna.create_study(storage=storage, study_name="theirs")
        theirs.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()
    engine = make_engine(database_url)
    try:
        migrate(engine)
        tables = set(inspect(engine).get_table_names())
        assert schema(engine)["versions"] == [head_revision()]
        if not someone_else:
            assert tables == MAGMA_TABLES | {"magma_alembic_version"}
            return
        assert {"studies", "trials", "version_info", "alembic_version"} <= tables
        storage = optuna.storages.RDBStorage(database_url)
        try:
            assert len(optuna.load_study(study_name="theirs", storage=storage).trials) == 2
        finally:
            storage.engine.dispose()
    finally:
        engine.dispose()


# --- studies: create, claim, heartbeat, cancel --------------------------------------------


def test_create_study(db: Database) -> None:
    data = spec_data("first")
    with db.transaction() as session:
        study = submissions.create_study(
            session, StudySpec.model_validate(data), idempotency_key="key-1"
        )
        study_id = study.id
    study = db.study(study_id)
    assert study.status == "queued"
    assert study.name == "first"
    assert study.spec == data
    assert study.claimed_by is None and study.started_at is None
    assert [(e.kind, e.payload) for e in events(db, study_id)] == [("study", {"status": "queued"})]


def test_claim_study_takes_queued_studies_in_order_and_only_once(db: Database) -> None:
    first, second = new_study(db, "a"), new_study(db, "b")
    with db.transaction() as session:
        claimed = lease.claim_study(session, "driver-a", LONG)
        assert claimed is not None
        assert claimed.id == first
    study = db.study(first)
    assert study.status == "running"
    assert study.claimed_by == "driver-a"
    assert study.started_at is not None and study.heartbeat_at is not None

    with db.transaction() as session:
        claimed = lease.claim_study(session, "driver-b", LONG)
        assert claimed is not None and claimed.id == second
    with db.transaction() as session:
        assert lease.claim_study(session, "driver-c", LONG) is None
    assert db.study(first).claimed_by == "driver-a"
    assert events(db, first)[-1].payload == {"status": "running", "resumed": False}


def test_a_stale_claim_is_taken_over(db: Database) -> None:
    study_id = new_study(db)
    with db.transaction() as session:
        assert lease.claim_study(session, "driver-a", LONG) is not None
    started = db.study(study_id).started_at

    # A live heartbeat protects the claim...
    with db.transaction() as session:
        assert lease.heartbeat(session, study_id, "driver-a") == "running"
    with db.transaction() as session:
        assert lease.claim_study(session, "driver-b", LONG) is None

    # ...until it is older than stale_after.
    time.sleep(0.3)
    stale = timedelta(milliseconds=100)
    with db.transaction() as session:
        claimed = lease.claim_study(session, "driver-b", stale)
        assert claimed is not None and claimed.id == study_id
    study = db.study(study_id)
    assert study.status == "running"
    assert study.claimed_by == "driver-b"
    assert study.started_at == started
    assert events(db, study_id)[-1].payload == {"status": "running", "resumed": True}

    # The old owner's heartbeat no longer refreshes the claim, and tells it so (None).
    before = db.study(study_id).heartbeat_at
    time.sleep(0.05)
    with db.transaction() as session:
        assert lease.heartbeat(session, study_id, "driver-a") is None
    assert db.study(study_id).heartbeat_at == before
    with db.transaction() as session:
        assert lease.heartbeat(session, study_id, "driver-b") == "running"
    assert db.study(study_id).heartbeat_at > before


def test_only_the_driver_holding_the_claim_can_finish_the_study(db: Database) -> None:
    study_id = new_study(db)
    with db.transaction() as session:
        lease.claim_study(session, "driver-a", LONG)
    time.sleep(0.3)
    with db.transaction() as session:
        assert lease.claim_study(session, "driver-b", timedelta(milliseconds=100)) is not None

    # driver-a's claim went stale and was taken over: its finish is refused and changes nothing.
    with db.transaction() as session:
        assert lease.finish_study(session, study_id, "failed", "stale", owner="driver-a") is False
    study = db.study(study_id)
    assert (study.status, study.claimed_by, study.error) == ("running", "driver-b", None)
    assert study.finished_at is None
    assert events(db, study_id)[-1].payload == {"status": "running", "resumed": True}

    with db.transaction() as session:
        assert lease.finish_study(session, study_id, "complete", owner="driver-b") is True
    study = db.study(study_id)
    assert (study.status, study.claimed_by) == ("complete", None)
    assert study.finished_at is not None
    assert events(db, study_id)[-1].payload == {"status": "complete", "error": None}


def test_cancelling_a_queued_study_cancels_it_and_its_trials(db: Database) -> None:
    study_id = new_study(db)
    trial_ids = new_configuration(db, study_id, 0)
    with db.transaction() as session:
        study = submissions.request_cancel(session, study_id)
        assert study is not None
    study = db.study(study_id)
    assert study.status == "cancelled"
    assert study.finished_at is not None
    trials = db.trials(study_id)
    assert [t.id for t in trials] == trial_ids
    assert {t.status for t in trials} == {"cancelled"}
    assert all(t.finished_at is not None for t in trials)
    assert events(db, study_id)[-1].payload["status"] == "cancelled"
    with db.transaction() as session:
        assert lease.claim_study(session, "driver", timedelta(milliseconds=1)) is None


def test_cancelling_a_running_study_signals_its_driver(db: Database) -> None:
    study_id = new_study(db)
    with db.transaction() as session:
        lease.claim_study(session, "driver", LONG)
    with db.transaction() as session:
        submissions.request_cancel(session, study_id)
    assert db.study(study_id).status == "cancelling"
    with db.transaction() as session:
        assert lease.heartbeat(session, study_id, "driver") == "cancelling"
    with db.transaction() as session:
        lease.finish_study(session, study_id, "cancelled")
    # Cancelling a finished study changes nothing; an unknown one is None.
    with db.transaction() as session:
        submissions.request_cancel(session, study_id)
        assert submissions.request_cancel(session, study_id + 1000) is None
    study = db.study(study_id)
    assert study.status == "cancelled"
    assert study.claimed_by is None
    assert [e.payload["status"] for e in events(db, study_id)] == [
        "queued",
        "running",
        "cancelling",
        "cancelled",
    ]


# --- trials ---------------------------------------------------------------------------


def test_create_configuration_numbers_trials_per_study(db: Database) -> None:
    study_id, other = new_study(db, "a"), new_study(db, "b")
    first = new_configuration(db, study_id, 0, seeds=2)
    second = new_configuration(db, study_id, 1, seeds=2)
    elsewhere = new_configuration(db, other, 0, seeds=3)
    trials = db.trials(study_id)
    assert [t.id for t in trials] == first + second
    assert [(t.number, t.configuration, t.seed_index) for t in trials] == [
        (0, 0, 0),
        (1, 0, 1),
        (2, 1, 0),
        (3, 1, 1),
    ]
    assert {(t.status, t.attempts, t.last_step, t.objective) for t in trials} == {
        ("queued", 0, None, None)
    }
    assert [t.config["seed"] for t in trials] == [0, 1, 0, 1]
    assert [t.number for t in db.trials(other)] == [0, 1, 2]
    assert len(elsewhere) == 3
    with db.sessions() as session:
        assert trial_lifecycle.configurations_created(session, study_id) == 2
        assert trial_lifecycle.configurations_created(session, other) == 1
        assert trial_lifecycle.unfinished_count(session, study_id) == 4


def test_queued_trials_are_handed_out_in_number_order_and_requeued_after_a_crash(
    db: Database,
) -> None:
    study_id = new_study(db)
    ids = new_configuration(db, study_id, 0) + new_configuration(db, study_id, 1)
    with db.transaction() as session:
        assert trial_lifecycle.next_queued(session, study_id, []).id == ids[0]
        assert trial_lifecycle.next_queued(session, study_id, ids[:2]).id == ids[2]
        trial_lifecycle.mark_trial_running(session, ids[0])
        trial_lifecycle.mark_trial_running(session, ids[1])
        trial_lifecycle.record_checkpoint(session, ids[0], "/ckpt/a")
        trial_lifecycle.finish_trial(session, ids[1], "complete", 1.0, 40)
    with db.transaction() as session:
        assert trial_lifecycle.next_queued(session, study_id, []).id == ids[2]
        assert trial_lifecycle.requeue_unfinished(session, study_id) == 1
    trials = {t.id: t for t in db.trials(study_id)}
    assert trials[ids[0]].status == "queued"
    assert trials[ids[0]].checkpoint_path == "/ckpt/a"
    assert trials[ids[0]].attempts == 1
    assert trials[ids[1]].status == "complete"
    with db.transaction() as session:
        assert trial_lifecycle.next_queued(session, study_id, []).id == ids[0]
        assert trial_lifecycle.mark_trial_running(session, ids[0]).attempts == 2


def test_add_metrics_writes_rows_progress_and_events_in_order(db: Database) -> None:
    study_id = new_study(db)
    a, b = new_configuration(db, study_id, 0)
    rows = [
        (a, {"step": 10, "objective": 5.0, "train_loss": 6.0, "node": "n1", "status": "running"}),
        (b, {"step": 10, "objective": 7.0, "train_loss": 8.0, "node": "n2", "status": "running"}),
        (a, {"step": 20, "objective": 4.0, "train_loss": 4.5, "node": "n1", "status": "running"}),
    ]
    with db.transaction() as session:
        metric_ingest.add_metrics(session, rows)
        metric_ingest.add_metrics(session, [])
    with db.transaction() as session:
        metric_ingest.add_metrics(session, [(b, {"step": 20, "objective": 6.5, "node": "n3"})])

    assert [(m.step, m.objective) for m in db.metrics(a)] == [(10, 5.0), (20, 4.0)]
    assert [(m.step, m.objective) for m in db.metrics(b)] == [(10, 7.0), (20, 6.5)]
    assert db.metrics(a)[0].values == rows[0][1]
    trials = {t.id: t for t in db.trials(study_id)}
    assert (trials[a].last_step, trials[a].node) == (20, "n1")
    assert (trials[b].last_step, trials[b].node) == (20, "n3")
    assert trials[a].status == "queued"  # metrics do not change the status

    metric_events = [e for e in events(db, study_id) if e.kind == "metric"]
    assert [(e.trial_id, e.payload["step"]) for e in metric_events] == [
        (a, 10),
        (b, 10),
        (a, 20),
        (b, 20),
    ]
    assert metric_events[0].payload == rows[0][1]


def test_finish_trial_is_idempotent(db: Database) -> None:
    study_id = new_study(db)
    trial_id, _ = new_configuration(db, study_id, 0)
    with db.transaction() as session:
        trial_lifecycle.mark_trial_running(session, trial_id)
    with db.transaction() as session:
        trial = trial_lifecycle.finish_trial(session, trial_id, "complete", 1.25, 40)
        assert trial is not None and trial.status == "complete"
    finished_at = db.trials(study_id)[0].finished_at
    with db.transaction() as session:
        again = trial_lifecycle.finish_trial(session, trial_id, "failed", 9.0, 10, error="late")
        assert again is not None and again.status == "complete"
        assert trial_lifecycle.finish_trial(session, trial_id + 1000, "complete", 1.0, 1) is None
    with db.transaction() as session:
        trial_lifecycle.cancel_unfinished(session, study_id)  # only the sibling is unfinished
    trials = db.trials(study_id)
    trial = trials[0]
    assert (trial.status, trial.objective, trial.last_step, trial.error) == (
        "complete",
        1.25,
        40,
        None,
    )
    assert trial.finished_at == finished_at
    assert trials[1].status == "cancelled"
    finishes = [e for e in events(db, study_id) if e.kind == "trial" and e.trial_id == trial_id]
    assert [e.payload["status"] for e in finishes] == ["running", "complete"]


@pytest.mark.parametrize("path", ["cancel-queued-study", "cancel-unfinished"])
def test_trials_cancelled_in_bulk_get_a_final_trial_event(db: Database, path: str) -> None:
    """``finish_trial`` logs every trial's final status for the live view, but the bulk
    UPDATEs of ``request_cancel`` (queued study) and ``cancel_unfinished`` (after a
    cancelled run) log nothing: a client following the event log keeps showing those
    trials as queued or running."""
    study_id = new_study(db)
    trial_ids = new_configuration(db, study_id, 0)
    with db.transaction() as session:
        if path == "cancel-queued-study":
            submissions.request_cancel(session, study_id)
        else:
            lease.claim_study(session, "driver", LONG)
            trial_lifecycle.mark_trial_running(session, trial_ids[0])
    if path == "cancel-unfinished":
        with db.transaction() as session:
            trial_lifecycle.cancel_unfinished(session, study_id)
    assert {t.status for t in db.trials(study_id)} == {"cancelled"}
    last: dict[int, str] = {}
    for event in events(db, study_id):
        if event.kind == "trial":
            last[event.trial_id] = event.payload["status"]
    assert last == dict.fromkeys(trial_ids, "cancelled")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_objectives_are_stored_as_null(db: Database, bad: float) -> None:
    study_id = new_study(db)
    trial_id, other = new_configuration(db, study_id, 0)
    with db.transaction() as session:
        metric_ingest.add_metrics(
            session,
            [(trial_id, {"step": 7, "objective": bad, "val_loss": bad, "train_loss": 1.5})],
        )
        trial_lifecycle.finish_trial(session, trial_id, "diverged", bad, 7)
        trial_lifecycle.finish_trial(session, other, "complete", 2.0, 40)
    (metric,) = db.metrics(trial_id)
    assert metric.objective is None
    assert metric.values == {"step": 7, "objective": None, "val_loss": None, "train_loss": 1.5}
    trial = db.trials(study_id)[0]
    assert (trial.status, trial.objective, trial.last_step) == ("diverged", None, 7)
    payloads = [e.payload for e in events(db, study_id) if e.trial_id == trial_id]
    assert payloads[0]["objective"] is None  # the metric event
    assert payloads[-1] == {"status": "diverged", "objective": None, "step": 7}
    # Sorting by objective works with the nulls there.
    with db.sessions() as session:
        best = session.scalars(
            select(Trial)
            .where(Trial.study_id == study_id, Trial.objective.is_not(None))
            .order_by(Trial.objective)
        ).first()
        assert best is not None and best.id == other


def test_event_ids_strictly_increase(db: Database) -> None:
    study_id = new_study(db)
    with db.transaction() as session:
        lease.claim_study(session, "driver", LONG)
    (trial_id,) = new_configuration(db, study_id, 0, seeds=1)
    with db.transaction() as session:
        event_log.add_event(session, study_id, "configuration", {"configuration": 0})
        trial_lifecycle.mark_trial_running(session, trial_id)
    for step in (10, 20, 30):
        with db.transaction() as session:
            metric_ingest.add_metrics(
                session, [(trial_id, {"step": step, "objective": 1.0 / step})] * 2
            )
    with db.transaction() as session:
        trial_lifecycle.finish_trial(session, trial_id, "complete", 1 / 30, 30)
        lease.finish_study(session, study_id, "complete")

    log = events(db, study_id)
    ids = [e.id for e in log]
    assert all(a < b for a, b in zip(ids, ids[1:], strict=False))
    assert [e.kind for e in log] == ["study", "study", "configuration", "trial"] + [
        "metric"
    ] * 6 + ["trial", "study"]
    assert [e.payload.get("step") for e in log if e.kind == "metric"] == [10, 10, 20, 20, 30, 30]
    # A reader resuming after any id gets exactly the rest, in order.
    for i, event in enumerate(log):
        assert [e.id for e in events(db, study_id, after=event.id)] == ids[i + 1 :]
    created = [e.created_at for e in log]
    assert created == sorted(created)


# --- concurrency -------------------------------------------------------------------------


def test_concurrent_claimers_never_get_the_same_study(db: Database) -> None:
    count = 12
    study_ids = [new_study(db, f"s{i}") for i in range(count)]
    claims: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def claimer(owner: str) -> None:
        try:
            start.wait()
            while True:
                with transaction(db.sessions) as session:
                    study = lease.claim_study(session, owner, LONG)
                    if study is None:
                        return
                    claims[owner].append(study.id)
                    time.sleep(0.01)  # hold the row lock a little, as a driver would
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(owner,)) for owner in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    taken = claims["a"] + claims["b"]
    assert sorted(taken) == study_ids, claims
    with db.sessions() as session:
        owners = {s.id: s.claimed_by for s in session.scalars(select(Study))}
    for owner, ids in claims.items():
        assert all(owners[i] == owner for i in ids)


def test_postgres_claim_skips_a_study_locked_by_another_claimer(postgres_url: str) -> None:
    """SKIP LOCKED: while one driver's claim transaction is open, a second driver takes the
    next study at once rather than waiting for, or also taking, the locked one."""
    db = Database(postgres_url)
    try:
        first, second = new_study(db, "a"), new_study(db, "b")
        other: dict[str, Any] = {}
        with transaction(db.sessions) as session_a:
            claimed = lease.claim_study(session_a, "driver-a", LONG)
            assert claimed is not None and claimed.id == first

            def claim_b() -> None:
                try:
                    with transaction(db.sessions) as session_b:
                        # Without SKIP LOCKED this would block on the row; fail instead.
                        session_b.execute(text("SET LOCAL lock_timeout = '5s'"))
                        started = time.monotonic()
                        study = lease.claim_study(session_b, "driver-b", LONG)
                        other["id"] = study.id if study else None
                        other["seconds"] = time.monotonic() - started
                except BaseException as exc:  # noqa: BLE001 - reported below
                    other["error"] = exc

            thread = threading.Thread(target=claim_b)
            thread.start()
            thread.join(timeout=30)
        assert "error" not in other, other
        assert other["id"] == second
        assert other["seconds"] < 2
        owners = {sid: db.study(sid).claimed_by for sid in (first, second)}
        assert owners == {first: "driver-a", second: "driver-b"}
    finally:
        db.dispose()


def test_postgres_event_cursor_sees_events_committed_out_of_id_order(postgres_url: str) -> None:
    """A server-sent-event reader follows ``id > cursor``. On PostgreSQL ids come from a
    sequence at INSERT time, so a transaction that inserted earlier but committed later
    (the API's cancel event while the driver writes metrics, two drivers, ...) could land
    *behind* a cursor that had already moved past it. Event writers of one study are
    serialised until commit, so ids follow commit order: a second writer waits for the
    first, and every reader that follows the cursor sees every event."""
    db = Database(postgres_url)
    try:
        study_id = new_study(db)
        cursor = events(db, study_id)[-1].id
        sessions = session_factory(db.engine)
        slow = sessions()
        slow.begin()
        event_log.add_event(slow, study_id, "study", {"status": "cancelling"})
        slow.flush()  # id assigned, not committed (still in flight)

        def fast_writer() -> None:
            with transaction(sessions) as fast:
                event_log.add_event(fast, study_id, "metric", {"step": 10})

        writer = threading.Thread(target=fast_writer)
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive(), "the second writer must wait for the first to commit"
        seen = [e.payload for e in events(db, study_id, after=cursor)]
        assert seen == []  # nothing committed yet
        slow.commit()
        slow.close()
        writer.join(timeout=10)
        assert not writer.is_alive()
        seen = [e.payload for e in events(db, study_id, after=cursor)]
        assert seen == [{"status": "cancelling"}, {"step": 10}]
    finally:
        db.dispose()


def test_metric_rows_are_cascaded_with_their_study(db: Database) -> None:
    study_id = new_study(db)
    trial_id, _ = new_configuration(db, study_id, 0)
    with db.transaction() as session:
        metric_ingest.add_metrics(session, [(trial_id, {"step": 1, "objective": 1.0})])
    with db.transaction() as session:
        session.delete(session.get(Study, study_id))
    with db.sessions() as session:
        assert session.scalar(select(Metric).where(Metric.trial_id == trial_id)) is None
        assert session.scalar(select(Event).where(Event.study_id == study_id)) is None


def test_confirmation_runs_never_compete_for_best(db: Database) -> None:
    """A bracket study's confirmation reruns the choice on fresh seeds: even with a better
    mean (1.0 against 2.0 and 3.0) it is never the best, in SQL or by ``studies.best``."""
    study_id = new_study(db)
    params = [{"lr": 0.1}, {"lr": 0.3}, {"lr": 0.1, STAGE_KEY: CONFIRM_STAGE}]
    means = [2.0, 3.0, 1.0]
    with db.transaction() as session:
        for number, (values, mean) in enumerate(zip(params, means, strict=True)):
            first_seed = 2 if is_confirmation(values) else 0
            configs = [{"seed": first_seed + s} for s in range(2)]
            trials = trial_lifecycle.create_configuration(
                session, study_id, number, values, configs, first_seed
            )
            for trial, objective in zip(trials, (mean - 0.5, mean + 0.5), strict=True):
                trial_lifecycle.finish_trial(session, trial.id, "complete", objective, 10)
        event_log.add_event(session, study_id, "bracket", {"rounds": 0})
        event_log.add_event(session, study_id, "bracket", {"rounds": 1})
    trials = db.trials(study_id)
    assert [t.seed_index for t in trials] == [0, 1, 0, 1, 2, 3]
    best = best_configuration(trials)
    assert best is not None and (best.configuration, best.objective) == (0, 2.0)
    with db.sessions() as session:
        assert best_sql.best_configuration_number(session, study_id, "min") == 0
        latest = event_log.latest_event(session, study_id, "bracket")
        assert latest is not None and latest.payload == {"rounds": 1}
        assert event_log.latest_event(session, study_id, "no-such-kind") is None
