"""Our migrations upgrade a database made by an older main, with real studies in it, and
lose nothing.

``tests/data/main-7519638.sqlite`` was made by main at 7519638 (schema revision 0002): its
API queued the studies, its real driver ran them on Ray, and Optuna's RDB tables are in it
(``tests/data/README.md`` says what it holds; ``tests/data/make_migration_fixture.py``
rebuilds it). Each back end starts from that state:

* SQLite: a copy of the file.
* PostgreSQL: a scratch database migrated to 0002 by our own revisions, Optuna's storage
  created in it as the old driver did, then every row of the file copied in (ids kept,
  sequences moved past them).

A snapshot of every row of our four tables is read with SQLAlchemy Core before and after
``studies.storage.engine.migrate`` (the real upgrade to head), and the tests compare them.
Columns a revision rewrites (``REWRITTEN``) or drops (``DROPPED``) are checked by the
per-revision tests at the end.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    DateTime,
    Engine,
    Integer,
    MetaData,
    create_engine,
    inspect,
    make_url,
    select,
    text,
)

from studies.storage.engine import MIGRATIONS, make_engine, migrate
from studies.storage.models import Base
from tests.db_fixtures import BACKENDS, fresh_database

FIXTURE = Path(__file__).parent / "data" / "main-7519638.sqlite"
#: recorded in tests/data/README.md; a rebuilt fixture updates both
FIXTURE_SHA256 = "d299390b45e542151869e35c62dfadf27568feff37e15fb8121b32764c9bddbd"
#: the revision the fixture's schema is at
OLD_REVISION = "0002"
OURS = ("magma_studies", "magma_trials", "magma_metrics", "magma_events")
VERSION_TABLE = "magma_alembic_version"

#: columns a revision rewrites in place; each is checked by that revision's test below
REWRITTEN = {"magma_studies": {"spec"}, "magma_trials": {"config"}}  # 0003
#: columns a revision drops on purpose; any other old column must survive the upgrade
DROPPED = {"magma_studies": {"optuna_study_name"}}  # 0004

Row = dict[str, Any]
Snapshot = dict[str, dict[int, Row]]  # table -> id -> row


def alembic_config() -> Config:
    """The Config ``engine.migrate`` builds (same script location)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def script_revisions() -> frozenset[str]:
    scripts = ScriptDirectory.from_config(alembic_config())
    return frozenset(s.revision for s in scripts.walk_revisions())


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


# --- reading rows ---------------------------------------------------------------------


def _value(value: Any) -> Any:
    """Comparable across back ends: datetimes as aware UTC (SQLite stores naive UTC)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    return value


def snapshot(url: str) -> Snapshot:
    """Every row of our four tables, by id, read with plain Core on reflected tables."""
    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine, only=OURS)
        with engine.connect() as connection:
            return {
                name: {
                    row["id"]: {k: _value(v) for k, v in row.items()}
                    for row in connection.execute(
                        select(metadata.tables[name]).order_by(metadata.tables[name].c.id)
                    ).mappings()
                }
                for name in OURS
            }
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# --- the old state on PostgreSQL ------------------------------------------------------


def build_postgres_old_state(url: str) -> None:
    """What main at 7519638 left in a deployed PostgreSQL: our schema at 0002 (made by our
    own revisions), Optuna's storage beside it (made by Optuna, as the old driver did), and
    the fixture's rows in every table, ids kept and sequences moved past them."""
    engine = create_engine(url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, OLD_REVISION)
        optuna.storages.RDBStorage(url).engine.dispose()

        source_engine = create_engine(f"sqlite:///{FIXTURE}")
        source = MetaData()
        source.reflect(source_engine)
        target = MetaData()
        target.reflect(engine)
        # ours at 0002 already; the fixture's says 0002 too
        copied = [t for t in target.sorted_tables if t.name in set(source.tables) - {VERSION_TABLE}]
        assert {t.name for t in copied} == set(source.tables) - {VERSION_TABLE}
        with source_engine.connect() as reading, engine.begin() as writing:
            for table in reversed(copied):  # Optuna's version rows; ours are empty
                writing.execute(table.delete())
            for table in copied:
                aware = {
                    c.name
                    for c in table.columns
                    if isinstance(c.type, DateTime) and c.type.timezone
                }
                rows = [
                    {
                        k: v.replace(tzinfo=timezone.utc) if k in aware and v is not None else v
                        for k, v in row.items()
                    }
                    for row in reading.execute(select(source.tables[table.name])).mappings()
                ]
                if rows:
                    writing.execute(table.insert(), rows)
            for table in copied:
                keys = list(table.primary_key.columns)
                if len(keys) == 1 and isinstance(keys[0].type, Integer):
                    key = keys[0].name
                    writing.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence(:table, :key),"
                            f' coalesce(max("{key}"), 1), max("{key}") IS NOT NULL)'
                            f' FROM "{table.name}"'
                        ),
                        {"table": f'"{table.name}"', "key": key},
                    )
        source_engine.dispose()
    finally:
        engine.dispose()


