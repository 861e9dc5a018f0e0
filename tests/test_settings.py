"""One ``Settings`` class (``worker.settings``) for every process.

A static scan holds every module of the project to reading its settings through it; unit
tests check the names, the ``DATABASE_URL`` alias and the errors; and a real
``magma-bench up`` with only ``MAGMA_DATABASE_URL`` set runs a study on that database and
no other (the API and the driver once read different variables).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tests.db_fixtures import Database, quadratic_spec
from tests.service_fixtures import cli, running_up
from worker.settings import DEFAULT_DATABASE_URL, Caps, Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("magma", "worker", "studies", "service", "dashboards", "benchmarks")
SETTINGS_MODULE = ROOT / "worker" / "settings.py"
#: a project setting's name
SETTING = re.compile(r"MAGMA_[A-Z0-9_]+|DATABASE_URL|RAY_ADDRESS")
#: methods of ``os.environ`` that look a key up
LOOKUPS = {"get", "pop", "setdefault", "__getitem__", "__contains__"}


# --------------------------------------------------------------------------------------
# static: no module but worker/settings.py reads a setting from the environment
# --------------------------------------------------------------------------------------


def environment_reads(source: str) -> list[tuple[int, str]]:
    """(line, key) of each lookup of a project setting in ``os.environ`` (or ``os.getenv``),
    however spelt; a key that is not a string constant counts too, since the scan cannot
    tell what it names. Copying the whole environment (``{**os.environ}``) is no lookup."""
    tree = ast.parse(source)
    environ_names, getenv_names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name == "environ":
                    environ_names.add(alias.asname or alias.name)
                elif alias.name == "getenv":
                    getenv_names.add(alias.asname or alias.name)

    def is_os(node: ast.expr, attr: str, names: set[str]) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr == attr and isinstance(node.value, ast.Name) and node.value.id == "os"
        return isinstance(node, ast.Name) and node.id in names

    def environ(node: ast.expr) -> bool:
        return is_os(node, "environ", environ_names)

    keys: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if is_os(func, "getenv", getenv_names) or (
                isinstance(func, ast.Attribute) and func.attr in LOOKUPS and environ(func.value)
            ):
                keys.append(node.args[0])
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if environ(node.value):
                keys.append(node.slice)
        elif isinstance(node, ast.Compare):
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, (ast.In, ast.NotIn)) and environ(right):
                    keys.append(node.left)
    reads = []
    for key in keys:
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            reads.append((key.lineno, ast.unparse(key)))
        elif SETTING.fullmatch(key.value):
            reads.append((key.lineno, key.value))
    return reads


def test_the_scan_finds_every_spelling_of_a_setting_lookup() -> None:
    source = """
