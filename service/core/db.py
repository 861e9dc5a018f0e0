"""The service's database handles: one engine for writes, one for reads, Optuna's storage.

On SQLite the read engine uses deferred transactions, so page loads and event streams
never wait for the driver's write lock; on PostgreSQL both share one engine.
"""

from __future__ import annotations

from functools import cached_property

import optuna
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from studies.storage.engine import make_engine, migrate, session_factory


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        migrate(self.engine)
        sqlite = url.startswith("sqlite")
        self.read_engine: Engine = make_engine(url, reads_only=True) if sqlite else self.engine
        self.writes: sessionmaker[Session] = session_factory(self.engine)
        self.reads: sessionmaker[Session] = session_factory(self.read_engine)

    @cached_property
    def optuna_storage(self) -> optuna.storages.RDBStorage:
        kwargs = {"connect_args": {"timeout": 30}} if self.url.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(self.url, engine_kwargs=kwargs)

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
        if "optuna_storage" in self.__dict__:
            self.optuna_storage.engine.dispose()