# --- the upgrade, once per back end -----------------------------------------------------


@dataclass
class Upgrade:
    backend: str
    before: Snapshot
    after: Snapshot
    tables_before: set[str]
    tables_after: set[str]
    versions: list[str]
    #: alembic's comparison of the upgraded schema with ``Base.metadata``
    schema_diffs: list[Any]
    #: the id a new event row got after the upgrade
    new_event_id: int
    #: PostgreSQL: table -> (sequence's last value, largest id), after the upgrade
    sequences: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0


def _compare_schema(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_name": lambda name, type_, _parent: (
                    type_ != "table" or name.startswith("magma_")
                ),
                "version_table": VERSION_TABLE,
            },
        )
        return list(compare_metadata(context, Base.metadata))


@pytest.fixture(scope="module", params=BACKENDS)
def upgraded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Upgrade:
    backend = request.param
    directory = tmp_path_factory.mktemp(f"migrations-{backend}")
    with fresh_database(backend, directory) as url:
        if backend == "sqlite":
            shutil.copyfile(FIXTURE, str(make_url(url).database))
        else:
            build_postgres_old_state(url)
        before, tables_before = snapshot(url), table_names(url)
        assert before == snapshot(f"sqlite:///{FIXTURE}")  # the old state is the fixture's

        engine = make_engine(url)
        try:
            started = time.perf_counter()
            migrate(engine)
            seconds = time.perf_counter() - started
            with engine.connect() as connection:
                versions = list(
                    connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
                )
            schema_diffs = _compare_schema(engine)
            sequences: dict[str, tuple[int, int]] = {}
            if backend == "postgresql":
                with engine.connect() as connection:
                    for table in OURS:
                        sequence = connection.scalar(
                            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
                        )
                        assert sequence is not None, f"{table}.id has no sequence"
                        last = connection.scalar(text(f"SELECT last_value FROM {sequence}"))
                        top = connection.scalar(text(f"SELECT max(id) FROM {table}"))
                        sequences[table] = (last, top)
        finally:
            engine.dispose()
        after, tables_after = snapshot(url), table_names(url)

        # The upgraded database takes new rows: ids continue after the old ones.
        engine = create_engine(url)
        try:
            events = MetaData()
            events.reflect(engine, only=("magma_events",))
            with engine.begin() as connection:
                new_event_id = connection.execute(
                    events.tables["magma_events"]
                    .insert()
                    .values(
                        study_id=min(before["magma_studies"]),
                        kind="study",
                        payload={"status": "queued"},
                        created_at=datetime.now(timezone.utc),
                    )
                    .returning(events.tables["magma_events"].c.id)
                ).scalar_one()
        finally:
            engine.dispose()
    print(f"\n{backend}: upgrade {OLD_REVISION} -> {versions} took {seconds:.2f} s")
    return Upgrade(
        backend,
        before,
        after,
        tables_before,
        tables_after,
        versions,
        schema_diffs,
        new_event_id,
        sequences,
        seconds,
    )


# --- the fixture itself -------------------------------------------------------------------


def test_fixture_is_the_recorded_database_made_by_the_old_main() -> None:
    assert hashlib.sha256(FIXTURE.read_bytes()).hexdigest() == FIXTURE_SHA256, (
        "tests/data/main-7519638.sqlite changed: record its provenance in tests/data/README.md"
    )
    before = snapshot(f"sqlite:///{FIXTURE}")
    engine = create_engine(f"sqlite:///{FIXTURE}")
    try:
        with engine.connect() as connection:
            version = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
            optuna_studies = connection.execute(text("SELECT count(*) FROM studies")).scalar()
    finally:
        engine.dispose()
    assert [v[0] for v in version] == [OLD_REVISION]
    assert optuna_studies == 5  # the old driver's copy of the five studies it ran
    studies = list(before["magma_studies"].values())
    trials = list(before["magma_trials"].values())
    assert Counter(s["status"] for s in studies) == {"complete": 4, "cancelled": 2, "queued": 1}
    assert {"complete", "pruned", "diverged", "cancelled"} <= {t["status"] for t in trials}
    assert {s["spec"]["workload"]["kind"] for s in studies} == {"quadratic", "llama-c4"}
    assert {s["spec"]["objective"]["metric"] for s in studies} == {"objective", "val_loss"}
    assert any(t["objective"] is None for t in trials if t["status"] == "diverged")  # +inf
    assert len(before["magma_metrics"]) > 50 and len(before["magma_events"]) > 100


