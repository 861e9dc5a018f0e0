"""Database and study helpers for the storage and engine tests (their fixtures, ``db``,
``database_url``, ``postgres_url`` and the Ray ones, are in ``tests/conftest.py``).

``fresh_database`` gives a fresh, empty database on either back end, ``sqlite`` or
``postgresql``: a SQLite file in a given directory or a temporary PostgreSQL database
``magma_test_<random>`` created on the server named by ``MAGMA_TEST_POSTGRES_URL``
(default: the CI server) and dropped afterwards. An unreachable PostgreSQL server makes
the PostgreSQL tests fail, never skip.
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
