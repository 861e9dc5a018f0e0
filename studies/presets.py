"""Study presets: YAML files in ``studies/presets/``, each mirroring a paper experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from studies.spec import StudySpec

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str, overrides: dict[str, Any] | None = None) -> StudySpec:
    """The preset, with ``overrides`` merged in (nested mappings merge key by key)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"preset must be one of {preset_names()}, got {name!r}")
    data = merge_overrides(yaml.safe_load(path.read_text()), overrides or {})
    return StudySpec.model_validate(data)


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``: nested mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged
