"""A throwaway database for a benchmark run: a SQLite file in a temporary directory, or a
new database on the PostgreSQL server of ``url`` (created through its ``postgres``
database, dropped at the end)."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, make_url, text


@contextlib.contextmanager
def temporary_database(url: str | None, filename: str) -> Iterator[str]:
    if url is None or url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="magma-bench-") as directory:
            yield f"sqlite:///{Path(directory) / filename}"
        return
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"magma_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