# --- nothing lost -------------------------------------------------------------------------


def test_upgrade_reaches_head(upgraded: Upgrade) -> None:
    assert upgraded.versions == [head_revision()]


def test_every_row_keeps_its_id(upgraded: Upgrade) -> None:
    for table in OURS:
        before, after = upgraded.before[table], upgraded.after[table]
        assert len(after) == len(before), table
        assert sorted(after) == sorted(before), table
    assert upgraded.new_event_id > max(upgraded.before["magma_events"])
    for table, (last, top) in upgraded.sequences.items():
        assert last >= top, f"{table}: sequence at {last}, ids up to {top}"


def _kept(table: str, before: Row, after: Row) -> None:
    """Every old column of the row is still there, with its value, unless a revision
    drops it (``DROPPED``) or rewrites it (``REWRITTEN``: checked by that revision's test)."""
    rewritten = REWRITTEN.get(table, set())
    lost = set(before) - set(after) - DROPPED.get(table, set())
    assert not lost, f"{table} {before['id']}: columns {sorted(lost)} lost"
    for column, value in before.items():
        if column in after and column not in rewritten:
            assert after[column] == value, f"{table} {before['id']}.{column}"


def test_metric_rows_and_events_are_unchanged(upgraded: Upgrade) -> None:
    for table in ("magma_metrics", "magma_events"):
        for id_, row in upgraded.before[table].items():
            _kept(table, row, upgraded.after[table][id_])
            assert set(upgraded.after[table][id_]) >= set(row), (table, id_)


def test_studies_and_trials_keep_their_data(upgraded: Upgrade) -> None:
    for table in ("magma_studies", "magma_trials"):
        for id_, row in upgraded.before[table].items():
            _kept(table, row, upgraded.after[table][id_])
    # the columns readers rely on, spelled out
    for id_, study in upgraded.before["magma_studies"].items():
        new = upgraded.after["magma_studies"][id_]
        assert (new["name"], new["status"]) == (study["name"], study["status"])
    for id_, trial in upgraded.before["magma_trials"].items():
        new = upgraded.after["magma_trials"][id_]
        assert (new["status"], new["params"]) == (trial["status"], trial["params"])
        assert (new["study_id"], new["number"]) == (trial["study_id"], trial["number"])
        assert new["objective"] == trial["objective"]  # null where it was +inf


def test_upgraded_schema_matches_the_models(upgraded: Upgrade) -> None:
    assert upgraded.schema_diffs == []


# --- 0003: studies and trial configs normalised --------------------------------------------


def expected_study_columns(old_spec: dict[str, Any]) -> dict[str, Any]:
    """LEAD (0003): the values 0003 should give the new ``magma_studies`` columns for a study
    whose old spec is ``old_spec`` (workload, metric, mode, runs). Edit to match 0003."""
    from studies.spec import StudySpec

    spec = StudySpec.model_validate(normalised_spec(old_spec))
    return {
        "workload": spec.workload.kind,
        "metric": spec.metric,
        "mode": spec.mode,
        "runs": spec.runs,
    }


def normalised_spec(old_spec: dict[str, Any]) -> dict[str, Any]:
    """LEAD (0003): the old spec as 0003 should leave it. The old default objective metric
    ``"objective"`` (val_ppl for llama, val_loss otherwise) is spelled out as the workload's
    default metric; everything else is kept."""
    from worker.contract import DEFAULT_METRIC

    spec = {**old_spec, "objective": dict(old_spec["objective"])}
    if spec["objective"]["metric"] == "objective":
        spec["objective"]["metric"] = DEFAULT_METRIC[spec["workload"]["kind"]]
    return spec


