"""Print the image's pip requirements, one a line: the library's and the [service] extra's.

Read from pyproject.toml, the one home of the dependency list: the Dockerfile installs what
this prints, and ``make wheelhouse`` downloads the same list for offline builds.

    python3 docker/requirements.py [pyproject.toml]
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip (in every venv and image that runs this) vendors
    from pip._vendor import tomli as tomllib  # the same parser, tomllib's origin

#: the extras the image installs besides the library's own dependencies
EXTRAS = ("service",)


def requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *(req for extra in EXTRAS for req in extras[extra])]


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    print("\n".join(requirements(path)))
