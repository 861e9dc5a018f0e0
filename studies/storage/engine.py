"""Engine and sessions for the settings' database (``MAGMA_DATABASE_URL``), migrated to
the latest schema on start.

The embedded default is a SQLite file under ``./var/``; deployments point
``MAGMA_DATABASE_URL`` at PostgreSQL. SQLite gets WAL mode, a busy timeout and
``BEGIN IMMEDIATE`` transactions, so the API and the driver's threads can share the file
without "database is locked" failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from worker.settings import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str | None = None, reads_only: bool = False) -> Engine:
    """``reads_only`` (SQLite): deferred transactions, so readers such as the API never
    queue behind the driver's write lock (WAL readers see the last commit). Without a
    ``url``: the settings' database."""
    url = url or get_settings().database_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(connection, _record) -> None:  # type: ignore[no-untyped-def]
            connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection) -> None:  # type: ignore[no-untyped-def]
            # Writers take the write lock up front: a deferred transaction that reads and
            # then writes fails at once (no busy wait) if another connection wrote between.
            connection.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent).

    SQLite alters a table by copying it into a new one and dropping the old, and with
    foreign keys on, that drop would cascade-delete every child row; so on SQLite foreign
    keys are off while migrations run (a pragma that only works outside a transaction),
    checked afterwards, and on again."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            _foreign_keys(connection, on=False)
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("a migration left rows whose foreign keys dangle")
        finally:
            if sqlite:
                _foreign_keys(connection, on=True)


def _foreign_keys(connection: Connection, on: bool) -> None:
    """SQLite's foreign-key switch, set on the driver connection, outside any transaction."""
    raw = connection.connection.dbapi_connection
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")  # type: ignore[union-attr]


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session