def check_study_normalised(old: Row, new: Row, trials: list[Row]) -> None:
    """LEAD (0003): assertions on one study after 0003 (``old``/``new``: its rows before
    and after the upgrade; ``trials``: its trials after)."""
    from studies.spec import StudySpec

    expected = normalised_spec(old["spec"])
    _contains(new["spec"], expected, f"study {old['id']} spec")
    # the stored spec is a valid current spec with every default of revision 0003 applied:
    # a field added to StudySpec since then gets its default on reading, and nothing else
    current = StudySpec.model_validate(new["spec"]).model_dump(mode="json")
    assert {k: current[k] for k in new["spec"]} == new["spec"]
    columns = expected_study_columns(old["spec"])
    assert {k: new[k] for k in columns} == columns, f"study {old['id']}"
    if old["status"] == "complete":
        assert len(trials) == new["runs"]


def check_trial_normalised(old: Row, new: Row, study: Row) -> None:
    """LEAD (0003): assertions on one trial after 0003: its config is a complete
    ``TrialConfig`` dump that keeps every value the trial ran with (seed, mask_seed from the
    old rule, lr, ...), and names the study's metric."""
    from worker.config import DEFAULT_EVAL_TOKENS, TrialConfig

    config = new["config"]
    # the stored config is a complete dump of revision 0003's TrialConfig, which reads the
    # same under today's: a field added since gets its default, the legacy ``bf16`` reads
    # as ``precision`` and ``eval_tokens: null`` as the 10M default (the whole split before:
    # the same tokens for every split of at most 10M tokens, as the bundled sample's are)
    current = TrialConfig(**config).model_dump(mode="json")
    legacy = {"bf16", "eval_tokens"}
    unchanged = {k: current[k] for k in config if k not in legacy}
    assert unchanged == {k: v for k, v in config.items() if k not in legacy}, f"trial {old['id']}"
    assert current["precision"] == ("auto" if config["bf16"] else "fp32"), f"trial {old['id']}"
    assert current["eval_tokens"] == (config["eval_tokens"] or DEFAULT_EVAL_TOKENS)
    _contains(config, old["config"], f"trial {old['id']} config")
    assert config["metric"] == study["metric"], f"trial {old['id']}"


def _contains(new: Any, old: Any, where: str) -> None:
    """Every value in ``old`` is in ``new`` at the same place (``new`` may add keys)."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        for key, value in old.items():
            assert key in new, f"{where}.{key} lost"
            _contains(new[key], value, f"{where}.{key}")
    elif isinstance(old, (list, tuple)):
        assert isinstance(new, (list, tuple)) and len(new) == len(old), where
        for i, (n, o) in enumerate(zip(new, old, strict=True)):
            _contains(n, o, f"{where}[{i}]")
    else:
        assert new == old, f"{where}: {old!r} became {new!r}"


def test_0003_normalises_studies(upgraded: Upgrade) -> None:
    assert "0003" in script_revisions()
    for id_, old in upgraded.before["magma_studies"].items():
        trials = [t for t in upgraded.after["magma_trials"].values() if t["study_id"] == id_]
        check_study_normalised(old, upgraded.after["magma_studies"][id_], trials)
    metrics = {s["metric"] for s in upgraded.after["magma_studies"].values()}
    assert "objective" not in metrics and {"val_loss", "val_ppl"} <= metrics


def test_0003_completes_trial_configs(upgraded: Upgrade) -> None:
    assert "0003" in script_revisions()
    for id_, old in upgraded.before["magma_trials"].items():
        new = upgraded.after["magma_trials"][id_]
        check_trial_normalised(old, new, upgraded.after["magma_studies"][new["study_id"]])


# --- 0004: Optuna's storage dropped ---------------------------------------------------------


def test_0004_drops_optuna_storage(upgraded: Upgrade) -> None:
    """Every Optuna study in the fixture is one of ours, so 0004 drops all of Optuna's
    tables (its ``alembic_version`` too) and ``magma_studies.optuna_study_name``."""
    assert "0004" in script_revisions()
    # On PostgreSQL 0004 also drops Optuna's enum types; not re-checked here.
    optuna_tables = upgraded.tables_before - set(OURS) - {VERSION_TABLE}
    assert {"studies", "trials", "version_info", "alembic_version"} <= optuna_tables
    assert upgraded.tables_after == set(OURS) | {VERSION_TABLE}
    assert all("optuna_study_name" not in s for s in upgraded.after["magma_studies"].values())
