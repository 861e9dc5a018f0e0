"""The optimizer library installs on its own: ``pip install .`` brings torch and none of the
service's dependencies (those are the ``[service]`` extra), and ``magma`` works there.

Slow: it builds the package and installs torch into a new virtual environment. pip takes
torch (the version this suite runs on) from its cache or its configured wheel folder where
it can, else from the index, which needs the network.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DISTRIBUTION = PYPROJECT["project"]["name"]

# Run inside the new environment: what is installed there, and one Magma step.
PROBE = """
import importlib.metadata, json
import torch
from magma import Magma

model = torch.nn.Linear(4, 4)
optimizer = Magma(torch.optim.AdamW(model.parameters(), lr=1e-2), p=0.5, seed=0)
before = model.weight.detach().clone()
for _ in range(10):  # each step masks a block with probability p; ten do not miss all
    optimizer.zero_grad()
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
print(json.dumps({
    "installed": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
    "torch_requires": importlib.metadata.requires("torch") or [],
    "stepped": not torch.equal(before, model.weight),
}))
"""


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


@pytest.mark.slow
def test_pip_install_brings_the_library_with_torch_alone(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("magma", "worker", "studies", "service", "dashboards"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # this suite's torch, so that pip can reuse the wheel it already has
    pin = tmp_path / "constraints.txt"
    pin.write_text(f"torch=={importlib.metadata.version('torch')}\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--constraint", str(pin), str(source)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    probe = subprocess.run(
        [python, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    installed = {canonicalize_name(name) for name in found["installed"]}
    assert {canonicalize_name(DISTRIBUTION), "torch"} <= installed
    service_only = names(PYPROJECT["project"]["optional-dependencies"]["service"]) - names(
        found["torch_requires"]
    )
    assert service_only >= {"fastapi", "sqlalchemy", "ray", "optuna", "uvicorn", "transformers"}
    assert not installed & service_only, f"the library pulled {sorted(installed & service_only)}"
    assert found["stepped"], "Magma left the weights unchanged"


def test_the_service_names_this_distribution() -> None:
    """The version the API reports is looked up under pyproject.toml's name."""
    from service import DISTRIBUTION

    assert PYPROJECT["project"]["name"] == DISTRIBUTION
    assert importlib.metadata.version(DISTRIBUTION) == PYPROJECT["project"]["version"]
