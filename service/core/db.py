"""The service's database handles: one engine for writes, one for reads.

On SQLite the read engine uses deferred transactions, so page loads and event streams
never wait for the driver's write lock; on PostgreSQL both share one engine.
"""

from __future__ import annotations

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

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