import os
from os import environ as env, getenv
a = os.environ.get("MAGMA_CACHE_DIR", "var/cache/tokens")
b = os.environ["DATABASE_URL"]
c = os.getenv("RAY_ADDRESS")
d = "MAGMA_API_KEY" in os.environ
e = env.get("MAGMA_URL")
f = getenv("MAGMA_PORT")
g = os.environ.get(name)
children = {**os.environ, "MAGMA_STORAGE": "x"}
home = os.environ.get("HOME")
copied = dict(os.environ.items())
"""
    assert [key for _, key in environment_reads(source)] == [
        "MAGMA_CACHE_DIR",
        "DATABASE_URL",
        "RAY_ADDRESS",
        "MAGMA_API_KEY",
        "MAGMA_URL",
        "MAGMA_PORT",
        "name",
    ]


def test_only_the_settings_module_reads_settings_from_the_environment() -> None:
    modules = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert SETTINGS_MODULE in modules and len(modules) > 50, "the scan found too few modules"
    found = [
        f"{path.relative_to(ROOT)}:{line}: {key}"
        for path in modules
        if path != SETTINGS_MODULE
        for line, key in environment_reads(path.read_text())
    ]
    assert not found, (
        "read these settings through worker.settings.get_settings(), not os.environ:\n"
        + "\n".join(found)
    )


def test_the_settings_module_imports_no_framework() -> None:
    """Every process imports it, a trial and the API included: it must bring in neither
    torch nor Ray nor the service's frameworks (tests/test_layering.py checks that the API
    as a whole loads no torch)."""
    code = (
        "import sys, worker.settings; "
        "print(sorted(m for m in ('torch', 'ray', 'sqlalchemy', 'fastapi') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"worker.settings imports {result.stdout.strip()}"


# --------------------------------------------------------------------------------------
# unit
# --------------------------------------------------------------------------------------


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No project setting in the environment, and no cached settings, before or after."""
    for name in list(os.environ):
        if SETTING.fullmatch(name):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_defaults(environ: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite:///var/magma-bench.db"
    assert settings.caps == Caps()
    assert settings.ray_address is None and settings.api_key is None
    assert not settings.auth_enabled


@pytest.mark.parametrize("variable", ["MAGMA_DATABASE_URL", "DATABASE_URL"])
def test_the_database_variable_and_its_older_alias(
    environ: pytest.MonkeyPatch, variable: str
) -> None:
    environ.setenv(variable, "postgresql+psycopg://u@db:5432/magma")
    assert get_settings().database_url == "postgresql+psycopg://u@db:5432/magma"


def test_both_database_variables_must_agree(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("MAGMA_DATABASE_URL", "sqlite:////tmp/a.db")
    environ.setenv("DATABASE_URL", "sqlite:////tmp/a.db")
    assert Settings().database_url == "sqlite:////tmp/a.db"
    environ.setenv("DATABASE_URL", "sqlite:////tmp/b.db")
    with pytest.raises(ValueError, match=r"MAGMA_DATABASE_URL and DATABASE_URL .*/a\.db.*/b\.db"):
        Settings()


def test_every_variable_reaches_its_field(environ: pytest.MonkeyPatch) -> None:
    values = {
        "RAY_ADDRESS": "ray-head:6379",
        "MAGMA_API_KEY": "s3cret",
        "MAGMA_HOST": "0.0.0.0",
        "MAGMA_PORT": "9000",
        "MAGMA_EVENTS_POLL_SECONDS": "0.1",
        "MAGMA_MAX_TRIALS": "10",
        "MAGMA_MAX_STEPS": "500",
        "MAGMA_MAX_CONCURRENT": "3",
        "MAGMA_STORAGE": "/data/ray",
        "MAGMA_DRIVER_STALE_SECONDS": "12.5",
        "MAGMA_CACHE_DIR": "/data/cache/tokens",
        "MAGMA_URL": "https://magma.example/",
        "MAGMA_BENCH_PG": "postgresql+psycopg://postgres@pg:5432/postgres",
    }
    for name, value in values.items():
        environ.setenv(name, value)
    s = Settings()
    assert s.ray_address == "ray-head:6379"
    assert s.api_key is not None and s.api_key.get_secret_value() == "s3cret"
    assert s.auth_enabled and "s3cret" not in repr(s)
    assert (s.host, s.port, s.events_poll_seconds) == ("0.0.0.0", 9000, 0.1)
    assert s.caps == Caps(max_trials=10, max_steps=500, max_concurrent=3)
    assert (s.storage, s.driver_stale_seconds) == (Path("/data/ray"), 12.5)
    assert s.cache_dir == Path("/data/cache/tokens")
    assert s.trial_environment() == {"MAGMA_CACHE_DIR": "/data/cache/tokens"}
    assert s.api_url == "https://magma.example"
    assert s.bench_pg == values["MAGMA_BENCH_PG"]


def test_an_empty_variable_counts_as_unset(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("MAGMA_PORT", "")
    environ.setenv("MAGMA_API_KEY", "")
    environ.setenv("RAY_ADDRESS", "")
    s = Settings()
    assert (s.port, s.api_key, s.ray_address) == (8000, None, None)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MAGMA_PORT", "http", "valid integer"),
        ("MAGMA_PORT", "70000", "less than or equal to 65535"),
        ("MAGMA_MAX_TRIALS", "0", "greater than or equal to 1"),
        ("MAGMA_DRIVER_STALE_SECONDS", "-1", "greater than 0"),
        ("MAGMA_EVENTS_POLL_SECONDS", "soon", "valid number"),
        ("MAGMA_DATABASE_URL", "var/magma.db", "must be a SQLAlchemy URL"),
        ("DATABASE_URL", "magma.db", "(from MAGMA_DATABASE_URL or DATABASE_URL)"),
        ("MAGMA_URL", "127.0.0.1:8000", "must start with http:// or https://"),
    ],
)
def test_a_bad_value_names_its_variable(
    environ: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    environ.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        get_settings()
    (error,) = caught.value.errors()
    # the older DATABASE_URL is reported under the canonical name, and its message names both
    assert error["loc"] == ("MAGMA_DATABASE_URL" if variable == "DATABASE_URL" else variable,)
    assert message in error["msg"]
    assert f"{variable}\n" in str(caught.value) and repr(value) in str(caught.value)


def test_fields_may_be_given_by_name(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("MAGMA_PORT", "9000")
    s = Settings(database_url="sqlite:////tmp/x.db", port=9001, max_steps=5)
    assert (s.database_url, s.port, s.caps.max_steps) == ("sqlite:////tmp/x.db", 9001, 5)


def test_settings_are_read_once_per_process(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("MAGMA_MAX_STEPS", "7")
    assert get_settings() is get_settings()
    environ.setenv("MAGMA_MAX_STEPS", "8")
    assert get_settings().max_steps == 7
    get_settings.cache_clear()
    assert get_settings().max_steps == 8


def test_consumers_read_the_settings(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The client, the token cache, the storage engine and the driver take their defaults
    from the settings."""
    from service.client import Client
    from studies.engine.driver import Driver
    from studies.storage.engine import make_engine
    from worker.data.token_cache import default_cache_dir

    url = f"sqlite:///{tmp_path / 'settings.db'}"
    environ.setenv("MAGMA_DATABASE_URL", url)
    environ.setenv("MAGMA_URL", "http://10.0.0.1:9000/")
    environ.setenv("MAGMA_API_KEY", "k3y")
    environ.setenv("MAGMA_CACHE_DIR", "relative/tokens")
    environ.setenv("MAGMA_STORAGE", str(tmp_path / "ray"))
    environ.setenv("MAGMA_DRIVER_STALE_SECONDS", "7")
    client = Client()
    assert client.url == "http://10.0.0.1:9000"
    assert client.http.headers["Authorization"] == "Bearer k3y"
    assert Client(api_key="").http.headers.get("Authorization") is None
    assert default_cache_dir() == (Path.cwd() / "relative" / "tokens")
    assert str(make_engine().url) == url
    driver = Driver()
    assert driver.url == url and (tmp_path / "settings.db").is_file()
    assert driver.storage_path == tmp_path / "ray"
    assert driver.stale_after.total_seconds() == 7


# --------------------------------------------------------------------------------------
# a real `magma-bench up` on MAGMA_DATABASE_URL alone
# --------------------------------------------------------------------------------------


def test_up_runs_studies_on_magma_database_url_alone(tmp_path: Path) -> None:
    """The API and the driver that ``up`` starts both use the database that
    ``MAGMA_DATABASE_URL`` names: a study submitted over HTTP completes there, and no
    other database appears (such as the default ./var/magma-bench.db)."""
    cwd, elsewhere = tmp_path / "cwd", tmp_path / "elsewhere"
    cwd.mkdir()
    elsewhere.mkdir()
    url = f"sqlite:///{elsewhere / 'studies.db'}"
    env = {k: v for k, v in os.environ.items() if not SETTING.fullmatch(k)}
    env["MAGMA_DATABASE_URL"] = url
    with running_up(cwd, env) as server:
        spec = quadratic_spec(name="settings-up", search={"lr": [0.1]}, fixed={"threads": 1})
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        done = cli(server, "submit", str(spec_file), "--wait", timeout=240)
        assert done.returncode == 0, (done.stdout, done.stderr, server.tail(60))
        study_id = int(done.stdout.split()[1])
    db = Database(url)
    try:
        assert db.study(study_id).status == "complete"
        trials = db.trials(study_id)
        assert [t.status for t in trials] == ["complete"]
        assert len(db.metrics(trials[0].id)) == 4  # 40 steps, every 10
    finally:
        db.dispose()
    assert not (cwd / "var" / "magma-bench.db").exists()
    databases = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.db"))
    assert databases == ["elsewhere/studies.db"]
