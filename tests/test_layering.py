"""The packages' layering: each imports only the ones below it, and the API process (the
service, the dashboards, what they read of studies and worker) never loads torch.

magma < worker < studies < dashboards < service: a lower layer that imported a higher one
would make a cycle, and would drag the service's dependencies into the library. The
statistics live in ``studies.analysis``, so the API and the CLI compute with them without
the figures; only the pages' router draws on the dashboards.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("magma", "worker", "studies", "dashboards", "service")


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file, deferred ones too."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_layers_import_downward_only(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {package}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for line, package in sorted(imported_packages(path))
        if package in above
    ]
    assert not offenders, "\n".join(offenders)


#: the only modules above the dashboards that may import them: the pages' router
DASHBOARD_CLIENTS = ("service/api/routes/pages.py",)


def test_only_the_pages_router_imports_the_dashboards() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for folder in ("service", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in DASHBOARD_CLIENTS
        and path.name != "dashboard_render.py"  # the dashboards' own render benchmark
        for line, package in sorted(imported_packages(path))
        if package == "dashboards"
    ]
    assert not offenders, "\n".join(offenders)


def test_the_statistics_sit_below_the_dashboards() -> None:
    assert not list((ROOT / "dashboards").rglob("analysis/*.py"))
    assert (ROOT / "studies" / "analysis" / "verdict.py").is_file()


# Builds the app as `magma-bench serve` does, serves the API's and the dashboards' reads and
# a submission, then names any heavy module that came with them.
SERVE_WITHOUT_TORCH = textwrap.dedent(
    """
    import sys

    from fastapi.testclient import TestClient

    import service.main

    assert "torch" not in sys.modules, "importing service.main loaded torch"
    with TestClient(service.main.create_app()) as client:
        assert client.get("/api/v1/health").status_code == 200
        created = client.post("/api/v1/studies", json={"preset": "demo"})
        assert created.status_code == 201, created.text
        study = created.json()["id"]
        for path in (
            f"/api/v1/studies/{study}",
            "/api/v1/studies",
            f"/api/v1/studies/{study}/trials",
            "/api/v1/presets",
            "/api/v1/claims",
            "/openapi.json",
            "/",
            "/claims",
            f"/studies/{study}/dashboard/overview",
        ):
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text)
    print(" ".join(sorted({"torch", "transformers"} & set(sys.modules))))
    """
)


def test_the_api_process_never_imports_torch(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGMA_")}
    env.pop("DATABASE_URL", None)
    env.update(MAGMA_DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"the API process imported {result.stdout.strip()}"


# --- the tests' own structure -----------------------------------------------------------------
#: the test modules; what they share is in tests/conftest.py (the fixtures, registered once)
#: and in helper modules (tests/db_fixtures.py, tests/service_fixtures.py, ...)
TEST_MODULES = sorted((ROOT / "tests").glob("test_*.py"))


def imported_modules(path: Path) -> set[tuple[int, str]]:
    """(line, dotted name) of every module a file imports or may import, deferred imports
    too: for ``from A import b`` both ``A`` and ``A.b``; relative ones start with dots."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if node.module:
                found.add((node.lineno, module))
            separator = "" if module.endswith(".") else "."
            found.update((node.lineno, module + separator + alias.name) for alias in node.names)
    return found


def test_no_test_module_declares_pytest_plugins() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in TEST_MODULES
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id == "pytest_plugins"
    ]
    assert TEST_MODULES and (ROOT / "tests" / "conftest.py").is_file()
    assert not offenders, "pytest_plugins belongs in tests/conftest.py:\n" + "\n".join(offenders)


def test_no_test_module_imports_another() -> None:
    names = {path.stem for path in TEST_MODULES}
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in TEST_MODULES
        for line, module in sorted(imported_modules(path))
        if module.rsplit(".", 1)[-1] in names
    ]
    assert not offenders, "\n".join(offenders)
