"""The fixtures the test modules share, registered once for the whole session: a test asks
for one by its name.

The helpers the tests call themselves (databases, studies, servers, worker runs) are in the
modules next to this file, imported by name: ``tests/db_fixtures.py``,
``tests/service_fixtures.py``, ``tests/worker_fixtures.py``, ``tests/engine_runs.py``, ...

Every storage and engine test runs against both back ends: ``database_url`` is parametrised
with the ids ``sqlite`` and ``postgresql`` and gives each test a fresh, empty database (see
``tests.db_fixtures.fresh_database``). An unreachable PostgreSQL server makes the
PostgreSQL tests fail, never skip.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import magma.fused
from worker.settings import get_settings

# Their asserts get pytest's messages, as a test module's do. Registered before anything
# imports them: the test modules are imported after this file.
pytest.register_assert_rewrite(
    "tests.db_fixtures", "tests.engine_runs", "tests.service_fixtures", "tests.worker_fixtures"
)

from tests.db_fixtures import BACKENDS, Database, fresh_database  # noqa: E402
from tests.service_fixtures import Server, running_server  # noqa: E402

# --- databases --------------------------------------------------------------------------


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


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


# --- Ray ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def magma_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One token cache for the whole session, exported as ``MAGMA_CACHE_DIR`` so that Ray
    workers (which inherit the environment of the process that starts Ray) and driver
    subprocesses tokenize the C4 sample once. This process's cached settings are dropped
    on each change, so that trials run in it read the same cache."""
    directory = tmp_path_factory.mktemp("magma-cache")
    previous = os.environ.get("MAGMA_CACHE_DIR")
    os.environ["MAGMA_CACHE_DIR"] = str(directory)
    get_settings.cache_clear()
    yield directory
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


# --- the service --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per backend for the module; tests create their own studies."""
    directory = tmp_path_factory.mktemp(f"server-{request.param}")
    with (
        fresh_database(request.param, directory) as url,
        running_server(url, directory / "server.log") as running,
    ):
        yield running


# --- the worker ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def token_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One token cache directory for the whole session, for the worker's llama runs
    (``tests.worker_fixtures.llama_config``): each split is tokenized once."""
    return tmp_path_factory.mktemp("token-cache")


# --- the optimizers -----------------------------------------------------------------------


@pytest.fixture
def every_graph_compiled() -> Iterator[None]:
    """Every compiled masked step of the test runs compiled, at dynamo's default limits:
    the test starts from an empty compile cache, as a fresh process does (one test process
    steps many bases and flags, each a graph of its own), and an eager fallback
    (``FusedFallbackWarning``, e.g. a recompile-limit hit) is an error."""
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", magma.fused.FusedFallbackWarning)
        yield
