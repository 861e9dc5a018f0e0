"""A throwaway database, for the storage and dashboard benchmarks: a SQLite file in a
temporary directory, or a new database on the PostgreSQL server of ``url`` (created through
its ``postgres`` database, dropped at the end). It lives in the package, not beside the
benchmarks, so that they import it the same way from any directory or as modules."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, make_url, text


@contextlib.contextmanager
def temporary_database(url: str | None, filename: str) -> Iterator[str]:
    """The URL of a new, empty database, removed on exit; ``filename`` names the SQLite file
    (with no ``url``, or a SQLite one)."""
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
