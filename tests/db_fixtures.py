"""Database, Ray and study helpers for the study-engine tests.

Test modules load this file as a plugin (``pytest_plugins = ("tests.db_fixtures",)``), so
its fixtures are registered once per pytest session however many modules ask for them.

Every storage and engine test runs against both back ends: ``database_url`` is
parametrised with the ids ``sqlite`` and ``postgresql`` and gives each test a fresh,
empty database, either a SQLite file under ``tmp_path`` or a temporary PostgreSQL
database ``magma_test_<random>`` created on the server named by
``MAGMA_TEST_POSTGRES_URL`` (default: the CI server) and dropped afterwards. An
unreachable PostgreSQL server makes the PostgreSQL tests fail, never skip.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from studies.spec import StudySpec
from studies.storage.engine import make_engine, migrate, session_factory, transaction
from studies.storage.models import Metric, Study, Trial
from studies.storage.repository import submissions
from worker.settings import get_settings

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")

#: the fast synthetic workload most engine tests run: one trial is ~1 s of training
QUADRATIC = {"kind": "quadratic", "steps": 40, "eval_interval": 10, "batch_size": 3}


def postgres_base_url() -> str:
    return os.environ.get("MAGMA_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def _admin_engine(base_url: str) -> Engine:
    """An autocommit connection to the server's ``postgres`` database (CREATE DATABASE
    cannot run inside a transaction)."""
    return create_engine(
        make_url(base_url).set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """The URL of a new, empty database; it is deleted on exit."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'magma-{uuid.uuid4().hex[:8]}.db'}"
        return
    base = postgres_base_url()
    admin = _admin_engine(base)
    name = f"magma_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server
        admin.dispose()
        where = make_url(base).render_as_string(hide_password=True)
        ci = " (CI is set)" if os.environ.get("CI") else ""
        pytest.fail(
            f"PostgreSQL at {where} is unreachable{ci}: {type(exc).__name__}: {exc}. "
            "Start it or point MAGMA_TEST_POSTGRES_URL at a server.",
            pytrace=False,
        )
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database on each back end, per test."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh empty PostgreSQL database, for tests of PostgreSQL-only behaviour."""
    with fresh_database("postgresql", tmp_path) as url:
        yield url


class Database:
    """An engine on a migrated database, with its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction(self.sessions) as session:
            yield session

    def create_study(self, spec: StudySpec | dict[str, Any]) -> int:
        parsed = spec if isinstance(spec, StudySpec) else StudySpec.model_validate(spec)
        with self.transaction() as session:
            return submissions.create_study(session, parsed).id

    def study(self, study_id: int) -> Study:
        with self.sessions() as session:
            study = session.get(Study, study_id)
            assert study is not None
            return study

    def trials(self, study_id: int) -> list[Trial]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
                )
            )

    def metrics(self, trial_id: int) -> list[Metric]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Metric).where(Metric.trial_id == trial_id).order_by(Metric.id)
                )
            )

    def dispose(self) -> None:
        self.engine.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        time.sleep(interval)


def quadratic_spec(**overrides: Any) -> StudySpec:
    """A small quadratic study (AdamW, dense unless overridden, one torch thread)."""
    data: dict[str, Any] = {
        "name": "engine-test",
        "workload": dict(QUADRATIC),
        "sampler": "grid",
        "max_concurrent": 2,
        "fixed": {"threads": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return StudySpec.model_validate(data)


# --- Ray ------------------------------------------------------------------------------

_cache_dir: list[Path] = []


@pytest.fixture(scope="session")
def magma_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One token cache for the whole session, exported as ``MAGMA_CACHE_DIR`` so that Ray
    workers (which inherit the environment of the process that starts Ray) and driver
    subprocesses tokenize the C4 sample once. This process's cached settings are dropped
    on each change, so that trials run in it read the same cache."""
    if not _cache_dir:
        _cache_dir.append(tmp_path_factory.mktemp("magma-cache"))
    previous = os.environ.get("MAGMA_CACHE_DIR")
    os.environ["MAGMA_CACHE_DIR"] = str(_cache_dir[0])
    get_settings.cache_clear()
    yield _cache_dir[0]
    if previous is None:
        os.environ.pop("MAGMA_CACHE_DIR", None)
    else:
        os.environ["MAGMA_CACHE_DIR"] = previous
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def ray_local(magma_cache_dir: Path) -> Iterator[None]:
    """A local two-CPU Ray for the tests of one module.

    Module-scoped, not session-scoped, on purpose: other test modules (the worker
    tests) call ``ray.init`` themselves and fail if a Ray from an earlier module is
    still up."""
    import ray

    if ray.is_initialized():  # someone else's; do not share it by accident
        ray.shutdown()
    # "local": a new cluster even where RAY_ADDRESS or a `ray start` cluster exists
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
